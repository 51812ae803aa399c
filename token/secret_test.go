package token

import (
	"slices"
	"testing"
	"time"

	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	bootstrapsecrets "k8s.io/cluster-bootstrap/util/secrets"
)

// TestBootstrapSecretReadByClusterBootstrap reads BootstrapSecret's output
// with the helpers of k8s.io/cluster-bootstrap, which the API server's
// bootstrap token authenticator and the token cleaner use.
func TestBootstrapSecretReadByClusterBootstrap(t *testing.T) {
	// 12:05:00.123 in Paris is 11:05:00 UTC, to the second.
	expires := time.Date(2026, 11, 20, 12, 5, 0, 123456789, time.FixedZone("CET", 3600))
	tests := []struct {
		name        string
		id, secret  string
		description string
	}{
		{name: "described", id: "abcdef", secret: "0123456789abcdef", description: "Allow mlab1-lga01.mlab-oti.measurement-lab.org to join the cluster"},
		{name: "no description", id: "z9y8x7", secret: "a1b2c3d4e5f6g7h8"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := BootstrapSecret(tc.id, tc.secret, tc.description, expires)

			if s.Type != bootstrapapi.SecretTypeBootstrapToken {
				t.Errorf("Type = %q, want %q", s.Type, bootstrapapi.SecretTypeBootstrapToken)
			}
			if id, ok := bootstrapsecrets.ParseName(s.Name); !ok || id != tc.id {
				t.Errorf("ParseName(%q) = %q, %t; want %q, true", s.Name, id, ok, tc.id)
			}
			for key, want := range map[string]string{
				bootstrapapi.BootstrapTokenIDKey:                 tc.id,
				bootstrapapi.BootstrapTokenSecretKey:             tc.secret,
				bootstrapapi.BootstrapTokenDescriptionKey:        tc.description,
				bootstrapapi.BootstrapTokenExpirationKey:         "2026-11-20T11:05:00Z",
				bootstrapapi.BootstrapTokenUsageAuthentication:   "true",
				bootstrapapi.BootstrapTokenUsageSigningKey:       "true",
				bootstrapapi.BootstrapTokenExtraGroupsKey:        NodeGroup,
				bootstrapapi.BootstrapTokenUsagePrefix + "other": "",
			} {
				if got := bootstrapsecrets.GetData(s, key); got != want {
					t.Errorf("GetData(%q) = %q, want %q", key, got, want)
				}
			}
			if _, ok := s.Data[bootstrapapi.BootstrapTokenDescriptionKey]; ok != (tc.description != "") {
				t.Errorf("Secret has a description key: %t, want %t", ok, tc.description != "")
			}
			groups, err := bootstrapsecrets.GetGroups(s)
			if want := []string{"system:bootstrappers", "system:bootstrappers:kubeadm:default-node-token"}; err != nil || !slices.Equal(groups, want) {
				t.Errorf("GetGroups() = %q, %v; want %q", groups, err, want)
			}
			for _, c := range []struct {
				at            time.Time
				wantRemaining time.Duration
				wantExpired   bool
			}{
				{at: time.Date(2026, 11, 20, 11, 4, 0, 0, time.UTC), wantRemaining: time.Minute},
				{at: time.Date(2026, 11, 20, 11, 4, 59, 0, time.UTC), wantRemaining: time.Second},
				{at: time.Date(2026, 11, 20, 11, 5, 0, 0, time.UTC), wantExpired: true},
			} {
				remaining, expired := bootstrapsecrets.GetExpiration(s, c.at)
				if remaining != c.wantRemaining || expired != c.wantExpired {
					t.Errorf("GetExpiration(at %s) = %s, %t; want %s, %t", c.at.Format(time.RFC3339), remaining, expired, c.wantRemaining, c.wantExpired)
				}
			}
		})
	}
}
