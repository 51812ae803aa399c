package token

import (
	"context"
	"testing"
	"time"

	"github.com/m-lab/epoxy-extensions/kube"
)

// BenchmarkAPICreate measures what the api backend adds to each token
// request besides the API round trips: a crypto-random token, its slot id,
// the Secret, and the call's metrics, against an in-memory cluster.
func BenchmarkAPICreate(b *testing.B) {
	f := newFakeCluster(time.Now)
	s := &Slots{
		Store: &API{Secrets: f, Cluster: kube.NewClusterValue(kube.Cluster{APIAddress: "192.0.2.1:6443", CAHash: "sha256:00"}), Timeout: 30 * time.Second},
		Max:   3,
		TTL:   5 * time.Minute,
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Create(ctx, "mlab1-lga01.mlab-oti.measurement-lab.org"); err != nil {
			b.Fatal(err)
		}
		f.mu.Lock()
		clear(f.secrets) // a fresh host each time: the common case
		f.mu.Unlock()
	}
}
