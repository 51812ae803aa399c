package e2e

import (
	"bufio"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestListNeedsNoComponent runs this test binary as `go test -list .` runs
// it (-test.list), with an empty component cache: it must list the tests
// without building or starting anything.
func TestListNeedsNoComponent(t *testing.T) {
	waiting(t)
	if testing.Short() {
		t.Skip("runs the test binary")
	}
	cache := t.TempDir()
	// The binary that runs this test: what go test -list would link anew.
	cmd := exec.Command(os.Args[0], "-test.list", ".")
	cmd.Env = append(os.Environ(), "EPOXY_COMPONENTS_CACHE="+cache, "K8S_BIN_DIR=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go test -list: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "TestListNeedsNoComponent") {
		t.Errorf("go test -list did not list the tests:\n%s", out)
	}
	if entries, _ := os.ReadDir(cache); len(entries) > 0 {
		t.Errorf("go test -list touched the component cache: %v", entries)
	}
	if strings.Contains(string(out), "components:") || strings.Contains(string(out), "e2e: control plane") {
		t.Errorf("go test -list built or started components:\n%s", out)
	}
}

// TestLogIsJSON checks that every line the server writes, from the flag
// values at start to the last line at exit, is one JSON object.
func TestLogIsJSON(t *testing.T) {
	parallel(t)
	e := env(t)
	s := e.startServer(t, serverConfig{})
	post(t, s, "/v2/allocate_k8s_token", extensionBody(t, "json-log.example.org", ""))
	send(http.MethodGet, s.URL+"/ready", nil)
	if err := s.Terminate(); err != nil {
		t.Fatal(err)
	}
	if err := s.Wait(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	lines, args := 0, 0
	sc := bufio.NewScanner(strings.NewReader(s.Log()))
	for sc.Scan() {
		lines++
		var l struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
		}
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil || l.Level == "" || l.Msg == "" {
			t.Errorf("log line %d is not a JSON log line: %q", lines, sc.Text())
		}
		if strings.HasPrefix(l.Msg, "Argument ") {
			args++
		}
	}
	if args == 0 || lines < args+2 {
		t.Errorf("%d lines, %d of them flagx's Argument lines; want the flags and the server's own lines", lines, args)
	}
}
