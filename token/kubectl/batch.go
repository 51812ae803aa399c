package kubectl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"

	"github.com/m-lab/epoxy-extensions/command"
	"github.com/m-lab/epoxy-extensions/token"
)

// DefaultMaxBatch is the most Secrets one kubectl run creates when
// Store.MaxBatch is 0. kubectl creates them one after another, about 8 ms
// each against a local API server, so that a run of 50 takes about half a
// second, and one process costs about 0.1 s of CPU whatever it creates.
const DefaultMaxBatch = 50

// creates gathers the creates waiting for a command slot (group commit):
// whoever gets the slot creates every one waiting then, with one kubectl
// run, so that a boot storm costs one process per batch, not per token.
type creates struct {
	mu      sync.Mutex
	pending []*pendingCreate
	// waiting is whether a goroutine waits for a slot to run the pending
	// creates: [0] in the admitted requests' line, [1] in the other.
	waiting [2]bool
}

// pendingCreate is one Secret to create, for the request of ctx.
type pendingCreate struct {
	ctx    context.Context
	secret *corev1.Secret
	done   chan createOutcome // buffered: the batch never waits for it
}

// createOutcome is what became of one create of a batch.
type createOutcome struct {
	// err is nil when the Secret was created.
	err error
	// mayBeStored means that the create failed as far as kubectl tells,
	// but the API server may have stored it all the same: undo it.
	mayBeStored bool
}

// create creates s with the next kubectl run that has a command slot,
// together with whatever other creates wait then. A request not yet
// admitted gives up waiting at command.GiveUpAt (ErrBusy); once its create
// is in a run, it waits for the run's end, which its own deadline bounds.
func (k *Store) create(ctx context.Context, s *corev1.Secret) createOutcome {
	c := &pendingCreate{ctx: ctx, secret: s, done: make(chan createOutcome, 1)}
	start := time.Now()
	k.creates.mu.Lock()
	k.creates.pending = append(k.creates.pending, c)
	k.startWaiter(command.Admitted(ctx))
	k.creates.mu.Unlock()
	var giveUp <-chan time.Time
	if at, ok := command.GiveUpAt(ctx); ok {
		t := time.NewTimer(time.Until(at))
		defer t.Stop()
		giveUp = t.C
	}
	var why error
	select {
	case o := <-c.done:
		return o
	case <-giveUp:
		why = context.DeadlineExceeded
	case <-ctx.Done():
		why = ctx.Err()
	}
	if k.withdraw(c) {
		return createOutcome{err: fmt.Errorf("%w: waited %s for a slot: %w", command.ErrBusy, time.Since(start).Round(time.Millisecond), why)}
	}
	return <-c.done // in a run already
}

// withdraw takes c out of the pending creates; false when a run took it.
func (k *Store) withdraw(c *pendingCreate) bool {
	k.creates.mu.Lock()
	defer k.creates.mu.Unlock()
	for i, p := range k.creates.pending {
		if p == c {
			k.creates.pending = append(k.creates.pending[:i], k.creates.pending[i+1:]...)
			return true
		}
	}
	return false
}

// startWaiter starts a goroutine that waits for a command slot to run the
// pending creates, unless one waits already in a line good enough: the
// admitted requests' line when admitted, the pending creates' having an
// admitted request's. k.creates.mu is held. A create arriving calls it for
// itself alone, in constant time: the creates before it have their waiter
// already; only a run that leaves creates pending looks at them all.
func (k *Store) startWaiter(admitted bool) {
	line := 1
	if admitted {
		line = 0
	}
	if k.creates.waiting[0] || k.creates.waiting[line] || len(k.creates.pending) == 0 {
		return
	}
	k.creates.waiting[line] = true
	go k.runCreates(line)
}

// anyAdmitted reports whether a pending create is an admitted request's.
// k.creates.mu is held.
func (k *Store) anyAdmitted() bool {
	for _, p := range k.creates.pending {
		if command.Admitted(p.ctx) {
			return true
		}
	}
	return false
}

// runCreates waits for a command slot in line, then creates every pending
// Secret (up to MaxBatch) with one kubectl run.
func (k *Store) runCreates(line int) {
	ctx := context.Background()
	if line == 0 {
		ctx = command.Admit(ctx)
		command.MarkAdmitted(ctx)
	}
	held, release, err := k.hold(ctx)
	k.creates.mu.Lock()
	k.creates.waiting[line] = false
	var batch []*pendingCreate
	if err == nil {
		batch = k.takeBatch()
	}
	k.startWaiter(k.anyAdmitted()) // for those left, if any
	k.creates.mu.Unlock()
	if err != nil {
		return // never, without a deadline
	}
	defer release()
	if len(batch) == 0 {
		return // all gave up meanwhile
	}
	for _, c := range batch {
		command.MarkAdmitted(c.ctx)
	}
	// The creates that may have been stored though they failed are undone
	// here, still holding the slot, with one read for all (cleanup);
	// the others are answered first.
	outcomes := k.createAll(held, batch)
	undo := map[string]string{}
	for i, o := range outcomes {
		if o.mayBeStored {
			d := batch[i].secret.Data
			undo[string(d[bootstrapapi.BootstrapTokenIDKey])] = string(d[bootstrapapi.BootstrapTokenSecretKey])
			continue
		}
		batch[i].done <- o
	}
	if len(undo) == 0 {
		return
	}
	k.cleanup(held, undo)
	for i, o := range outcomes {
		if o.mayBeStored {
			batch[i].done <- o
		}
	}
}

// hold takes a command slot for a batch when the Runner has slots.
func (k *Store) hold(ctx context.Context) (context.Context, func(), error) {
	if h, ok := k.Runner.(interface {
		Hold(context.Context) (context.Context, func(), error)
	}); ok {
		return h.Hold(ctx)
	}
	return ctx, func() {}, nil
}

// takeBatch takes up to MaxBatch pending creates, admitted requests'
// first, never two of one name: kubectl would tell the one it created
// from the one it did not by name alone. k.creates.mu is held.
func (k *Store) takeBatch() []*pendingCreate {
	n := k.MaxBatch
	if n <= 0 {
		n = DefaultMaxBatch
	}
	var batch, rest []*pendingCreate
	names := map[string]bool{}
	for _, admitted := range []bool{true, false} {
		for _, p := range k.creates.pending {
			if command.Admitted(p.ctx) != admitted {
				continue
			}
			if len(batch) < n && !names[p.secret.Name] {
				names[p.secret.Name] = true
				batch = append(batch, p)
			} else {
				rest = append(rest, p)
			}
		}
	}
	k.creates.pending = rest
	return batch
}

// createAll creates the Secrets of batch with one `kubectl create -f -` of
// a List on kubectl's stdin: the token secrets reach no file, which a
// server killed during the run would leave behind. The run ends
// at the earliest deadline of its requests: none outlives its own.
func (k *Store) createAll(ctx context.Context, batch []*pendingCreate) []createOutcome {
	var deadline time.Time
	list := struct {
		APIVersion string           `json:"apiVersion"`
		Kind       string           `json:"kind"`
		Items      []*corev1.Secret `json:"items"`
	}{APIVersion: "v1", Kind: "List"}
	names := make([]string, len(batch))
	for i, c := range batch {
		names[i] = c.secret.Name
		list.Items = append(list.Items, c.secret)
		if d, ok := c.ctx.Deadline(); ok && (deadline.IsZero() || d.Before(deadline)) {
			deadline = d
		}
	}
	fail := func(err error) []createOutcome {
		out := make([]createOutcome, len(batch))
		for i := range out {
			out[i] = createOutcome{err: fmt.Errorf("kubectl create secret %s: %w", names[i], err)}
		}
		return out
	}
	body, err := json.Marshal(list)
	if err != nil {
		return fail(fmt.Errorf("bootstrap-token Secrets: %w", err))
	}
	if !deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	// --validate=false: the API server checks the Secrets; kubectl need
	// not fetch the OpenAPI schema first.
	args := []string{"create", "--filename", "-", "--output", "name", "--validate=false"}
	if t := k.requestTimeout(ctx); t > 0 {
		// The API server gives up on each create by the time kubectl is
		// killed, so that a cleanup soon after finds what it stored.
		args = append(args, "--request-timeout", t.String())
	}
	out, err := k.kubectlInput(ctx, body, args...)
	return createOutcomes(names, string(out), err)
}

// createOutcomes tells, from what `kubectl create -f … --output name` of
// the Secrets names printed and its error, what became of each: a name
// printed is created; an item whose error line says AlreadyExists is a
// taken slot; another error line is that item's failure, which may have
// been stored unless the API server refused it; an item kubectl said
// nothing of (killed, a lost answer) may have been stored. kubectl goes on
// past a failed item and reports the failures in order, one line each:
// when error lines name no Secret (e.g. a 429), they are matched in order
// with the items no line names, if exactly as many.
func createOutcomes(names []string, out string, err error) []createOutcome {
	created := map[string]bool{}
	for _, line := range strings.Split(out, "\n") {
		if n, ok := strings.CutPrefix(strings.TrimSpace(line), "secret/"); ok {
			created[n] = true
		}
	}
	res := make([]createOutcome, len(names))
	if errors.Is(err, command.ErrNoInput) { // kubectl never ran
		for i, n := range names {
			res[i] = createOutcome{err: fmt.Errorf("kubectl create secret %s: %w", n, err)}
		}
		return res
	}
	if err == nil {
		for i, n := range names {
			if !created[n] {
				res[i] = createOutcome{err: fmt.Errorf("kubectl create secret %s: %w: not among the Secrets it created", n, ErrBadOutput), mayBeStored: true}
			}
		}
		return res
	}
	lineOf := map[string]string{}
	var anonymous []string // error lines that name no item
	var exitErr *command.ExitError
	if errors.As(err, &exitErr) {
		for _, line := range strings.Split(exitErr.Stderr, "\n") {
			line = strings.TrimSpace(line)
			if !strings.HasPrefix(line, "Error from server") && !strings.HasPrefix(line, "error when creating") {
				continue
			}
			named := false
			for _, n := range names {
				if !created[n] && strings.Contains(line, `"`+n+`"`) {
					lineOf[n], named = line, true
					break
				}
			}
			if !named {
				anonymous = append(anonymous, line)
			}
		}
	}
	var unnamed []string // items neither created nor named by a line
	for _, n := range names {
		if !created[n] && lineOf[n] == "" {
			unnamed = append(unnamed, n)
		}
	}
	if len(anonymous) == len(unnamed) {
		for i, n := range unnamed {
			lineOf[n] = anonymous[i]
		}
	}
	for i, n := range names {
		line := lineOf[n]
		switch {
		case created[n]:
		case strings.Contains(line, "(AlreadyExists)"):
			res[i] = createOutcome{err: fmt.Errorf("kubectl create secret %s: %w", n, token.ErrSlotTaken)}
		case line != "":
			res[i] = createOutcome{err: fmt.Errorf("kubectl create secret %s: %w", n, withOverload(line, errors.New(line))), mayBeStored: !refused(line)}
		default:
			res[i] = createOutcome{err: fmt.Errorf("kubectl create secret %s: %w", n, err), mayBeStored: true}
		}
	}
	return res
}
