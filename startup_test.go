package main

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSetUp checks the set-up's refusals, each naming its cause, and that
// a good set-up passes the file found on as the kubeconfig of every run.
// Root's -run-as is tested end to end (e2e TestMLabUnit).
func TestSetUp(t *testing.T) {
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "admin.conf")
	if err := os.WriteFile(kubeconfig, []byte("apiVersion: v1\nkind: Config\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	unreadable := filepath.Join(dir, "unreadable.conf")
	if err := os.WriteFile(unreadable, nil, 0o000); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "kubectl"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBECONFIG", "")
	t.Setenv("HOME", dir)
	tests := []struct {
		name    string
		cfg     backendConfig
		runAs   string
		wantErr string // "" for none
	}{
		{name: "exec", cfg: backendConfig{Backend: "exec", Kubeconfig: kubeconfig, BinDir: bin}},
		{name: "api", cfg: backendConfig{Backend: "api", Kubeconfig: kubeconfig}},
		{name: "unknown backend", cfg: backendConfig{Backend: "kubeadm", Kubeconfig: kubeconfig}, wantErr: `-kube-backend "kubeadm"`},
		{name: "missing kubeconfig", cfg: backendConfig{Backend: "exec", Kubeconfig: filepath.Join(dir, "none.conf"), BinDir: bin}, wantErr: "none.conf"},
		{name: "no kubectl", cfg: backendConfig{Backend: "exec", Kubeconfig: kubeconfig, BinDir: dir}, wantErr: "must hold kubectl"},
		{name: "bad -run-as", cfg: backendConfig{Backend: "exec", Kubeconfig: kubeconfig, BinDir: bin}, runAs: "no such user:", wantErr: "no such user"},
	}
	if os.Geteuid() != 0 { // root reads any file
		tests = append(tests, struct {
			name    string
			cfg     backendConfig
			runAs   string
			wantErr string
		}{name: "unreadable kubeconfig", cfg: backendConfig{Backend: "exec", Kubeconfig: unreadable, BinDir: bin}, wantErr: "unreadable.conf"})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			dropped, err := setUp(&cfg, tc.runAs, slog.New(slog.NewTextHandler(io.Discard, nil)))
			defer dropped.Cleanup()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("setUp() error = %v", err)
				}
				if cfg.Kubeconfig != kubeconfig {
					t.Errorf("kubeconfig passed on = %q, want %q", cfg.Kubeconfig, kubeconfig)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("setUp() error = %v, want one naming %q", err, tc.wantErr)
			}
		})
	}
}

// TestCallerTrust checks the flags of caller trust: an empty
// -trusted-proxies trusts everyone with a warning; the identity check
// needs proxies and projects.
func TestCallerTrust(t *testing.T) {
	tests := []struct {
		name                       string
		proxies, audience, project string
		wantErr, wantWarn          bool
		wantVerifier               bool
	}{
		{name: "everyone trusted", wantWarn: true},
		{name: "proxies", proxies: "10.0.0.5/32"},
		{name: "bad proxies", proxies: "10.0.0.5/33", wantErr: true},
		{name: "identity without proxies", audience: "http://x:8800", project: "mlab-sandbox", wantErr: true, wantWarn: true},
		{name: "identity without projects", proxies: "10.0.0.5/32", audience: "http://x:8800", wantErr: true},
		{name: "identity", proxies: "10.0.0.5/32", audience: "http://x:8800", project: " mlab-sandbox, mlab-oti ", wantVerifier: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			_, v, err := callerTrust(tc.proxies, tc.audience, tc.project, slog.New(slog.NewTextHandler(&logs, nil)))
			if (err != nil) != tc.wantErr {
				t.Fatalf("callerTrust() error = %v, want error %t", err, tc.wantErr)
			}
			if warned := strings.Contains(logs.String(), "level=WARN"); warned != tc.wantWarn {
				t.Errorf("warned = %t, want %t; log:\n%s", warned, tc.wantWarn, logs.String())
			}
			if (v != nil) != tc.wantVerifier {
				t.Errorf("verifier = %v, want one: %t", v, tc.wantVerifier)
			}
		})
	}
}
