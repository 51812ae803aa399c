package kubectl

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/m-lab/epoxy-extensions/command"
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
