package token_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/m-lab/epoxy-extensions/command"
	"github.com/m-lab/epoxy-extensions/token"
)

// Both the real runner and the fake satisfy the interface Kubeadm needs.
var (
	_ command.Runner = command.Exec{}
	_ command.Runner = (*fakeRunner)(nil)
)

const (
	tok    = "abcdef.0123456789abcdef"
	secret = "0123456789abcdef"
	// sha256("test") and sha256(""): well formed, and free of the secret.
	hashA = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	hashB = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	// A control-plane certificate key, 32 bytes in hex.
	certKey = "d5f1c3b2a4e6f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7081"
)

// Outputs of `kubeadm token create --print-join-command`, as kubeadm prints
// them: note the trailing space before the newline.
var (
	plainOutput        = "kubeadm join 10.0.0.1:6443 --token " + tok + " --discovery-token-ca-cert-hash " + hashA + " \n"
	severalCAsOutput   = "kubeadm join 10.0.0.1:6443 --token " + tok + " --discovery-token-ca-cert-hash " + hashA + " --discovery-token-ca-cert-hash " + hashB + " \n"
	controlPlaneOutput = "kubeadm join 10.0.0.1:6443 --token " + tok + " --discovery-token-ca-cert-hash " + hashA + " --control-plane --certificate-key " + certKey + " \n"
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

// fakeRunner records each run and answers with out and err, or with what
// answer returns when it is set. It is safe for concurrent use.
type fakeRunner struct {
	out    string
	err    error
	answer func(args []string) (string, error)

	mu    sync.Mutex
	calls []call
}

type call struct {
	ctx  context.Context
	path string
	args []string
}

func (f *fakeRunner) Run(ctx context.Context, path string, args ...string) ([]byte, error) {
	f.mu.Lock()
	f.calls = append(f.calls, call{ctx: ctx, path: path, args: slices.Clone(args)})
	f.mu.Unlock()
	if f.answer != nil {
		out, err := f.answer(args)
		return []byte(out), err
	}
	return []byte(f.out), f.err
}

type ctxKey struct{}

// configFile is the kubeadm configuration Kubeadm.Put writes.
type configFile struct {
	APIVersion, Kind string
	BootstrapTokens  []struct {
		Token, Description, TTL string
		Usages, Groups          []string
	}
}

// readConfig reads the configuration at path, which must be readable by
// its owner alone.
func readConfig(t *testing.T, path string) configFile {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("kubeadm configuration: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("kubeadm configuration has mode %v, want 0600", fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var c configFile
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatalf("kubeadm configuration %q: %v", b, err)
	}
	return c
}

func TestKubeadmPut(t *testing.T) {
	errRun := errors.New("kubeadm: exit status 1: stderr: \"error: timed out\"")
	tests := []struct {
		name       string
		kubeadm    token.Kubeadm
		host       string
		out        string
		runErr     error
		wantArgs   []string
		want       token.Join
		wantErrIs  error
		wantNotBad bool // the error must not claim bad output
	}{
		{
			name:    "named host, no kubeconfig",
			kubeadm: token.Kubeadm{BinDir: "/usr/bin", TTL: 5 * time.Minute},
			host:    "mlab1-lga01.mlab-oti.measurement-lab.org",
			out:     plainOutput,
			wantArgs: []string{"token", "create", tok, "--ttl", "5m0s", "--print-join-command",
				"--description", "Allow mlab1-lga01.mlab-oti.measurement-lab.org to join the cluster"},
			want: token.Join{APIAddress: "10.0.0.1:6443", Token: tok, CAHash: hashA},
		},
		{
			name:    "kubeconfig is passed when set",
			kubeadm: token.Kubeadm{BinDir: "/opt/k8s/bin", Kubeconfig: "/etc/kubernetes/admin.conf", TTL: 5 * time.Minute},
			host:    "mlab1-lga01.mlab-oti.measurement-lab.org-d9h6",
			out:     controlPlaneOutput,
			wantArgs: []string{"token", "create", tok, "--ttl", "5m0s", "--print-join-command",
				"--description", "Allow mlab1-lga01.mlab-oti.measurement-lab.org-d9h6 to join the cluster",
				"--kubeconfig", "/etc/kubernetes/admin.conf"},
			want: token.Join{APIAddress: "10.0.0.1:6443", Token: tok, CAHash: hashA},
		},
		{
			name:    "empty host gets the unnamed description",
			kubeadm: token.Kubeadm{BinDir: "/usr/bin", TTL: 10 * time.Minute},
			host:    "",
			out:     severalCAsOutput,
			wantArgs: []string{"token", "create", tok, "--ttl", "10m0s", "--print-join-command",
				"--description", "Allow an unnamed machine to join the cluster"},
			want: token.Join{APIAddress: "10.0.0.1:6443", Token: tok, CAHash: hashA},
		},
		{
			name:    "runner failure is wrapped",
			kubeadm: token.Kubeadm{BinDir: "/usr/bin", TTL: 5 * time.Minute},
			host:    "mlab1-lga01.mlab-oti.measurement-lab.org",
			runErr:  errRun,
			wantArgs: []string{"token", "create", tok, "--ttl", "5m0s", "--print-join-command",
				"--description", "Allow mlab1-lga01.mlab-oti.measurement-lab.org to join the cluster"},
			wantErrIs:  errRun,
			wantNotBad: true,
		},
		{
			name:    "deadline from the runner is wrapped",
			kubeadm: token.Kubeadm{BinDir: "/usr/bin", TTL: 5 * time.Minute},
			host:    "mlab1-lga01.mlab-oti.measurement-lab.org",
			runErr:  fmt.Errorf("/usr/bin/kubeadm killed: %w", context.DeadlineExceeded),
			wantArgs: []string{"token", "create", tok, "--ttl", "5m0s", "--print-join-command",
				"--description", "Allow mlab1-lga01.mlab-oti.measurement-lab.org to join the cluster"},
			wantErrIs:  context.DeadlineExceeded,
			wantNotBad: true,
		},
		{
			name:    "an id that exists is a taken slot",
			kubeadm: token.Kubeadm{BinDir: "/usr/bin", TTL: 5 * time.Minute},
			host:    "mlab1-lga01.mlab-oti.measurement-lab.org",
			runErr:  errors.New("/usr/bin/kubeadm: exit status 1: stderr: \"error: a token with id \\\"abcdef\\\" already exists\""),
			wantArgs: []string{"token", "create", tok, "--ttl", "5m0s", "--print-join-command",
				"--description", "Allow mlab1-lga01.mlab-oti.measurement-lab.org to join the cluster"},
			wantErrIs:  token.ErrSlotTaken,
			wantNotBad: true,
		},
		{
			name:    "garbage output is bad output",
			kubeadm: token.Kubeadm{BinDir: "/usr/bin", TTL: 5 * time.Minute},
			host:    "mlab1-lga01.mlab-oti.measurement-lab.org",
			out:     "W1120 10:00:00.000000 1 warnings.go:70] something\n" + tok + "\n",
			wantArgs: []string{"token", "create", tok, "--ttl", "5m0s", "--print-join-command",
				"--description", "Allow mlab1-lga01.mlab-oti.measurement-lab.org to join the cluster"},
			wantErrIs: token.ErrBadOutput,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var cfgPath string
			var cfg configFile
			r := &fakeRunner{answer: func(args []string) (string, error) {
				if len(args) > 3 && args[2] == "--config" {
					cfgPath = args[3]
					cfg = readConfig(t, cfgPath)
				}
				return tc.out, tc.runErr
			}}
			k := tc.kubeadm
			k.Runner = r
			ctx := context.WithValue(context.Background(), ctxKey{}, tc.name)

			got, err := k.Put(ctx, tok, token.Description(tc.host), time.Time{})

			if len(r.calls) != 1 {
				t.Fatalf("Create ran kubeadm %d times, want once", len(r.calls))
			}
			c := r.calls[0]
			if want := k.BinDir + "/kubeadm"; c.path != want {
				t.Errorf("Create ran %q, want %q", c.path, want)
			}
			if slices.Contains(c.args, tok) || slices.Contains(c.args, secret) {
				t.Errorf("the token is on kubeadm's command line: %q", c.args)
			}
			if _, err := os.Stat(cfgPath); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the configuration file %s is still there after the run (%v)", cfgPath, err)
			}
			// The configuration as the flags kubeadm would otherwise get.
			if i := slices.Index(c.args, "--print-join-command"); i == 4 && c.args[2] == "--config" && len(cfg.BootstrapTokens) == 1 {
				bt := cfg.BootstrapTokens[0]
				legacy := append([]string{"token", "create", bt.Token, "--ttl", bt.TTL, "--print-join-command", "--description", bt.Description}, c.args[5:]...)
				if !slices.Equal(legacy, tc.wantArgs) {
					t.Errorf("Create ran kubeadm with config and args amounting to\n%q\nwant\n%q", legacy, tc.wantArgs)
				}
				if cfg.APIVersion != "kubeadm.k8s.io/v1beta4" || cfg.Kind != "InitConfiguration" ||
					!slices.Equal(bt.Usages, []string{"signing", "authentication"}) || !slices.Equal(bt.Groups, []string{token.NodeGroup}) {
					t.Errorf("configuration %+v is not kubeadm's default token", cfg)
				}
			} else {
				t.Errorf("Create ran kubeadm with args %q and configuration %+v", c.args, cfg)
			}
			if c.ctx.Value(ctxKey{}) != tc.name {
				t.Errorf("Create did not pass its context to the runner")
			}
			if tc.wantErrIs != nil {
				if !errors.Is(err, tc.wantErrIs) {
					t.Errorf("Create(%q) error = %v, want one wrapping %v", tc.host, err, tc.wantErrIs)
				}
				if tc.wantNotBad && errors.Is(err, token.ErrBadOutput) {
					t.Errorf("Create(%q) error = %v wraps ErrBadOutput, want only the runner's error", tc.host, err)
				}
				if got != (token.Join{}) {
					t.Errorf("Create(%q) returned %+v with its error, want the zero Join", tc.host, got)
				}
				assertNoSecret(t, err)
				return
			}
			if err != nil {
				t.Fatalf("Create(%q) error = %v, want nil", tc.host, err)
			}
			if got != tc.want {
				t.Errorf("Create(%q) = %+v, want %+v", tc.host, got, tc.want)
			}
		})
	}
}

// TestKubeadmCreateConcurrent checks that concurrent calls on one Kubeadm
// each get the token kubeadm printed for them, never another caller's.
func TestKubeadmPutConcurrent(t *testing.T) {
	const n = 200
	r := &fakeRunner{answer: func(args []string) (string, error) {
		i := slices.Index(args, "--config")
		if i < 0 || i+1 >= len(args) {
			return "", errors.New("no --config")
		}
		b, err := os.ReadFile(args[i+1])
		if err != nil {
			return "", err
		}
		var cfg configFile
		if err := json.Unmarshal(b, &cfg); err != nil || len(cfg.BootstrapTokens) != 1 {
			return "", fmt.Errorf("configuration %q: %v", b, err)
		}
		desc := cfg.BootstrapTokens[0].Description
		host := strings.TrimSuffix(strings.TrimPrefix(desc, "Allow "), " to join the cluster")
		var id int
		if _, err := fmt.Sscanf(host, "mlab-host-%d", &id); err != nil {
			return "", fmt.Errorf("description %q: %w", desc, err)
		}
		return "kubeadm join 10.0.0.1:6443 --token " + tokenFor(id) + " --discovery-token-ca-cert-hash " + hashA + " \n", nil
	}}
	k := &token.Kubeadm{Runner: r, BinDir: "/usr/bin", TTL: 5 * time.Minute}

	got := make([]token.Join, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			got[i], errs[i] = k.Put(context.Background(), tokenFor(i), token.Description(fmt.Sprintf("mlab-host-%d", i)), time.Time{})
		}()
	}
	close(start)
	wg.Wait()

	for i := range n {
		if errs[i] != nil {
			t.Errorf("Create(mlab-host-%d) error = %v, want nil", i, errs[i])
			continue
		}
		if want := tokenFor(i); got[i].Token != want {
			t.Errorf("Create(mlab-host-%d) token = %q, want %q", i, got[i].Token, want)
		}
	}
	if len(r.calls) != n {
		t.Errorf("kubeadm ran %d times, want %d", len(r.calls), n)
	}
}

// tokenFor returns a well-formed token unique to i.
func tokenFor(i int) string {
	return fmt.Sprintf("%06d.%016d", i, i)
}
