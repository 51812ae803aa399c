package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRun drives the whole command against a fake server, with a fake
// kubectl printing the Secrets that server created.
func TestRun(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("needs /bin/sh")
	}
	tests := []struct {
		name       string
		secretHost map[string]string
		shared     string
		extra      []string
		wantCode   int
		wantOK     int
		wantCross  int
		wantDup    int
	}{
		{name: "clean", wantCode: exitPass, wantOK: 20},
		{
			name:       "crossing",
			secretHost: map[string]string{"load-00001.example.org": "load-00002.example.org"},
			wantCode:   exitFail, wantOK: 20, wantCross: 1,
		},
		{name: "duplicate", shared: tokA, wantCode: exitFail, wantOK: 20, wantCross: 19, wantDup: 1},
		{name: "404 alone passes", extra: []string{"-endpoint", "/nowhere"}, wantCode: exitPass},
		{name: "404 fails with -require-ok", extra: []string{"-endpoint", "/nowhere", "-require-ok"}, wantCode: exitFail},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			fake := &fakeServer{secretHost: tt.secretHost, shared: tt.shared, listFile: filepath.Join(dir, "out")}
			// The list exists even when no token request gets through.
			if err := os.WriteFile(fake.listFile, []byte(`{"items":[]}`), 0o644); err != nil {
				t.Fatal(err)
			}
			mux := http.NewServeMux()
			mux.Handle("/v2/allocate_k8s_token", fake)
			srv := httptest.NewServer(mux)
			defer srv.Close()

			args := append([]string{"-url", srv.URL + "/", "-n", "20", "-json",
				"-kubectl", fakeKubectl(t, dir), "-kubeconfig", "/k.conf"}, tt.extra...)
			var stdout, stderr bytes.Buffer
			code := run(args, &stdout, &stderr)
			if code != tt.wantCode {
				t.Errorf("run(%q) = %d, want %d; stdout %s stderr %s", args, code, tt.wantCode, &stdout, &stderr)
			}
			var s Summary
			if err := json.Unmarshal(stdout.Bytes(), &s); err != nil {
				t.Fatalf("stdout is not one JSON summary: %v: %s", err, &stdout)
			}
			if s.Secrets == nil {
				t.Fatalf("summary has no secret check: %s", &stdout)
			}
			if s.OK != tt.wantOK || s.Secrets.Crossing != tt.wantCross || s.DuplicatedTokens != tt.wantDup {
				t.Errorf("OK %d, crossing %d, duplicated %d; want %d, %d, %d", s.OK, s.Secrets.Crossing, s.DuplicatedTokens, tt.wantOK, tt.wantCross, tt.wantDup)
			}
			if s.Pass != (tt.wantCode == exitPass) {
				t.Errorf("Pass = %v with exit %d", s.Pass, code)
			}
		})
	}
}

func TestRunBadFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want int
	}{
		{"help", []string{"-h"}, exitPass},
		{"unknown flag", []string{"-bogus"}, exitUsage},
		{"positional", []string{"extra"}, exitUsage},
		{"bad url", []string{"-url", "127.0.0.1:8800"}, exitUsage},
		{"bad endpoint", []string{"-endpoint", "v2/allocate_k8s_token"}, exitUsage},
		{"zero machines", []string{"-n", "0"}, exitUsage},
		{"zero timeout", []string{"-timeout", "0s"}, exitUsage},
		{"kubectl alone", []string{"-kubectl", "kubectl"}, exitUsage},
		{"kubeconfig alone", []string{"-kubeconfig", "/k.conf"}, exitUsage},
		{"host format without index", []string{"-host-format", "same.example.org", "-n", "2"}, exitUsage},
		{"no such pid", []string{"-server-pid", "999999999"}, exitUsage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if got := run(tt.args, &stdout, &stderr); got != tt.want {
				t.Errorf("run(%q) = %d, want %d; stderr %s", tt.args, got, tt.want, &stderr)
			}
			if tt.want == exitUsage && stderr.Len() == 0 {
				t.Errorf("run(%q) printed no reason", tt.args)
			}
		})
	}
}

func TestHumanReport(t *testing.T) {
	peak, rss := 4, 23.5
	s := Summary{
		URL: "http://x/v2/allocate_k8s_token", Machines: 2, Statuses: map[string]int{"200": 2},
		OK: 2, DistinctTokens: 1, DuplicatedTokens: 1, DuplicateExamples: []string{"token id aaaaaa went to h0, h1"},
		PeakProcesses: &peak, ServerPeakRSSMiB: &rss, Failures: []string{"1 token(s) handed to more than one host"},
	}
	var b bytes.Buffer
	if err := printHuman(&b, s); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"statuses", "200=2", "duplicated tokens", "23.5 MiB", "not checked", "token id aaaaaa went to h0, h1", "FAIL: 1 token(s)"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, &b)
		}
	}
}
