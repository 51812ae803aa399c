package runas

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		want    User
		wantErr bool
	}{
		{"65532:65532", User{65532, 65532}, false},
		{"65532", User{65532, 65532}, false},
		{"1000:2000", User{1000, 2000}, false},
		{"nobody", User{65534, 65534}, false},
		{"0:0", User{}, true},
		{"0", User{}, true},
		{"65532:0", User{}, true},
		{"", User{}, true},
		{":5", User{}, true},
		{"-1:5", User{}, true},
		{"no-such-user-here", User{}, true},
		{"65532:no-such-group-here", User{}, true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := Parse(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Parse(%q) error = %v, want error %v", tc.in, err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("Parse(%q) = %+v, want %+v", tc.in, got, tc.want)
			}
		})
	}
}

// dropChild is set in the child process TestDrop starts: Drop changes its
// whole process for good, so it runs in a process of its own.
const dropChild = "RUNAS_TEST_DROP_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(dropChild) != "" {
		d, err := Drop(User{65534, 65534}, []byte("kubeconfig bytes"))
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		b, err := os.ReadFile(d.Kubeconfig)
		_, rootErr := os.ReadFile(os.Getenv(dropChild))
		fmt.Printf("uid=%d gid=%d copy=%q read=%v root_file_error=%v\n", os.Geteuid(), os.Getegid(), b, err, rootErr != nil)
		fmt.Println("cleanup:", d.Cleanup())
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestDrop runs Drop in a child started as root: it then runs as the user,
// reads the kubeconfig copy, can no longer read a root-only file, and
// removes its private folder.
func TestDrop(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: Drop gives up root; CI runs as root")
	}
	dir := t.TempDir()
	secret := filepath.Join(dir, "root-only")
	if err := os.WriteFile(secret, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A TMPDIR that every user may reach, as /tmp (t.TempDir's are not).
	tmp, err := os.MkdirTemp("", "runas-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	if err := os.Chmod(tmp, 0o1777); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), dropChild+"="+secret, "TMPDIR="+tmp)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	want := `uid=65534 gid=65534 copy="kubeconfig bytes" read=<nil> root_file_error=true`
	if !strings.Contains(string(out), want) || !strings.Contains(string(out), "cleanup: <nil>") {
		t.Errorf("child said %q, want %q and a clean removal", out, want)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("left behind in TMPDIR: %v", left)
	}
}

// TestDropNotRoot: a process that is not root can only "become" itself.
func TestDropNotRoot(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("needs a user other than root; TestDrop covers root")
	}
	d, err := Drop(User{os.Getuid(), os.Getgid()}, []byte("x"))
	if err != nil || d.Dir != "" {
		t.Errorf("Drop(self) = %+v, %v, want nothing done", d, err)
	}
	if _, err := Drop(User{os.Getuid() + 1, os.Getgid()}, nil); err == nil {
		t.Error("Drop(another user) as non-root = nil error, want one")
	}
}
