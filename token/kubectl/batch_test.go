package kubectl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/m-lab/epoxy-extensions/command"
	"github.com/m-lab/epoxy-extensions/kube"
	"github.com/m-lab/epoxy-extensions/overload"
	"github.com/m-lab/epoxy-extensions/token"
)

func TestCreateOutcomes(t *testing.T) {
	names := []string{"bootstrap-token-aaaaaa", "bootstrap-token-bbbbbb", "bootstrap-token-cccccc"}
	exit := func(stderr string) error {
		return &command.ExitError{Path: "/usr/bin/kubectl", Err: errors.New("exit status 1"), Stderr: stderr}
	}
	const exists = `Error from server (AlreadyExists): error when creating "/tmp/t.json": secrets "bootstrap-token-%s" already exists`
	killed := &command.KilledError{Path: "/usr/bin/kubectl", Err: context.DeadlineExceeded}
	// want per item: "ok" created, "taken" ErrSlotTaken, "refused" failed
	// and not stored, "undo" failed and maybe stored; "busy" marks overload.
	tests := []struct {
		name string
		out  string
		err  error
		want []string
	}{
		{name: "all created", out: "secret/bootstrap-token-aaaaaa\nsecret/bootstrap-token-bbbbbb\nsecret/bootstrap-token-cccccc\n",
			want: []string{"ok", "ok", "ok"}},
		{name: "exit 0 without one of them: bad output, undone", out: "secret/bootstrap-token-aaaaaa\nsecret/bootstrap-token-cccccc\n",
			want: []string{"ok", "undo", "ok"}},
		{name: "one slot taken, the others created", out: "secret/bootstrap-token-aaaaaa\nsecret/bootstrap-token-cccccc\n",
			err:  exit(fmt.Sprintf(exists, "bbbbbb")),
			want: []string{"ok", "taken", "ok"}},
		{name: "two taken, a warning besides", out: "secret/bootstrap-token-bbbbbb\n",
			err:  exit("Warning: something\n" + fmt.Sprintf(exists, "aaaaaa") + "\n" + fmt.Sprintf(exists, "cccccc") + "\n"),
			want: []string{"taken", "ok", "taken"}},
		{name: "unnamed 429s matched in order", out: "secret/bootstrap-token-bbbbbb\n",
			err: exit("Error from server (TooManyRequests): error when creating \"/tmp/t.json\": the server has received too many requests and has asked us to try again later (post secrets)\n" +
				"Error from server (InternalError): error when creating \"/tmp/t.json\": Internal error occurred: etcd timeout\n"),
			want: []string{"refused busy", "ok", "undo"}},
		{name: "unnamed lines not one per item: every one undone", out: "secret/bootstrap-token-bbbbbb\n",
			err:  exit("error: unable to connect to the server: dial tcp 127.0.0.1:6443: connect: connection refused\n"),
			want: []string{"undo", "ok", "undo"}},
		{name: "killed after the first: the rest undone, overload", out: "secret/bootstrap-token-aaaaaa\n", err: fmt.Errorf("%w: %w", overload.Err, killed),
			want: []string{"ok", "undo busy", "undo busy"}},
		{name: "killed before any", err: killed, want: []string{"undo busy", "undo busy", "undo busy"}},
		{name: "a runner that cannot feed stdin: nothing ran, nothing to undo", err: fmt.Errorf("kubectl: %w", command.ErrNoInput),
			want: []string{"refused", "refused", "refused"}},
		{name: "a named server error other than AlreadyExists", out: "secret/bootstrap-token-aaaaaa\nsecret/bootstrap-token-bbbbbb\n",
			err:  exit(`Error from server (Forbidden): error when creating "/tmp/t.json": secrets "bootstrap-token-cccccc" is forbidden: no`),
			want: []string{"ok", "ok", "refused"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := createOutcomes(names, tc.out, tc.err)
			if len(got) != len(names) {
				t.Fatalf("%d outcomes for %d creates", len(got), len(names))
			}
			for i, o := range got {
				var s string
				switch {
				case o.err == nil:
					s = "ok"
				case errors.Is(o.err, token.ErrSlotTaken):
					s = "taken"
				case o.mayBeStored:
					s = "undo"
				default:
					s = "refused"
				}
				if errors.Is(o.err, overload.Err) {
					s += " busy"
				}
				if s != tc.want[i] {
					t.Errorf("item %d (%s): %s (%v), want %s", i, names[i], s, o.err, tc.want[i])
				}
			}
		})
	}
}

// latencyRunner is a kubectl that takes a fixed time per run and creates
// every Secret it is given.
type latencyRunner struct{ latency time.Duration }

func (r latencyRunner) Run(ctx context.Context, path string, args ...string) ([]byte, error) {
	return r.RunInput(ctx, nil, path, args...)
}

func (r latencyRunner) RunInput(_ context.Context, stdin []byte, _ string, _ ...string) ([]byte, error) {
	time.Sleep(r.latency)
	var l struct{ Items []corev1.Secret }
	if err := json.Unmarshal(stdin, &l); err != nil {
		return nil, err
	}
	var out strings.Builder
	for _, s := range l.Items {
		out.WriteString("secret/" + s.Name + "\n")
	}
	return []byte(out.String()), nil
}

// BenchmarkBatchedCreates puts 100 or 500 tokens at once through two
// command slots and a kubectl of 100 ms: with -blockprofile and
// -mutexprofile, it shows what besides the slots serialises the creates.
func BenchmarkBatchedCreates(b *testing.B) {
	for _, n := range []int{100, 500} {
		b.Run(fmt.Sprintf("%d at once", n), func(b *testing.B) {
			k := &Store{Runner: command.NewLimited(latencyRunner{latency: 100 * time.Millisecond}, 2),
				Cluster: kube.NewClusterValue(kube.Cluster{APIAddress: "10.0.0.1:6443", CAHash: "sha256:00"})}
			for i := 0; b.Loop(); i++ {
				var wg sync.WaitGroup
				for j := range n {
					wg.Go(func() {
						ctx, cancel := context.WithTimeout(command.Admit(context.Background()), time.Minute)
						defer cancel()
						tok := fmt.Sprintf("%06d.0123456789abcdef", (i*n+j)%1000000)
						if _, err := k.Put(ctx, tok, "d", time.Now().Add(time.Minute)); err != nil {
							b.Error(err)
						}
					})
				}
				wg.Wait()
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/storm")
		})
	}
}
