package node_test

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"

	"github.com/m-lab/epoxy-extensions/node"
)

var (
	_ node.Remover = (*fakeNodes)(nil)
	_ node.Remover = corev1client.NodeInterface(nil)
)

// fakeNodes serves one Node (labelled control-plane when controlPlane is
// set; missing when getErr is a NotFound), records the names it is asked to
// delete and answers delete i (from 0) with errs[i], or success when errs
// has no such entry. With block, every call waits for ctx instead and
// returns its error.
type fakeNodes struct {
	controlPlane bool
	addrs        []string // the Node's status.addresses
	getErr       error
	errs         []error
	block        bool
	names        []string
	preconds     []string // the UID precondition of each delete
	gets         int
}

const fakeUID = "0b9d-uid"

func (f *fakeNodes) Get(ctx context.Context, name string, opts metav1.GetOptions) (*corev1.Node, error) {
	if f.block {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	f.gets++
	if f.getErr != nil {
		return nil, f.getErr
	}
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, UID: fakeUID, Labels: map[string]string{"kubernetes.io/hostname": name}}}
	if f.controlPlane {
		n.Labels[node.ControlPlaneLabel] = ""
	}
	for _, a := range f.addrs {
		n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a})
	}
	return n, nil
}

func (f *fakeNodes) Delete(ctx context.Context, name string, opts metav1.DeleteOptions) error {
	i := len(f.names)
	f.names = append(f.names, name)
	if opts.Preconditions != nil && opts.Preconditions.UID != nil {
		f.preconds = append(f.preconds, string(*opts.Preconditions.UID))
	} else {
		f.preconds = append(f.preconds, "")
	}
	if i < len(f.errs) {
		return f.errs[i]
	}
	return nil
}

var nodesGR = schema.GroupResource{Resource: "nodes"}

type deleteCase struct {
	name      string
	node      string
	cp        bool       // the Node is a control-plane Node
	addrs     []string   // the Node's addresses
	owner     netip.Addr // the direct caller's address; none when zero
	getErr    error      // the Node's read fails so
	errs      []error
	wantCalls []string
	wantErr   func(error) bool // nil: want no error
}

func TestAPIDelete(t *testing.T) {
	const name = "mlab1-lga01.mlab-oti.measurement-lab.org-d9h6"
	forbidden := apierrors.NewForbidden(nodesGR, name, errors.New("RBAC"))
	tests := []deleteCase{
		{name: "success", node: name, wantCalls: []string{name}},
		{name: "not found counts as deleted", node: name, errs: []error{apierrors.NewNotFound(nodesGR, name)}, wantCalls: []string{name}},
		{name: "forbidden", node: name, errs: []error{forbidden}, wantCalls: []string{name},
			wantErr: func(err error) bool {
				return apierrors.IsForbidden(err) && errors.Is(err, forbidden) && strings.Contains(err.Error(), name)
			}},
		{name: "transient then success", node: name, errs: []error{apierrors.NewServiceUnavailable("starting")}, wantCalls: []string{name, name}},
		{name: "transient then not found", node: name,
			errs: []error{apierrors.NewTooManyRequests("slow down", 0), apierrors.NewNotFound(nodesGR, name)}, wantCalls: []string{name, name}},
		{name: "longest name", node: longestName, wantCalls: []string{longestName}},
		{name: "control-plane node is refused", node: name, cp: true,
			wantErr: func(err error) bool {
				return errors.Is(err, node.ErrControlPlane) && strings.Contains(err.Error(), name)
			}},
		{name: "missing node: nothing to delete", node: name, getErr: apierrors.NewNotFound(nodesGR, name)},
		{name: "own node", node: name, addrs: []string{"198.51.100.1", "2001:db8::1"}, owner: netip.MustParseAddr("198.51.100.1"), wantCalls: []string{name}},
		{name: "own node, IPv6", node: name, addrs: []string{"198.51.100.1", "2001:db8::1"}, owner: netip.MustParseAddr("2001:db8::1"), wantCalls: []string{name}},
		{name: "another's node", node: name, addrs: []string{"198.51.100.1"}, owner: netip.MustParseAddr("198.51.100.9"),
			wantErr: func(err error) bool {
				return errors.Is(err, node.ErrNotOwnNode) && strings.Contains(err.Error(), "198.51.100.9")
			}},
		{name: "a node without addresses is nobody's own", node: name, owner: netip.MustParseAddr("198.51.100.1"),
			wantErr: func(err error) bool { return errors.Is(err, node.ErrNotOwnNode) }},
		{name: "missing node, direct caller", node: name, owner: netip.MustParseAddr("198.51.100.1"), getErr: apierrors.NewNotFound(nodesGR, name)},
		{name: "read forbidden", node: name, getErr: forbidden,
			wantErr: func(err error) bool { return apierrors.IsForbidden(err) && strings.Contains(err.Error(), name) }},
	}
	invalid := []string{"", "-all", "--all", "-A", "a b", "UPPER", "a;rm", "node/proxy", "..", "a..b", "trailing-", "under_score",
		strings.Repeat("a", 64), strings.Repeat("a", 254), strings.Repeat("a", 300)}
	for _, n := range invalid {
		// Refused before any call: an empty name would address the collection.
		label := strconv.Quote(n)
		if len(n) > 20 {
			label = strconv.Itoa(len(n)) + " chars"
		}
		tests = append(tests, deleteCase{name: "invalid " + label, node: n,
			wantErr: func(err error) bool { return errors.Is(err, node.ErrInvalidName) }})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeNodes{errs: tc.errs, controlPlane: tc.cp, addrs: tc.addrs, getErr: tc.getErr}
			a := &node.API{Nodes: f, Timeout: 10 * time.Second}

			err := a.Delete(context.Background(), tc.node, tc.owner)

			if tc.wantErr == nil && err != nil {
				t.Errorf("Delete(%q) error = %v, want nil", tc.node, err)
			}
			if tc.wantErr != nil && (err == nil || !tc.wantErr(err)) {
				t.Errorf("Delete(%q) error = %v, not the error wanted", tc.node, err)
			}
			if !slices.Equal(f.names, tc.wantCalls) {
				t.Errorf("Delete(%q) asked the API to delete %q, want %q", tc.node, f.names, tc.wantCalls)
			}
			for _, uid := range f.preconds {
				if uid != fakeUID {
					t.Errorf("Delete(%q) sent UID precondition %q, want %q: the Node read", tc.node, uid, fakeUID)
				}
			}
		})
	}
}

func TestAPIDeleteTimeout(t *testing.T) {
	const timeout = 50 * time.Millisecond
	f := &fakeNodes{block: true}
	a := &node.API{Nodes: f, Timeout: timeout}
	start := time.Now()
	err := a.Delete(context.Background(), "mlab1-lga01.mlab-oti.measurement-lab.org", netip.Addr{})
	if elapsed := time.Since(start); elapsed > timeout+time.Second {
		t.Errorf("Delete() returned after %s, want about %s", elapsed, timeout)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Delete() error = %v, want a deadline", err)
	}
	if len(f.names) != 0 {
		t.Errorf("Delete() deleted %q, want nothing: the read never answered", f.names)
	}
}

func TestNames(t *testing.T) {
	if got := (&node.API{}).Name(); got != "kube_api" {
		t.Errorf("API.Name() = %q, want kube_api", got)
	}
	if got := (&node.Kubectl{}).Name(); got != "kubectl" {
		t.Errorf("Kubectl.Name() = %q, want kubectl", got)
	}
}

// longestName is a valid name of 253 characters: five labels of 49 and one of 3.
var longestName = strings.Repeat(strings.Repeat("a", 49)+".", 5) + "abc"

// fakeCache knows the Nodes in it.
type fakeCache map[string]*corev1.Node

func (c fakeCache) Node(name string) (*corev1.Node, bool) {
	n, ok := c[name]
	return n, ok
}

// TestAPIDeleteFromCache checks that the checks before a delete read the
// watch-fed cache when it knows the Node, with no Get, deleting on
// condition of the cached UID; and that a Node it does not know, one
// replaced since it saw it (the delete's precondition fails), or one it
// would refuse (it may lag) is read from the API server, which decides.
func TestAPIDeleteFromCache(t *testing.T) {
	const name = "mlab1-lga01.mlab-oti.measurement-lab.org"
	cached := func(uid string, controlPlane bool, addr string) *corev1.Node {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID(uid)}}
		if controlPlane {
			n.Labels = map[string]string{node.ControlPlaneLabel: ""}
		}
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: addr}}
		return n
	}
	conflict := apierrors.NewConflict(nodesGR, name, errors.New("precondition failed"))
	owner := netip.MustParseAddr("10.0.0.4")
	tests := []struct {
		name         string
		cache        fakeCache
		owner        netip.Addr
		addrs        []string // the Node's addresses in the API server
		controlPlane bool     // the Node in the API server is a control plane
		errs         []error
		wantErr      error
		wantGets     int
		wantPreconds []string
	}{
		{name: "own node, cached", cache: fakeCache{name: cached("cached-uid", false, "10.0.0.4")}, owner: owner,
			wantPreconds: []string{"cached-uid"}},
		{name: "proxy, cached", cache: fakeCache{name: cached("cached-uid", false, "10.0.0.9")},
			wantPreconds: []string{"cached-uid"}},
		{name: "another's node", cache: fakeCache{name: cached("cached-uid", false, "10.0.0.9")}, owner: owner,
			addrs: []string{"10.0.0.9"}, wantErr: node.ErrNotOwnNode, wantGets: 1},
		{name: "another's node as cached, its own by now", cache: fakeCache{name: cached("cached-uid", false, "")}, owner: owner,
			wantGets: 1, wantPreconds: []string{fakeUID}},
		{name: "control plane", cache: fakeCache{name: cached("cached-uid", true, "10.0.0.4")}, owner: owner,
			controlPlane: true, wantErr: node.ErrControlPlane, wantGets: 1},
		{name: "not cached: read", cache: fakeCache{}, owner: owner, wantGets: 1, wantPreconds: []string{fakeUID}},
		{name: "replaced since cached: read again", cache: fakeCache{name: cached("old-uid", false, "10.0.0.4")}, owner: owner,
			errs: []error{conflict}, wantGets: 1, wantPreconds: []string{"old-uid", fakeUID}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeNodes{addrs: tc.addrs, errs: tc.errs, controlPlane: tc.controlPlane}
			if f.addrs == nil {
				f.addrs = []string{"10.0.0.4"}
			}
			a := &node.API{Nodes: f, Cache: tc.cache, Timeout: time.Second}
			err := a.Delete(context.Background(), name, tc.owner)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("Delete() error = %v, want %v", err, tc.wantErr)
			}
			if f.gets != tc.wantGets {
				t.Errorf("Gets = %d, want %d", f.gets, tc.wantGets)
			}
			if !slices.Equal(f.preconds, tc.wantPreconds) {
				t.Errorf("delete preconditions = %q, want %q", f.preconds, tc.wantPreconds)
			}
		})
	}
}
