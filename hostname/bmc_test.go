package hostname_test

import (
	"errors"
	"testing"

	"github.com/m-lab/epoxy-extensions/hostname"
)

func TestParseBMC(t *testing.T) {
	tests := []struct {
		name    string
		host    string
		want    hostname.BMC
		wantErr bool
	}{
		{
			name: "v2 machine",
			host: "mlab1-lga01.mlab-oti.measurement-lab.org",
			want: hostname.BMC{Hostname: "mlab1d-lga01.mlab-oti.measurement-lab.org", Project: "mlab-oti"},
		},
		{
			name: "testing site in sandbox",
			host: "mlab4-abc0t.mlab-sandbox.measurement-lab.org",
			want: hostname.BMC{Hostname: "mlab4d-abc0t.mlab-sandbox.measurement-lab.org", Project: "mlab-sandbox"},
		},
		{
			name: "staging",
			host: "mlab2-ams05.mlab-staging.measurement-lab.org",
			want: hostname.BMC{Hostname: "mlab2d-ams05.mlab-staging.measurement-lab.org", Project: "mlab-staging"},
		},
		{
			name: "v1 name: no project",
			host: "mlab1.lga01.measurement-lab.org",
			want: hostname.BMC{Hostname: "mlab1d.lga01.measurement-lab.org"},
		},
		{
			name: "v1 service name",
			host: "ndt-iupui-mlab1-lga01.measurement-lab.org",
			want: hostname.BMC{Hostname: "ndt-iupui-mlab1d-lga01.measurement-lab.org"},
		},
		{
			name: "v1 dotted service name",
			host: "ndt.iupui.mlab3.lga0t.measurement-lab.org",
			want: hostname.BMC{Hostname: "ndt.iupui.mlab3d.lga0t.measurement-lab.org"},
		},
		{
			name: "v2 service name",
			host: "ndt-mlab1-lga01.mlab-oti.measurement-lab.org",
			want: hostname.BMC{Hostname: "ndt-mlab1d-lga01.mlab-oti.measurement-lab.org", Project: "mlab-oti"},
		},
		{
			// The original replaced the first "mlab1": the service's.
			name: "service named like the machine",
			host: "mlab1-mlab1-lga01.mlab-oti.measurement-lab.org",
			want: hostname.BMC{Hostname: "mlab1-mlab1d-lga01.mlab-oti.measurement-lab.org", Project: "mlab-oti"},
		},
		{name: "v1 BMC name", host: "mlab1d.lga01.measurement-lab.org", wantErr: true},
		{name: "v3 name", host: "lga3356-c89ffeef.rnp.autojoin.measurement-lab.org", wantErr: true},
		{name: "v3 service name", host: "ndt-lga3356-040e9f4b.mlab.sandbox.measurement-lab.org", wantErr: true},
		{name: "instance-group suffix", host: "mlab1-lga01.mlab-oti.measurement-lab.org-d9h6", wantErr: true},
		{name: "service name with suffix", host: "ndt-mlab1-lga01.mlab-oti.measurement-lab.org-d9h6", wantErr: true},
		{name: "already a BMC", host: "mlab1d-lga01.mlab-oti.measurement-lab.org", wantErr: true},
		{name: "mlab5", host: "mlab5-lga01.mlab-oti.measurement-lab.org", wantErr: true},
		{name: "mlab0", host: "mlab0-lga01.mlab-oti.measurement-lab.org", wantErr: true},
		{name: "other domain", host: "mlab1-lga01.mlab-oti.example.org", wantErr: true},
		{name: "trailing dot", host: "mlab1-lga01.mlab-oti.measurement-lab.org.", wantErr: true},
		{name: "upper case", host: "MLAB1-LGA01.MLAB-OTI.MEASUREMENT-LAB.ORG", wantErr: true},
		{name: "third-party", host: "third-party", wantErr: true},
		{name: "IP address", host: "192.0.2.10", wantErr: true},
		{name: "empty", host: "", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := hostname.ParseBMC(tc.host)
			if tc.wantErr {
				if !errors.Is(err, hostname.ErrNotMachine) {
					t.Errorf("ParseBMC(%q) = %+v, %v; want an error wrapping ErrNotMachine", tc.host, got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseBMC(%q) error = %v, want nil", tc.host, err)
			}
			if got != tc.want {
				t.Errorf("ParseBMC(%q) = %+v, want %+v", tc.host, got, tc.want)
			}
		})
	}
}
