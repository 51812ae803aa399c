package token

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/m-lab/epoxy-extensions/kube"
)

// discardSecrets accepts every Secret and keeps none.
type discardSecrets struct{}

func (discardSecrets) Create(_ context.Context, s *corev1.Secret, _ metav1.CreateOptions) (*corev1.Secret, error) {
	return s, nil
}

// BenchmarkAPICreate measures what the api backend adds to each token
// request besides the API round trip: a crypto-random token, the Secret,
// and the call's metrics.
func BenchmarkAPICreate(b *testing.B) {
	a := &API{
		Secrets: discardSecrets{},
		Cluster: kube.Cluster{APIAddress: "192.0.2.1:6443", CAHash: "sha256:" + string(make([]byte, 64))},
		TTL:     5 * time.Minute,
		Timeout: 30 * time.Second,
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.Create(ctx, "mlab1-lga01.mlab-oti.measurement-lab.org"); err != nil {
			b.Fatal(err)
		}
	}
}
