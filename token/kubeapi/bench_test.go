package kubeapi

import (
	"context"
	"testing"
	"time"

	"github.com/m-lab/epoxy-extensions/kube"
	"github.com/m-lab/epoxy-extensions/token"
	"github.com/m-lab/epoxy-extensions/token/internal/fakecluster"
)

// BenchmarkAPICreate measures what the api backend adds to each token
// request besides the Store round trips: a crypto-random token, its slot id,
// the Secret, and the call's metrics, against an in-memory cluster.
func BenchmarkAPICreate(b *testing.B) {
	f := fakecluster.New(time.Now)
	s := &token.Slots{
		Store: &Store{Secrets: f, Cluster: kube.NewClusterValue(kube.Cluster{APIAddress: "192.0.2.1:6443", CAHash: "sha256:00"}), Timeout: 30 * time.Second},
		Max:   3,
		TTL:   5 * time.Minute,
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Create(ctx, "mlab1-lga01.mlab-oti.measurement-lab.org"); err != nil {
			b.Fatal(err)
		}
		f.Mu.Lock()
		clear(f.Secrets) // a fresh host each time: the common case
		f.Mu.Unlock()
	}
}
