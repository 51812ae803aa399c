package kube

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// withFiles makes exists report only the given paths, for one test.
func withFiles(t *testing.T, paths ...string) {
	t.Helper()
	saved := exists
	t.Cleanup(func() { exists = saved })
	exists = func(p string) bool {
		for _, q := range paths {
			if p == q {
				return true
			}
		}
		return false
	}
}

func TestResolve(t *testing.T) {
	const home = "/home/op"
	homeConfig := filepath.Join(home, ".kube", "config")
	tests := []struct {
		name     string
		flag     string
		env      Env
		files    []string
		wantExec Kubeconfig
		wantAPI  Kubeconfig
	}{
		{"flag wins", "/x/conf", Env{Kubeconfig: "/k", Home: home, InCluster: true}, []string{"/k", homeConfig, AdminKubeconfig},
			Kubeconfig{"/x/conf", "flag"}, Kubeconfig{"/x/conf", "flag"}},
		{"KUBECONFIG, M-Lab's unit", "", Env{Kubeconfig: AdminKubeconfig}, []string{AdminKubeconfig},
			Kubeconfig{AdminKubeconfig, "KUBECONFIG"}, Kubeconfig{AdminKubeconfig, "KUBECONFIG"}},
		{"KUBECONFIG list: first that exists", "", Env{Kubeconfig: "/a:/b", Home: home}, []string{"/b", homeConfig},
			Kubeconfig{"/b", "KUBECONFIG"}, Kubeconfig{"/b", "KUBECONFIG"}},
		{"KUBECONFIG hides ~/.kube/config, as in kubeadm", "", Env{Kubeconfig: "/a", Home: home}, []string{homeConfig, AdminKubeconfig},
			Kubeconfig{AdminKubeconfig, "admin.conf"}, Kubeconfig{"/a", "KUBECONFIG"}},
		{"KUBECONFIG missing, nothing else", "", Env{Kubeconfig: "/a"}, nil,
			Kubeconfig{"/a", "KUBECONFIG"}, Kubeconfig{"/a", "KUBECONFIG"}},
		{"home", "", Env{Home: home}, []string{homeConfig, AdminKubeconfig},
			Kubeconfig{homeConfig, "home"}, Kubeconfig{AdminKubeconfig, "admin.conf"}},
		{"make serve: root on a control-plane node", "", Env{Home: "/root"}, []string{AdminKubeconfig},
			Kubeconfig{AdminKubeconfig, "admin.conf"}, Kubeconfig{AdminKubeconfig, "admin.conf"}},
		{"in a pod", "", Env{Home: home, InCluster: true}, nil,
			Kubeconfig{homeConfig, "home"}, Kubeconfig{"", "in-cluster"}},
		{"nothing anywhere", "", Env{Home: home}, nil,
			Kubeconfig{homeConfig, "home"}, Kubeconfig{AdminKubeconfig, "admin.conf"}},
		{"no home, nothing anywhere", "", Env{}, nil,
			Kubeconfig{AdminKubeconfig, "admin.conf"}, Kubeconfig{AdminKubeconfig, "admin.conf"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			withFiles(t, tc.files...)
			if got := ResolveForTools(tc.flag, tc.env); got != tc.wantExec {
				t.Errorf("ResolveForTools() = %+v, want %+v", got, tc.wantExec)
			}
			if got := ResolveForAPI(tc.flag, tc.env); got != tc.wantAPI {
				t.Errorf("ResolveForAPI() = %+v, want %+v", got, tc.wantAPI)
			}
		})
	}
}

func TestCheckReadable(t *testing.T) {
	dir := t.TempDir()
	readable := filepath.Join(dir, "ok.conf")
	if err := os.WriteFile(readable, []byte("apiVersion: v1\nkind: Config\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.conf")
	tests := []struct {
		name     string
		k        Kubeconfig
		wantErr  error
		wantText []string
	}{
		{"in-cluster", Kubeconfig{"", "in-cluster"}, nil, nil},
		{"readable", Kubeconfig{readable, "flag"}, nil, nil},
		{"missing", Kubeconfig{missing, "KUBECONFIG"}, os.ErrNotExist, []string{missing, "KUBECONFIG", "does not exist", AdminKubeconfig}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckReadable(tc.k)
			if !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Fatalf("CheckReadable() = %v, want %v", err, tc.wantErr)
			}
			for _, w := range tc.wantText {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("CheckReadable() = %q, want it to name %q", err, w)
				}
			}
		})
	}
}

// TestFlatten: a kubeconfig that refers to files comes back with their
// contents embedded, so that a copy works where those files are unreadable.
func TestFlatten(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), []byte("CA DATA"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "admin.conf")
	conf := `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:6443", certificate-authority: ca.crt}
users:
- name: u
  user: {token: abc}
contexts:
- name: x
  context: {cluster: c, user: u}
current-context: x
`
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := Flatten(path)
	if err != nil {
		t.Fatalf("Flatten() error = %v", err)
	}
	if got := string(b); !strings.Contains(got, "certificate-authority-data") || strings.Contains(got, "ca.crt") {
		t.Errorf("Flatten() = %s, want the CA embedded and no file named", got)
	}
	if _, err := Flatten(filepath.Join(dir, "missing")); err == nil {
		t.Error("Flatten(missing) = nil error, want one")
	}
}
