package kube

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
)

// TestCheckAPIServer checks the one line the start-up check logs: the
// version when the API server answers, a warning when it does not.
func TestCheckAPIServer(t *testing.T) {
	tests := []struct {
		name   string
		status int
		want   string
	}{
		{name: "reachable", status: http.StatusOK, want: `"msg":"API server reachable","version":"v1.34.4"`},
		{name: "refused", status: http.StatusForbidden, want: `"msg":"API server not reachable at start; requests will retry"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/version" {
					http.NotFound(w, r)
					return
				}
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tc.status)
				w.Write([]byte(`{"gitVersion":"v1.34.4"}`))
			}))
			defer srv.Close()
			client, err := corev1client.NewForConfig(&rest.Config{Host: srv.URL})
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			CheckAPIServer(client.RESTClient(), 5*time.Second, slog.New(slog.NewJSONHandler(&out, nil)))
			if !strings.Contains(out.String(), tc.want) {
				t.Errorf("log = %s, want %s", out.String(), tc.want)
			}
		})
	}
}
