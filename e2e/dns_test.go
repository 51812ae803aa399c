package e2e

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/m-lab/epoxy-extensions/storage"
)

// TestDNSServer resolves through the server's own -dns-server resolver, so
// it checks both ends; it needs no component and runs in -short mode too.
func TestDNSServer(t *testing.T) {
	parallel(t)
	dns, err := StartDNS(map[string]string{"mlab1d-lga01.mlab-sandbox.measurement-lab.org": "192.0.2.55"})
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	r := storage.NewResolver(dns.Addr)
	tests := []struct {
		name    string
		host    string
		want    []string
		wantErr bool
	}{
		{"known name", "mlab1d-lga01.mlab-sandbox.measurement-lab.org", []string{"192.0.2.55"}, false},
		{"case does not matter", "MLAB1D-lga01.mlab-sandbox.measurement-lab.org", []string{"192.0.2.55"}, false},
		{"unknown name", "mlab2d-lga01.mlab-sandbox.measurement-lab.org", nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			got, err := r.LookupHost(ctx, tc.host)
			if (err != nil) != tc.wantErr || !slices.Equal(got, tc.want) {
				t.Errorf("LookupHost(%q) = %v, %v; want %v, error %v", tc.host, got, err, tc.want, tc.wantErr)
			}
		})
	}
}
