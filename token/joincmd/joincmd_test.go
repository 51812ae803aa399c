package joincmd_test

import (
	"errors"
	"net"
	"regexp"
	"strings"
	"testing"

	"github.com/m-lab/epoxy-extensions/token/joincmd"
)

// Outputs of `kubeadm token create --print-join-command`, as kubeadm prints
// them (note the trailing space before the newline), and their parts.
const (
	tok    = "abcdef.0123456789abcdef"
	secret = "0123456789abcdef"
	// sha256("test") and sha256(""): well formed, and free of the secret.
	hashA = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	hashB = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	// A control-plane certificate key, 32 bytes in hex.
	certKey = "d5f1c3b2a4e6f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7081"

	plainOutput        = "kubeadm join 10.0.0.1:6443 --token " + tok + " --discovery-token-ca-cert-hash " + hashA + " \n"
	severalCAsOutput   = "kubeadm join 10.0.0.1:6443 --token " + tok + " --discovery-token-ca-cert-hash " + hashA + " --discovery-token-ca-cert-hash " + hashB + " \n"
	controlPlaneOutput = "kubeadm join 10.0.0.1:6443 --token " + tok + " --discovery-token-ca-cert-hash " + hashA + " --control-plane --certificate-key " + certKey + " \n"
)

var (
	tokenRE = regexp.MustCompile(`^[a-z0-9]{6}\.[a-z0-9]{16}$`)
	hashRE  = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
)

// assertNoSecret fails unless err's text is free of the token secret, in any
// case and even cut short by one character.
func assertNoSecret(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if msg := strings.ToLower(err.Error()); strings.Contains(msg, secret[:len(secret)-1]) {
		t.Errorf("error %q contains the token secret", err)
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		out  string
		want joincmd.Join
	}{
		{
			name: "plain, with trailing space and newline",
			out:  plainOutput,
			want: joincmd.Join{APIAddress: "10.0.0.1:6443", Token: tok, CAHash: hashA},
		},
		{
			name: "several CAs: the first hash is returned",
			out:  severalCAsOutput,
			want: joincmd.Join{APIAddress: "10.0.0.1:6443", Token: tok, CAHash: hashA},
		},
		{
			name: "control plane",
			out:  controlPlaneOutput,
			want: joincmd.Join{APIAddress: "10.0.0.1:6443", Token: tok, CAHash: hashA},
		},
		{
			name: "--flag=value form",
			out:  "kubeadm join 10.0.0.1:6443 --token=" + tok + " --discovery-token-ca-cert-hash=" + hashA + " --control-plane --certificate-key=" + certKey + "\n",
			want: joincmd.Join{APIAddress: "10.0.0.1:6443", Token: tok, CAHash: hashA},
		},
		{
			name: "flags before the address, hash before token",
			out:  "kubeadm join --discovery-token-ca-cert-hash " + hashA + " --token " + tok + " api.mlab-oti.measurement-lab.org:6443",
			want: joincmd.Join{APIAddress: "api.mlab-oti.measurement-lab.org:6443", Token: tok, CAHash: hashA},
		},
		{
			name: "control-plane flags first",
			out:  "kubeadm join --control-plane --certificate-key " + certKey + " 10.0.0.1:6443 --discovery-token-ca-cert-hash " + hashB + " --token " + tok,
			want: joincmd.Join{APIAddress: "10.0.0.1:6443", Token: tok, CAHash: hashB},
		},
		{
			name: "IPv6 address",
			out:  "kubeadm join [2001:db8::1]:6443 --token " + tok + " --discovery-token-ca-cert-hash " + hashA + " \n",
			want: joincmd.Join{APIAddress: "[2001:db8::1]:6443", Token: tok, CAHash: hashA},
		},
		{
			name: "other whitespace: tabs, CRLF, leading blanks",
			out:  "\n  kubeadm\tjoin 10.0.0.1:6443\t--token " + tok + "  --discovery-token-ca-cert-hash " + hashA + "\r\n",
			want: joincmd.Join{APIAddress: "10.0.0.1:6443", Token: tok, CAHash: hashA},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := joincmd.Parse(tc.out)
			if err != nil {
				t.Fatalf("Parse(%q) error = %v, want nil", tc.out, err)
			}
			if got != tc.want {
				t.Errorf("Parse(%q) = %+v, want %+v", tc.out, got, tc.want)
			}
		})
	}
}

func TestParseRefuses(t *testing.T) {
	const addr = "10.0.0.1:6443"
	tests := []struct {
		name string
		out  string
	}{
		{name: "empty", out: ""},
		{name: "blank", out: " \n"},
		{name: "garbage", out: "hello " + tok + " world"},
		{name: "kubeadm join alone", out: "kubeadm join\n"},
		{name: "not a join command", out: "kubeadm init " + addr + " --token " + tok + " --discovery-token-ca-cert-hash " + hashA},
		{name: "an error message", out: "error: timed out waiting for the condition " + tok + "\n"},
		{name: "upper-case token", out: "kubeadm join " + addr + " --token ABCDEF.0123456789ABCDEF --discovery-token-ca-cert-hash " + hashA},
		{name: "short token secret", out: "kubeadm join " + addr + " --token abcdef.0123456789abcde --discovery-token-ca-cert-hash " + hashA},
		{name: "short token id", out: "kubeadm join " + addr + " --token abcde.0123456789abcdef --discovery-token-ca-cert-hash " + hashA},
		{name: "token without dot", out: "kubeadm join " + addr + " --token abcdef0123456789abcdef --discovery-token-ca-cert-hash " + hashA},
		{name: "empty token with =", out: "kubeadm join " + addr + " --token= " + tok + " --discovery-token-ca-cert-hash " + hashA},
		{name: "repeated token", out: "kubeadm join " + addr + " --token " + tok + " --token " + tok + " --discovery-token-ca-cert-hash " + hashA},
		{name: "hash of 63 hex digits", out: "kubeadm join " + addr + " --token " + tok + " --discovery-token-ca-cert-hash " + hashA[:len(hashA)-1]},
		{name: "hash of 65 hex digits", out: "kubeadm join " + addr + " --token " + tok + " --discovery-token-ca-cert-hash " + hashA + "0"},
		{name: "upper-case hash", out: "kubeadm join " + addr + " --token " + tok + " --discovery-token-ca-cert-hash " + strings.ToUpper(hashA)},
		{name: "md5 hash", out: "kubeadm join " + addr + " --token " + tok + " --discovery-token-ca-cert-hash md5:098f6bcd4621d373cade4e832627b4f6"},
		{name: "hash without algorithm", out: "kubeadm join " + addr + " --token " + tok + " --discovery-token-ca-cert-hash " + strings.TrimPrefix(hashA, "sha256:")},
		{name: "second hash malformed", out: "kubeadm join " + addr + " --token " + tok + " --discovery-token-ca-cert-hash " + hashA + " --discovery-token-ca-cert-hash sha256:xyz"},
		{name: "missing token", out: "kubeadm join " + addr + " --discovery-token-ca-cert-hash " + hashA + " \n"},
		{name: "missing hash", out: "kubeadm join " + addr + " --token " + tok + " \n"},
		{name: "missing address", out: "kubeadm join --token " + tok + " --discovery-token-ca-cert-hash " + hashA + " \n"},
		{name: "two addresses", out: "kubeadm join " + addr + " 10.0.0.2:6443 --token " + tok + " --discovery-token-ca-cert-hash " + hashA},
		{name: "unknown flag", out: "kubeadm join " + addr + " --token " + tok + " --discovery-token-ca-cert-hash " + hashA + " --skip-phases preflight"},
		{name: "unknown flag with =", out: "kubeadm join " + addr + " --token " + tok + " --discovery-token-ca-cert-hash " + hashA + " --tls-bootstrap-token=" + tok},
		{name: "unsafe skip flag", out: "kubeadm join " + addr + " --token " + tok + " --discovery-token-unsafe-skip-ca-verification"},
		{name: "token flag at end without value", out: "kubeadm join " + addr + " --discovery-token-ca-cert-hash " + hashA + " --token \n"},
		{name: "hash flag at end without value", out: "kubeadm join " + addr + " --token " + tok + " --discovery-token-ca-cert-hash\n"},
		{name: "certificate-key flag at end without value", out: "kubeadm join " + addr + " --token " + tok + " --discovery-token-ca-cert-hash " + hashA + " --control-plane --certificate-key \n"},
		{name: "token flag swallowing the next flag", out: "kubeadm join " + addr + " --token --discovery-token-ca-cert-hash " + hashA + " " + tok},
		{name: "address without port", out: "kubeadm join 10.0.0.1 --token " + tok + " --discovery-token-ca-cert-hash " + hashA + " \n"},
		{name: "address with empty port", out: "kubeadm join 10.0.0.1: --token " + tok + " --discovery-token-ca-cert-hash " + hashA + " \n"},
		{name: "address without host", out: "kubeadm join :6443 --token " + tok + " --discovery-token-ca-cert-hash " + hashA},
		{name: "address with named port", out: "kubeadm join h:abc --token " + tok + " --discovery-token-ca-cert-hash " + hashA},
		{name: "address with port out of range", out: "kubeadm join h:99999 --token " + tok + " --discovery-token-ca-cert-hash " + hashA},
		{name: "address with port zero", out: "kubeadm join h:0 --token " + tok + " --discovery-token-ca-cert-hash " + hashA},
		{name: "bare IPv6 address", out: "kubeadm join 2001:db8::1 --token " + tok + " --discovery-token-ca-cert-hash " + hashA + " \n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := joincmd.Parse(tc.out)
			if !errors.Is(err, joincmd.ErrBadOutput) {
				t.Fatalf("Parse(%q) = %+v, %v; want an error wrapping ErrBadOutput", tc.out, got, err)
			}
			if got != (joincmd.Join{}) {
				t.Errorf("Parse(%q) returned %+v with its error, want the zero Join", tc.out, got)
			}
			assertNoSecret(t, err)
		})
	}
}

// TestParseNeverEchoesSecrets feeds outputs in which a token sits
// where Parse quotes a value back in its error: the value must be
// redacted.
func TestParseNeverEchoesSecrets(t *testing.T) {
	tests := []struct {
		name string
		out  string
	}{
		{name: "token as the CA hash", out: "kubeadm join 10.0.0.1:6443 --token " + tok + " --discovery-token-ca-cert-hash " + tok},
		{name: "token as the API address", out: "kubeadm join " + tok + " --token " + tok + " --discovery-token-ca-cert-hash " + hashA},
		{name: "token as an unknown flag", out: "kubeadm join 10.0.0.1:6443 --token " + tok + " --discovery-token-ca-cert-hash " + hashA + " -" + tok},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := joincmd.Parse(tc.out)
			if !errors.Is(err, joincmd.ErrBadOutput) {
				t.Fatalf("Parse(%q) error = %v, want one wrapping ErrBadOutput", tc.out, err)
			}
			assertNoSecret(t, err)
		})
	}
}

func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		plainOutput,
		severalCAsOutput,
		controlPlaneOutput,
		"kubeadm join 10.0.0.1:6443 --token=" + tok + " --discovery-token-ca-cert-hash=" + hashA + "\n",
		"kubeadm join --discovery-token-ca-cert-hash " + hashA + " --token " + tok + " api.mlab-oti.measurement-lab.org:6443",
		"kubeadm join [2001:db8::1]:6443 --token " + tok + " --discovery-token-ca-cert-hash " + hashA + " \n",
		"kubeadm join 10.0.0.1 --token " + tok + " --discovery-token-ca-cert-hash " + hashA,
		"kubeadm join 10.0.0.1:6443 --token --discovery-token-ca-cert-hash " + hashA,
		"kubeadm join 10.0.0.1:6443 --certificate-key",
		"kubeadm join",
		"error: timed out waiting for the condition\n",
		"",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, out string) {
		j, err := joincmd.Parse(out)
		if err != nil {
			if !errors.Is(err, joincmd.ErrBadOutput) {
				t.Fatalf("Parse(%q) error = %v, want one wrapping ErrBadOutput", out, err)
			}
			return
		}
		if !tokenRE.MatchString(j.Token) {
			t.Errorf("Parse(%q) token = %q, want one matching %s", out, j.Token, tokenRE)
		}
		if !hashRE.MatchString(j.CAHash) {
			t.Errorf("Parse(%q) CA hash = %q, want one matching %s", out, j.CAHash, hashRE)
		}
		if _, _, err := net.SplitHostPort(j.APIAddress); err != nil {
			t.Errorf("Parse(%q) API address = %q, not host:port: %v", out, j.APIAddress, err)
		}
	})
}
