package kubectl_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/m-lab/epoxy-extensions/command"
	"github.com/m-lab/epoxy-extensions/kube"
	"github.com/m-lab/epoxy-extensions/overload"
	"github.com/m-lab/epoxy-extensions/token"
	"github.com/m-lab/epoxy-extensions/token/kubectl"
)

// Both the real runner and the fake satisfy the interface Store needs.
var (
	_ command.Runner      = command.Exec{}
	_ command.Runner      = (*fakeRunner)(nil)
	_ command.InputRunner = (*fakeRunner)(nil)
)

const (
	tok    = "abcdef.0123456789abcdef"
	secret = "0123456789abcdef"
	// sha256("test"): well formed, and free of the secret.
	hashA       = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	secretsPath = "/api/v1/namespaces/kube-system/secrets"
	secretPath  = secretsPath + "/bootstrap-token-abcdef"
	createVerb  = "create -f"
	getVerb     = "get secret"
	// created is what kubectl create --output name prints for the Secret.
	created = "secret/bootstrap-token-abcdef\n"
)

// exitErr is kubectl exiting 1 with stderr.
func exitErr(stderr string) error {
	return &command.ExitError{Path: "/usr/bin/kubectl", Err: errors.New("exit status 1"), Stderr: stderr}
}

var cluster = kube.Cluster{APIAddress: "10.0.0.1:6443", CAHash: hashA}

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
	answer func(args []string, stdin []byte) (string, error)

	mu    sync.Mutex
	calls []call
}

type call struct {
	ctx   context.Context
	path  string
	args  []string
	stdin []byte
}

func (f *fakeRunner) Run(ctx context.Context, path string, args ...string) ([]byte, error) {
	return f.RunInput(ctx, nil, path, args...)
}

func (f *fakeRunner) RunInput(ctx context.Context, stdin []byte, path string, args ...string) ([]byte, error) {
	f.mu.Lock()
	f.calls = append(f.calls, call{ctx: ctx, path: path, args: slices.Clone(args), stdin: slices.Clone(stdin)})
	f.mu.Unlock()
	if f.answer != nil {
		out, err := f.answer(args, stdin)
		return []byte(out), err
	}
	return []byte(f.out), f.err
}

// verb is what a kubectl run does: createVerb for a `kubectl create -f`,
// getVerb for a `kubectl get secret`, or "delete" and its --raw path, e.g.
// "get /api/v1/namespaces/kube-system/secrets/bootstrap-token-abcdef".
func verb(args []string) string {
	i := slices.Index(args, "--raw")
	if i < 1 || i+1 >= len(args) {
		switch {
		case slices.Contains(args, "create"):
			return createVerb
		case slices.Contains(args, "get"):
			return getVerb
		}
		return strings.Join(args, " ")
	}
	return args[i-1] + " " + args[i+1]
}

// readSecretInput reads the one Secret of the List kubectl create is given
// on its stdin (`--filename -`).
func readSecretInput(t *testing.T, args []string, stdin []byte) *corev1.Secret {
	t.Helper()
	if i := slices.Index(args, "--filename"); i < 0 || i+1 >= len(args) || args[i+1] != "-" {
		t.Fatalf("kubectl create without --filename -: %q", args)
	}
	var l struct {
		Kind  string
		Items []corev1.Secret
	}
	if err := json.Unmarshal(stdin, &l); err != nil || l.Kind != "List" || len(l.Items) != 1 {
		t.Fatalf("kubectl create's stdin: %v, want a List of one Secret: %s", err, stdin)
	}
	return &l.Items[0]
}

// stored is what the cleanup's `kubectl get secret` prints of the Secret
// when it holds tokenSecret.
func stored(tokenSecret string) string {
	return "bootstrap-token-abcdef\x1fu1\x1f42\x1f" + b64(tokenSecret) + "\x1e"
}

func b64(s string) string {
	b, _ := json.Marshal([]byte(s))
	return strings.Trim(string(b), `"`)
}

// killed is kubectl killed at its deadline.
var killed = &command.KilledError{Path: "/usr/bin/kubectl", Err: context.DeadlineExceeded}

func TestKubectlPut(t *testing.T) {
	defer kubectl.SetLateChecks(nil)()
	expires := time.Date(2026, 11, 20, 10, 5, 0, 0, time.UTC)
	const host = "mlab1-lga01.mlab-oti.measurement-lab.org"
	tests := []struct {
		name string
		// answers by verb; a missing verb fails the test.
		answers    map[string]func() (string, error)
		want       token.Join
		wantErrIs  error
		wantCalls  []string
		overloaded bool // the error must say overload (503)
	}{
		{
			name:      "created",
			answers:   map[string]func() (string, error){createVerb: func() (string, error) { return created, nil }},
			want:      token.Join{APIAddress: cluster.APIAddress, Token: tok, CAHash: hashA},
			wantCalls: []string{createVerb},
		},
		{
			name: "an id that exists is a taken slot, never overwritten",
			answers: map[string]func() (string, error){createVerb: func() (string, error) {
				return "", exitErr(`Error from server (AlreadyExists): error when creating "/tmp/f.json": secrets "bootstrap-token-abcdef" already exists`)
			}},
			wantErrIs: token.ErrSlotTaken,
			wantCalls: []string{createVerb},
		},
		{
			name: "refused by the API server: nothing to undo",
			answers: map[string]func() (string, error){createVerb: func() (string, error) {
				return "", exitErr(`Error from server (TooManyRequests): error when creating "/tmp/f.json": the server has received too many requests and has asked us to try again later (post secrets)`)
			}},
			wantCalls:  []string{createVerb},
			overloaded: true,
		},
		{
			name: "killed at its deadline after the create was stored: the Secret is deleted",
			answers: map[string]func() (string, error){
				createVerb:             func() (string, error) { return "", killed },
				getVerb:                func() (string, error) { return stored(secret), nil },
				"delete " + secretPath: func() (string, error) { return "", nil },
			},
			wantErrIs:  context.DeadlineExceeded,
			overloaded: true,
			wantCalls:  []string{createVerb, getVerb, "delete " + secretPath},
		},
		{
			name: "killed, and the slot holds another token: left alone",
			answers: map[string]func() (string, error){
				createVerb: func() (string, error) { return "", killed },
				getVerb:    func() (string, error) { return stored("ffffffffffffffff"), nil },
			},
			wantErrIs:  context.DeadlineExceeded,
			overloaded: true,
			wantCalls:  []string{createVerb, getVerb},
		},
		{
			name: "killed before the create was stored",
			answers: map[string]func() (string, error){
				createVerb: func() (string, error) { return "", killed },
				getVerb:    func() (string, error) { return "", nil }, // --ignore-not-found
			},
			wantErrIs:  context.DeadlineExceeded,
			overloaded: true,
			wantCalls:  []string{createVerb, getVerb},
		},
		{
			name: "an answer that is no Secret is bad output, and undone",
			answers: map[string]func() (string, error){
				createVerb:             func() (string, error) { return "W1120 warnings.go:70] something", nil },
				getVerb:                func() (string, error) { return stored(secret), nil },
				"delete " + secretPath: func() (string, error) { return "", nil },
			},
			wantErrIs: kubectl.ErrBadOutput,
			wantCalls: []string{createVerb, getVerb, "delete " + secretPath},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// No file anywhere: the Secret and the delete options go on
			// kubectl's stdin.
			tmp := t.TempDir()
			t.Setenv("TMPDIR", tmp)
			r := &fakeRunner{answer: func(args []string, stdin []byte) (string, error) {
				v := verb(args)
				if strings.HasPrefix(v, "delete ") && (!slices.Contains(args, "-") || !strings.Contains(string(stdin), `"DeleteOptions"`)) {
					t.Errorf("kubectl %q got %q on stdin, want --filename - and the DeleteOptions", args, stdin)
				}
				if v == createVerb {
					s := readSecretInput(t, args, stdin)
					want := token.BootstrapSecret("abcdef", secret, token.Description(host), expires)
					if s.Name != want.Name || s.Namespace != want.Namespace || s.Type != want.Type || fmt.Sprint(s.Data) != fmt.Sprint(want.Data) {
						t.Errorf("kubectl create got %+v, want the Secret BootstrapSecret builds", s)
					}
				}
				answer, ok := tc.answers[v]
				if !ok {
					t.Errorf("unexpected kubectl %q", args)
					return "", errors.New("unexpected")
				}
				return answer()
			}}
			k := &kubectl.Store{Runner: r, BinDir: "/usr/bin", Kubeconfig: "/etc/kubernetes/admin.conf", Cluster: kube.NewClusterValue(cluster)}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()

			got, err := k.Put(ctx, tok, token.Description(host), expires)

			var verbs []string // a repeated run counted once: the cleanup polls
			for _, c := range r.calls {
				if v := verb(c.args); len(verbs) == 0 || verbs[len(verbs)-1] != v {
					verbs = append(verbs, v)
				}
				if verb(c.args) == createVerb && !slices.Contains(c.args, "--request-timeout") {
					t.Errorf("kubectl %q: want --request-timeout, so that the API server gives up when kubectl is killed", c.args)
				}
				if c.path != "/usr/bin/kubectl" {
					t.Errorf("Put ran %q, want /usr/bin/kubectl", c.path)
				}
				if !slices.Equal(c.args[:2], []string{"--kubeconfig", "/etc/kubernetes/admin.conf"}) {
					t.Errorf("kubectl %q: want --kubeconfig first", c.args)
				}
				if strings.Contains(strings.Join(c.args, " "), secret) {
					t.Errorf("the token secret is on kubectl's command line: %q", c.args)
				}
			}
			if !slices.Equal(verbs, tc.wantCalls) {
				t.Errorf("kubectl ran %q, want %q", verbs, tc.wantCalls)
			}
			if left, err := os.ReadDir(tmp); err != nil || len(left) != 0 {
				t.Errorf("$TMPDIR holds %v (%v) after Put, want nothing", left, err)
			}
			assertNoSecret(t, err)
			if tc.want == (token.Join{}) {
				if err == nil {
					t.Fatalf("Put() = %+v, want an error", got)
				}
				if tc.wantErrIs != nil && !errors.Is(err, tc.wantErrIs) {
					t.Errorf("Put() error = %v, want one wrapping %v", err, tc.wantErrIs)
				}
				if isO := errors.Is(err, overload.Err); isO != tc.overloaded {
					t.Errorf("Put() error %v says overload: %t, want %t", err, isO, tc.overloaded)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("Put() = %+v, %v, want %+v", got, err, tc.want)
			}
		})
	}
}

// TestKubectlAdmittedGoFirst runs a whole Slots.Create that needs three
// kubectl runs (slot 0 taken, the slots read, slot 1 created) through a
// runner with one slot, while three newer requests queue for it: the
// request waits in line once, for its first create; each later run goes
// before the newer requests that still wait, so that at most one of them
// (the one the slot went to while the request had no run queued) runs
// between two of its runs, and it is never shed half-way.
func TestKubectlAdmittedGoFirst(t *testing.T) {
	const host = "mlab1-lga01.mlab-oti.measurement-lab.org"
	var mu sync.Mutex
	var order []string
	creates := 0
	var limited *command.Limited
	var finished atomic.Bool
	fake := &fakeRunner{answer: func(args []string, stdin []byte) (string, error) {
		mu.Lock()
		v := verb(args)
		if strings.HasPrefix(args[0], "newer") {
			v = args[0]
		}
		order = append(order, v)
		if v == createVerb {
			creates++
		}
		n := creates
		mu.Unlock()
		switch {
		case strings.HasPrefix(v, "newer"):
			// A newer request's run lasts until the request has queued
			// its next run (or finished): the slot then frees with both
			// lines waiting, and the order shows which goes first.
			i, _ := strconv.Atoi(strings.TrimPrefix(v, "newer"))
			waitFor(t, func() bool { return finished.Load() || limited.Waiting() == 3-i })
			return "", nil
		case v == createVerb && n == 1:
			return "", exitErr(`Error from server (AlreadyExists): error when creating "f": secrets "bootstrap-token-` + token.SlotID(host, 0) + `" already exists`)
		case v == createVerb:
			return "secret/" + readSecretInput(t, args, stdin).Name + "\n", nil
		}
		return "", nil // get: no Secret found
	}}
	limited = command.NewLimited(fake, 1)
	k := &kubectl.Store{Runner: limited, BinDir: "/usr/bin", Cluster: kube.NewClusterValue(cluster)}
	s := &token.Slots{Store: k, Max: 2, TTL: time.Minute}

	_, release, err := limited.Hold(context.Background()) // a request running
	if err != nil {
		t.Fatal(err)
	}
	// This Limited's own queue: the process-wide gauge also counts the
	// late cleanup checks other tests left running.
	queued := func(n int) func() bool {
		return func() bool { return limited.Waiting() == n }
	}
	done := make(chan error, 1)
	go func() {
		// Time enough that the request never gives up its place while
		// the test, on a loaded machine, lines the others up.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		_, err := s.Create(ctx, host)
		finished.Store(true)
		done <- err
	}()
	waitFor(t, queued(1)) // its create's batch waits
	var newer sync.WaitGroup
	for i := range 3 {
		newer.Go(func() {
			if _, err := limited.Run(context.Background(), "/usr/bin/kubectl", fmt.Sprintf("newer%d", i)); err != nil {
				t.Errorf("newer request %d: %v", i, err)
			}
		})
		waitFor(t, queued(2+i))
	}
	release()
	if err := <-done; err != nil {
		t.Fatalf("Create() error = %v", err)
	}
	newer.Wait()

	mu.Lock()
	defer mu.Unlock()
	var own []string
	newerRuns, between := 0, 0
	for _, v := range order {
		if !strings.HasPrefix(v, "newer") {
			own = append(own, v)
			between = 0
			continue
		}
		if want := fmt.Sprintf("newer%d", newerRuns); v != want {
			t.Errorf("kubectl ran %q: %s before %s, want the newer requests in arrival order", order, v, want)
		}
		newerRuns++
		if between++; between > 1 && len(own) < 3 {
			t.Errorf("kubectl ran %q: two newer requests between two runs of the admitted one", order)
		}
	}
	want := []string{createVerb, "get secret", createVerb}
	if len(own) != len(want) || newerRuns != 3 {
		t.Fatalf("kubectl ran %q, want the request's %q and 3 newer runs", order, want)
	}
	for i := range want {
		if !strings.HasPrefix(own[i], want[i]) {
			t.Fatalf("kubectl ran %q, want the request's %q in that order", order, want)
		}
	}
}

// TestKubectlLateCleanup kills a create whose Secret the API server stores
// only after the cleanup's first looks: a later look, from the background,
// finds and deletes it.
func TestKubectlLateCleanup(t *testing.T) {
	defer kubectl.SetLateChecks([]time.Duration{10 * time.Millisecond, 300 * time.Millisecond})()
	var mu sync.Mutex
	isStored, deleted := false, make(chan struct{})
	r := &fakeRunner{answer: func(args []string, stdin []byte) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		switch v := verb(args); v {
		case createVerb:
			return "", killed
		case getVerb:
			if !isStored {
				return "", nil // --ignore-not-found
			}
			return stored(secret), nil
		case "delete " + secretPath:
			close(deleted)
			return "", nil
		default:
			return "", fmt.Errorf("unexpected kubectl %q", args)
		}
	}}
	k := &kubectl.Store{Runner: r, BinDir: "/usr/bin", Cluster: kube.NewClusterValue(cluster)}
	if _, err := k.Put(context.Background(), tok, token.Description("h"), time.Now().Add(time.Minute)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Put() error = %v, want the kill", err)
	}
	mu.Lock()
	isStored = true // the API server stores it only now
	mu.Unlock()
	select {
	case <-deleted:
	case <-time.After(10 * time.Second):
		t.Fatal("the Secret stored after the cleanup's first looks was never deleted")
	}
}

// waitFor polls cond until it holds, failing the test after 5 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 30 s")
		}
	}
}

// TestKubectlBatchesCreates puts 20 tokens at once while the one command
// slot is busy: they go into one kubectl create, which creates all but one
// (taken), and each Put learns its own outcome.
func TestKubectlBatchesCreates(t *testing.T) {
	var mu sync.Mutex
	var runs [][]string
	fake := &fakeRunner{answer: func(args []string, stdin []byte) (string, error) {
		var l struct{ Items []corev1.Secret }
		if err := json.Unmarshal(stdin, &l); err != nil {
			return "", err
		}
		var names []string
		var out strings.Builder
		for _, s := range l.Items {
			names = append(names, s.Name)
			if s.Name != "bootstrap-token-aaaa07" {
				out.WriteString("secret/" + s.Name + "\n")
			}
		}
		mu.Lock()
		runs = append(runs, names)
		mu.Unlock()
		return out.String(), exitErr(`Error from server (AlreadyExists): error when creating "f": secrets "bootstrap-token-aaaa07" already exists`)
	}}
	limited := command.NewLimited(fake, 1)
	k := &kubectl.Store{Runner: limited, BinDir: "/usr/bin", Cluster: kube.NewClusterValue(cluster)}
	_, release, err := limited.Hold(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(command.Admit(context.Background()), 10*time.Second)
			defer cancel()
			_, errs[i] = k.Put(ctx, fmt.Sprintf("aaaa%02d.0123456789abcdef", i), "d", time.Now().Add(time.Minute))
		})
	}
	time.Sleep(100 * time.Millisecond) // all wait for the slot
	release()
	wg.Wait()
	if len(runs) != 1 || len(runs[0]) != n {
		t.Fatalf("kubectl create ran %d times (%v), want once for all %d", len(runs), runs, n)
	}
	for i, err := range errs {
		if taken := errors.Is(err, token.ErrSlotTaken); (i == 7) != taken || (i != 7 && err != nil) {
			t.Errorf("Put %d: %v", i, err)
		}
	}
}

// TestKubectlPutThroughStdin puts a token through the real runner and a
// stand-in kubectl that keeps what it was given: the Secret reaches it on
// stdin, the token secret is on no command line, and no file is left in
// (or ever written to) $TMPDIR.
func TestKubectlPutThroughStdin(t *testing.T) {
	bin, seen, tmp := t.TempDir(), t.TempDir(), t.TempDir()
	t.Setenv("TMPDIR", tmp)
	script := "#!/bin/sh\nprintf '%s\\n' \"$@\" > " + seen + "/args\ncat > " + seen + "/stdin\n" +
		"ls -A \"$TMPDIR\" > " + seen + "/tmpdir\n" +
		"echo secret/bootstrap-token-abcdef\n"
	if err := os.WriteFile(bin+"/kubectl", []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	k := &kubectl.Store{Runner: command.NewLimited(command.Exec{}, 1), BinDir: bin, Cluster: kube.NewClusterValue(cluster)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := k.Put(ctx, tok, "d", time.Now().Add(time.Minute)); err != nil {
		t.Fatalf("Put() error = %v", err)
	}
	args, err := os.ReadFile(seen + "/args")
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := os.ReadFile(seen + "/stdin")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(args), secret) || !strings.Contains(string(args), "--filename\n-\n") {
		t.Errorf("kubectl ran with %q, want --filename - and no token secret", args)
	}
	if s := readSecretInput(t, []string{"--filename", "-"}, stdin); string(s.Data["token-secret"]) != secret {
		t.Errorf("kubectl got the Secret %+v on stdin, want the token's", s)
	}
	if during, err := os.ReadFile(seen + "/tmpdir"); err != nil || len(during) != 0 {
		t.Errorf("$TMPDIR held %q (%v) while kubectl ran, want nothing", during, err)
	}
	if left, err := os.ReadDir(tmp); err != nil || len(left) != 0 {
		t.Errorf("$TMPDIR holds %v (%v), want nothing", left, err)
	}
}
