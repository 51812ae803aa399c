package kubectl_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/m-lab/epoxy-extensions/command"
	"github.com/m-lab/epoxy-extensions/kube"
	"github.com/m-lab/epoxy-extensions/token/kubectl"
)

// TestKubectlKilledBatchCleanup kills a batch of five creates: one
// `kubectl get` reads all five back, the three stored with their own
// secret are deleted, the one holding another token is left alone, and
// only the one not found is looked for again.
func TestKubectlKilledBatchCleanup(t *testing.T) {
	defer kubectl.SetLateChecks(nil)()
	ids := []string{"aaaa00", "aaaa01", "aaaa02", "aaaa03", "aaaa04"}
	var mu sync.Mutex
	var gets [][]string
	var deleted []string
	fake := &fakeRunner{answer: func(args []string, _ []byte) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		switch v := verb(args); {
		case v == createVerb:
			return "", killed
		case v == getVerb:
			var names []string
			var out strings.Builder
			for _, a := range args[slices.Index(args, "--")+1:] {
				names = append(names, a)
				id := strings.TrimPrefix(a, "bootstrap-token-")
				switch id {
				case "aaaa00", "aaaa01", "aaaa02":
					out.WriteString(a + "\x1fu-" + id + "\x1f7\x1f" + b64(secret) + "\x1e")
				case "aaaa03":
					out.WriteString(a + "\x1fu-" + id + "\x1f7\x1f" + b64("ffffffffffffffff") + "\x1e")
				}
			}
			gets = append(gets, names)
			return out.String(), nil
		case strings.HasPrefix(v, "delete "):
			deleted = append(deleted, strings.TrimPrefix(v, "delete "+secretsPath+"/bootstrap-token-"))
			return "", nil
		default:
			return "", fmt.Errorf("unexpected kubectl %q", args)
		}
	}}
	limited := command.NewLimited(fake, 1)
	k := &kubectl.Store{Runner: limited, BinDir: "/usr/bin", Cluster: kube.NewClusterValue(cluster)}
	_, release, err := limited.Hold(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(command.Admit(context.Background()), 10*time.Second)
			defer cancel()
			if _, err := k.Put(ctx, id+"."+secret, "d", time.Now().Add(time.Minute)); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Put(%s) error = %v, want the kill", id, err)
			}
		})
	}
	time.Sleep(100 * time.Millisecond) // all wait for the slot
	release()
	wg.Wait()
	slices.Sort(deleted)
	if want := []string{"aaaa00", "aaaa01", "aaaa02"}; !slices.Equal(deleted, want) {
		t.Errorf("deleted %q, want %q", deleted, want)
	}
	if len(gets) == 0 || len(gets[0]) != len(ids) {
		t.Fatalf("the cleanup read %q, want all five in its first run", gets)
	}
	for _, g := range gets[1:] {
		if !slices.Equal(g, []string{"bootstrap-token-aaaa04"}) {
			t.Errorf("a later read of %q, want only the one not found", g)
		}
	}
}

// TestKubectlLateCleanupAfterFailure kills a create whose cleanup cannot
// read the Secret in time (the API server failing, or kubectl slower than
// the cleanup's bound): a later look, from the background, deletes it.
func TestKubectlLateCleanupAfterFailure(t *testing.T) {
	defer kubectl.SetLateChecks([]time.Duration{10 * time.Millisecond, 300 * time.Millisecond})()
	tests := []struct {
		name string
		fail func(ctx context.Context) (string, error)
	}{
		{name: "the API server fails", fail: func(context.Context) (string, error) {
			return "", exitErr(`Error from server (InternalError): etcdserver: request timed out`)
		}},
		{name: "kubectl too slow for the cleanup", fail: func(ctx context.Context) (string, error) {
			<-ctx.Done()
			return "", &command.KilledError{Path: "/usr/bin/kubectl", Err: ctx.Err()}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			failing, deleted := true, make(chan struct{})
			r := &ctxRunner{answer: func(ctx context.Context, args []string) (string, error) {
				mu.Lock()
				f := failing
				mu.Unlock()
				switch v := verb(args); v {
				case createVerb:
					return "", killed
				case getVerb:
					if f {
						return tc.fail(ctx)
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
			if _, err := k.Put(context.Background(), tok, "d", time.Now().Add(time.Minute)); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Put() error = %v, want the kill", err)
			}
			mu.Lock()
			failing = false
			mu.Unlock()
			select {
			case <-deleted:
			case <-time.After(20 * time.Second):
				t.Fatal("the Secret the cleanup could not read was never deleted")
			}
		})
	}
}

// ctxRunner answers each run with answer, which sees its context.
type ctxRunner struct {
	answer func(ctx context.Context, args []string) (string, error)
}

func (r *ctxRunner) Run(ctx context.Context, _ string, args ...string) ([]byte, error) {
	out, err := r.answer(ctx, args)
	return []byte(out), err
}

func (r *ctxRunner) RunInput(ctx context.Context, _ []byte, path string, args ...string) ([]byte, error) {
	return r.Run(ctx, path, args...)
}
