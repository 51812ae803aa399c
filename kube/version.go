package kube

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"

	"k8s.io/apimachinery/pkg/version"
	"k8s.io/client-go/rest"
)

// CheckAPIServer asks the API server for its version once at start: the log
// then says at once whether the server is reachable and trusted, and the
// first machine to boot does not pay for the TLS handshake. A failure is
// only logged: requests retry on their own, and the API server may be
// starting too. timeout bounds the whole check.
func CheckAPIServer(client rest.Interface, timeout time.Duration, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var info version.Info
	err := Call(ctx, "get_version", func(ctx context.Context) error {
		body, err := client.Get().AbsPath("/version").SetHeader("Accept", "application/json").Do(ctx).Raw()
		if err != nil {
			return err
		}
		return json.Unmarshal(body, &info)
	})
	if err != nil {
		log.Warn("API server not reachable at start; requests will retry", "error", err)
		return
	}
	log.Info("API server reachable", "version", info.GitVersion)
}
