package handler

import "testing"

func TestSources(t *testing.T) {
	s, err := ParseSources(" 10.0.0.0/8, 192.0.2.7 ,2001:db8::/32,")
	if err != nil {
		t.Fatalf("ParseSources() error = %v", err)
	}
	tests := []struct {
		remote string
		want   bool
	}{
		{"10.1.2.3:5000", true},
		{"192.0.2.7:80", true},
		{"192.0.2.8:80", false},
		{"[::ffff:10.9.9.9]:1", true},
		{"[2001:db8::1]:443", true},
		{"[2001:db9::1]:443", false},
		{"127.0.0.1:1", false},
		{"garbage", false},
		{"", false},
	}
	for _, tc := range tests {
		if got := s.Allows(tc.remote); got != tc.want {
			t.Errorf("Allows(%q) = %v, want %v", tc.remote, got, tc.want)
		}
	}
	if !(Sources{}).Allows("garbage") {
		t.Error("empty Sources refused a caller, want everyone allowed")
	}
	for _, bad := range []string{"10.0.0.0/33", "example.org", "10.0.0.1/8/1"} {
		if _, err := ParseSources(bad); err == nil {
			t.Errorf("ParseSources(%q) = nil error, want one", bad)
		}
	}
}

// TestDefaultSources: an empty -allowed-sources admits private and local
// callers only; "any" admits everyone.
func TestDefaultSources(t *testing.T) {
	private, err := ParseSources(" ")
	if err != nil {
		t.Fatalf("ParseSources(\" \") error = %v", err)
	}
	anySource, err := ParseSources(AnySource)
	if err != nil {
		t.Fatalf("ParseSources(%q) error = %v", AnySource, err)
	}
	tests := []struct {
		remote      string
		wantPrivate bool
	}{
		{"10.0.0.1:1", true},
		{"10.255.255.255:1", true},
		{"172.16.0.1:1", true},
		{"172.31.255.254:1", true},
		{"172.32.0.1:1", false},
		{"192.168.1.1:1", true},
		{"192.169.0.1:1", false},
		{"100.64.0.1:1", true},
		{"100.127.255.255:1", true},
		{"100.128.0.1:1", false},
		{"127.0.0.1:1", true},
		{"127.0.88.1:8800", true},
		{"[::1]:1", true},
		{"[fc00::1]:1", true},
		{"[fd12:3456::1]:1", true},
		{"[::ffff:10.1.2.3]:1", true},
		{"[::ffff:198.51.100.1]:1", false},
		{"198.51.100.1:1", false},
		{"8.8.8.8:53", false},
		{"[2001:db8::1]:1", false},
		{"[fe80::1]:1", false},
		{"0.0.0.0:1", false},
	}
	for _, tc := range tests {
		if got := private.Allows(tc.remote); got != tc.wantPrivate {
			t.Errorf("default Allows(%q) = %v, want %v", tc.remote, got, tc.wantPrivate)
		}
		if !anySource.Allows(tc.remote) {
			t.Errorf("%q Allows(%q) = false, want true", AnySource, tc.remote)
		}
	}
	if private.AllowsAny() {
		t.Error("the default sources AllowsAny() = true, want false")
	}
	if !anySource.AllowsAny() {
		t.Errorf("%q AllowsAny() = false, want true", AnySource)
	}
	if s, _ := ParseSources("0.0.0.0/0"); s.AllowsAny() {
		t.Error("0.0.0.0/0 AllowsAny() = true, want false: IPv6 is not admitted")
	}
}
