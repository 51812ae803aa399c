package kubectl_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/m-lab/epoxy-extensions/token/kubectl"
)

// TestReady runs Ready against a stand-in kubectl, a shell script that
// answers `auth can-i` as the real one does.
func TestReady(t *testing.T) {
	tests := []struct {
		name    string
		script  string // empty: no kubectl at all
		wantErr bool
	}{
		{name: "may create secrets", script: "#!/bin/sh\necho yes\n"},
		{name: "may not", script: "#!/bin/sh\necho no\nexit 1\n", wantErr: true},
		{name: "answers no with exit 0", script: "#!/bin/sh\necho no\n", wantErr: true},
		{name: "no kubectl", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.script != "" {
				if err := os.WriteFile(filepath.Join(dir, "kubectl"), []byte(tc.script), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			k := &kubectl.Store{BinDir: dir, Kubeconfig: "/nonexistent/admin.conf"}
			if err := k.Ready(context.Background()); (err != nil) != tc.wantErr {
				t.Errorf("Ready() = %v, want error: %t", err, tc.wantErr)
			}
		})
	}
}
