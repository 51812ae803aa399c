package kubectl_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/m-lab/epoxy-extensions/token"
	"github.com/m-lab/epoxy-extensions/token/kubectl"
)

// rec is one Secret as slotTemplate prints it.
func rec(name, uid, rv, created, typ, exp, desc string) string {
	return strings.Join([]string{name, uid, rv, created, typ, exp, desc}, "\x1f") + "\x1e"
}

func TestKubectlGetAll(t *testing.T) {
	const bt = "bootstrap.kubernetes.io/token"
	created := "2026-11-20T10:00:00Z"
	tests := []struct {
		name    string
		out     string
		runErr  error
		want    map[string]token.Slot
		wantErr bool
	}{
		{name: "none found", out: "", want: map[string]token.Slot{}},
		{name: "two tokens", out: rec("bootstrap-token-aaaaaa", "u1", "7", created, bt, "2026-11-20T10:05:00Z", "Allow h to join the cluster") +
			rec("bootstrap-token-bbbbbb", "u2", "8", created, bt, "", "Allow h\x1bwith odd text"),
			want: map[string]token.Slot{
				"aaaaaa": {ID: "aaaaaa", UID: "u1", ResourceVersion: "7", Description: "Allow h to join the cluster",
					Created: time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC), Expires: time.Date(2026, 11, 20, 10, 5, 0, 0, time.UTC)},
				"bbbbbb": {ID: "bbbbbb", UID: "u2", ResourceVersion: "8", Description: "Allow h\x1bwith odd text",
					Created: time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)},
			}},
		{name: "not a bootstrap token: nobody's", out: rec("bootstrap-token-cccccc", "u3", "9", created, "Opaque", "", "Allow h to join the cluster"),
			want: map[string]token.Slot{"cccccc": {ID: "cccccc", UID: "u3", ResourceVersion: "9", Created: time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)}}},
		{name: "unreadable expiration counts as expired", out: rec("bootstrap-token-dddddd", "u4", "1", created, bt, "soon", "d"),
			want: map[string]token.Slot{"dddddd": {ID: "dddddd", UID: "u4", ResourceVersion: "1", Description: "d",
				Created: time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC), Expires: time.Unix(0, 0)}}},
		{name: "too few fields", out: "bootstrap-token-aaaaaa\x1fu1\x1e", wantErr: true},
		{name: "another name", out: rec("kubeadm-certs", "u1", "1", created, bt, "", ""), wantErr: true},
		{name: "bad creation time", out: rec("bootstrap-token-aaaaaa", "u1", "1", "yesterday", bt, "", ""), wantErr: true},
		{name: "kubectl fails", runErr: errors.New("exit status 1"), wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &fakeRunner{out: tc.out, err: tc.runErr}
			k := &kubectl.Store{Runner: r, BinDir: "/usr/bin", Kubeconfig: "/etc/kubernetes/admin.conf"}
			got, err := k.GetAll(context.Background(), []string{"aaaaaa", "bbbbbb"})
			if (err != nil) != tc.wantErr {
				t.Fatalf("GetAll() error = %v, want error: %t", err, tc.wantErr)
			}
			if len(r.calls) != 1 {
				t.Fatalf("kubectl ran %d times, want once", len(r.calls))
			}
			args := r.calls[0].args
			if r.calls[0].path != "/usr/bin/kubectl" || !slices.Equal(args[:2], []string{"--kubeconfig", "/etc/kubernetes/admin.conf"}) ||
				!slices.Equal(args[len(args)-3:], []string{"--", "bootstrap-token-aaaaaa", "bootstrap-token-bbbbbb"}) {
				t.Errorf("ran %s %q", r.calls[0].path, args)
			}
			if tc.wantErr {
				return
			}
			if len(got) != len(tc.want) {
				t.Fatalf("GetAll() = %+v, want %+v", got, tc.want)
			}
			for id, w := range tc.want {
				g := got[id]
				if g.ID != w.ID || g.UID != w.UID || g.ResourceVersion != w.ResourceVersion || g.Description != w.Description ||
					!g.Created.Equal(w.Created) || !g.Expires.Equal(w.Expires) {
					t.Errorf("slot %s = %+v, want %+v", id, g, w)
				}
			}
		})
	}
}

func TestKubectlRemove(t *testing.T) {
	tests := []struct {
		name        string
		runErr      error
		wantChanged bool
		wantErr     bool
	}{
		{name: "deleted"},
		{name: "replaced meanwhile", runErr: errors.New(`exit status 1: stderr: "Error from server (Conflict): Precondition failed: UID in precondition: u1, UID in object meta: u2"`), wantChanged: true, wantErr: true},
		{name: "gone meanwhile", runErr: errors.New(`exit status 1: stderr: "Error from server (NotFound): the server could not find the requested resource"`), wantChanged: true, wantErr: true},
		{name: "forbidden", runErr: errors.New(`exit status 1: stderr: "Error from server (Forbidden)"`), wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var body []byte
			r := &fakeRunner{answer: func(args []string, stdin []byte) (string, error) {
				if i := slices.Index(args, "--filename"); i < 0 || args[i+1] != "-" {
					return "", errors.New("no --filename -")
				}
				body = stdin
				return "", tc.runErr
			}}
			k := &kubectl.Store{Runner: r, BinDir: "/usr/bin"}
			err := k.Remove(context.Background(), token.Slot{ID: "aaaaaa", UID: "u1", ResourceVersion: "7"})
			if (err != nil) != tc.wantErr || errors.Is(err, token.ErrSlotChanged) != tc.wantChanged {
				t.Errorf("Remove() error = %v, want error %t, ErrSlotChanged %t", err, tc.wantErr, tc.wantChanged)
			}
			args := r.calls[0].args
			if !slices.Equal(args[:3], []string{"delete", "--raw", "/api/v1/namespaces/kube-system/secrets/bootstrap-token-aaaaaa"}) {
				t.Errorf("ran kubectl %q", args)
			}
			var opts struct {
				Kind          string
				Preconditions struct{ UID, ResourceVersion string }
			}
			if err := json.Unmarshal(body, &opts); err != nil {
				t.Fatalf("delete options %q: %v", body, err)
			}
			if opts.Kind != "DeleteOptions" || opts.Preconditions.UID != "u1" || opts.Preconditions.ResourceVersion != "7" {
				t.Errorf("delete options %s, want preconditions on UID u1 and resourceVersion 7", body)
			}
		})
	}
}

func TestName(t *testing.T) {
	if got := (&kubectl.Store{}).Name(); got != "kubectl" {
		t.Errorf("Store.Name() = %q, want kubectl", got)
	}
}
