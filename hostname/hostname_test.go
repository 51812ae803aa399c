package hostname_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/m-lab/epoxy-extensions/hostname"
)

func TestValid(t *testing.T) {
	tests := []struct {
		name string
		host string
		want bool
	}{
		{"machine", "mlab1-lga01.mlab-oti.measurement-lab.org", true},
		{"instance-group", "mlab1-lga01.mlab-oti.measurement-lab.org-d9h6", true},
		{"single-label", "localhost", true},
		{"digits", "0.1.2.3", true},
		{"label-63", strings.Repeat("a", 63) + ".org", true},
		{"max-253", strings.Repeat(strings.Repeat("a", 49)+".", 5) + "abc", true},
		{"empty", "", false},
		{"all-flag", "--all", false},
		{"short-flag", "-A", false},
		{"flag-with-value", "-lfoo=bar", false},
		{"leading-dash-label", "mlab1.-lga01.org", false},
		{"trailing-dash-label", "mlab1-.lga01.org", false},
		{"trailing-dash", "mlab1.lga01-", false},
		{"space", "mlab1 lga01", false},
		{"semicolon", "mlab1;reboot", false},
		{"upper-case", "MLAB1-lga01.mlab-oti.measurement-lab.org", false},
		{"trailing-dot", "mlab1.org.", false},
		{"leading-dot", ".mlab1.org", false},
		{"double-dot", "mlab1..org", false},
		{"underscore", "mlab_1.org", false},
		{"slash", "mlab1/../../etc", false},
		{"newline", "mlab1\norg", false},
		{"nul", "mlab1\x00org", false},
		{"unicode", "mläb1.org", false},
		{"label-64", strings.Repeat("a", 64) + ".org", false},
		{"300-chars", strings.Repeat("a.", 150), false},
		{"254-chars", strings.Repeat(strings.Repeat("a", 49)+".", 5) + "abcd", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := hostname.Valid(tc.host); got != tc.want {
				t.Errorf("Valid(%q) = %v, want %v", tc.host, got, tc.want)
			}
		})
	}
}

// referenceName is RFC 1123 as a regular expression, to check the
// hand-written Valid against.
var referenceName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$`)

func FuzzValid(f *testing.F) {
	for _, s := range []string{"mlab1-lga01.mlab-oti.measurement-lab.org", "mlab1-lga01.mlab-oti.measurement-lab.org-d9h6",
		"--all", "-A", "-lfoo=bar", "a b", "a;b", "A", "a..b", "a.", strings.Repeat("a", 64), strings.Repeat("a.", 127) + "a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := hostname.Valid(s)
		want := len(s) <= 253 && referenceName.MatchString(s)
		if got != want {
			t.Fatalf("Valid(%q) = %v, reference says %v", s, got, want)
		}
		if got && strings.HasPrefix(s, "-") {
			t.Fatalf("Valid(%q) accepted a flag", s)
		}
	})
}

func TestValidAddress(t *testing.T) {
	tests := []struct {
		addr string
		want bool
	}{
		{"10.0.0.1:6443", true},
		{"api.mlab-oti.measurement-lab.org:6443", true},
		{"[2001:db8::1]:6443", true},
		{"10.0.0.1", false},
		{":6443", false},
		{"10.0.0.1:0", false},
		{"10.0.0.1:65536", false},
		{"10.0.0.1:https", false},
		{"user@10.0.0.1:6443", false},
		{"10.0.0.1/x:6443", false},
		{"", false},
	}
	for _, tc := range tests {
		if got := hostname.ValidAddress(tc.addr); got != tc.want {
			t.Errorf("ValidAddress(%q) = %v, want %v", tc.addr, got, tc.want)
		}
	}
}
