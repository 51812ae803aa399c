package deploy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

const (
	unitFile   = "systemd/epoxy-extension-server.service"
	socketFile = "systemd/epoxy-extension-server.socket"
	envFile    = "systemd/epoxy-extension-server.env"
)

// serverFlags returns the names of the server's flags, read from its
// source: the unit and the environment file may only set those.
func serverFlags(t *testing.T) []string {
	t.Helper()
	re := regexp.MustCompile(`flag\.(?:String|Int|Duration|Bool|Float64)\("([a-z0-9-]+)"`)
	var names []string
	for _, f := range []string{"../main.go", "../backends.go"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			names = append(names, m[1])
		}
	}
	if len(names) < 10 {
		t.Fatalf("found only flags %q in main.go and backends.go", names)
	}
	return names
}

// unitSettings returns the service unit's Key=value lines, in order.
func unitSettings(t *testing.T) [][2]string {
	t.Helper()
	return settingsOf(t, unitFile)
}

// settingsOf returns the Key=value lines of a unit file, in order.
func settingsOf(t *testing.T, file string) [][2]string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out [][2]string
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			out = append(out, [2]string{k, v})
		}
	}
	return out
}

// TestUnitEnvironmentNamesFlags checks that every variable the unit and the
// example environment file set is a server flag as flagx spells it
// (-bin-dir is BIN_DIR), so that none is silently ignored.
func TestUnitEnvironmentNamesFlags(t *testing.T) {
	var flags []string
	for _, f := range serverFlags(t) {
		flags = append(flags, strings.ToUpper(strings.ReplaceAll(f, "-", "_")))
	}
	notFlags := []string{"HOME"} // for kubectl's cache
	var vars []string
	for _, kv := range unitSettings(t) {
		if kv[0] == "Environment" {
			for _, f := range strings.Fields(kv[1]) {
				name, _, _ := strings.Cut(f, "=")
				vars = append(vars, name)
			}
		}
	}
	b, err := os.ReadFile(envFile)
	if err != nil {
		t.Fatal(err)
	}
	assignment := regexp.MustCompile(`(?m)^#?([A-Z][A-Z0-9_]*)=`)
	for _, m := range assignment.FindAllStringSubmatch(string(b), -1) {
		vars = append(vars, m[1])
	}
	for _, v := range vars {
		if !slices.Contains(flags, v) && !slices.Contains(notFlags, v) {
			t.Errorf("%s is set but no flag reads it (flags: %q)", v, flags)
		}
	}
	for _, want := range []string{"LISTEN_ADDRESS", "BIN_DIR", "KUBECONFIG"} {
		if !slices.Contains(vars, want) {
			t.Errorf("the unit does not set %s", want)
		}
	}
}

// TestUnitHardening checks the settings the unit must keep.
func TestUnitHardening(t *testing.T) {
	settings := unitSettings(t)
	value := func(key string) string {
		v := ""
		for _, kv := range settings {
			if kv[0] == key {
				v = kv[1]
			}
		}
		return v
	}
	tests := []struct{ key, want string }{
		{"NoNewPrivileges", "yes"},
		{"ProtectSystem", "strict"},
		{"ProtectHome", "yes"},
		{"PrivateTmp", "yes"},
		{"PrivateDevices", "yes"},
		{"DynamicUser", "yes"},
		{"CapabilityBoundingSet", ""},
		{"Restart", "on-failure"},
		{"EnvironmentFile", "-/etc/default/epoxy-extension-server"},
		{"LoadCredential", "admin.conf:/etc/kubernetes/admin.conf"},
		// SIGTERM to the server alone, so that the kubeadm runs it drains
		// are not killed under it.
		{"KillMode", "mixed"},
	}
	for _, tc := range tests {
		t.Run(tc.key, func(t *testing.T) {
			if got := value(tc.key); got != tc.want {
				t.Errorf("%s=%q, want %q", tc.key, got, tc.want)
			}
		})
	}
	t.Run("TimeoutStopSec", func(t *testing.T) {
		got, err := time.ParseDuration(value("TimeoutStopSec"))
		if err != nil {
			t.Fatal(err)
		}
		// The server serves for -shutdown-delay (15s), then drains for
		// -backend-timeout + 5s by default.
		if stop := 15*time.Second + 3*time.Minute + 5*time.Second; got <= stop {
			t.Errorf("TimeoutStopSec=%s, want more than the default delay and drain, %s", got, stop)
		}
	})
}

// TestSocketUnit checks that port 8800 belongs to the socket unit, which
// the service requires: systemd then holds the port open across restarts.
func TestSocketUnit(t *testing.T) {
	value := func(settings [][2]string, key string) string {
		v := ""
		for _, kv := range settings {
			if kv[0] == key {
				v = kv[1]
			}
		}
		return v
	}
	socket, service := settingsOf(t, socketFile), unitSettings(t)
	tests := []struct {
		unit     string
		settings [][2]string
		key      string
		want     string
	}{
		{socketFile, socket, "ListenStream", "8800"},
		{socketFile, socket, "Accept", "no"},
		{socketFile, socket, "FileDescriptorName", "http"},
		{socketFile, socket, "WantedBy", "sockets.target"},
		{unitFile, service, "Requires", "epoxy-extension-server.socket"},
	}
	for _, tc := range tests {
		if got := value(tc.settings, tc.key); got != tc.want {
			t.Errorf("%s: %s=%q, want %q", tc.unit, tc.key, got, tc.want)
		}
	}
	if after := value(service, "After"); !strings.Contains(after, "epoxy-extension-server.socket") {
		t.Errorf("%s: After=%q, want it to name the socket", unitFile, after)
	}
}

// TestUnitVerifies runs systemd-analyze verify on the service and socket
// units together, and the service's offline security review, when the
// machine has systemd-analyze. verify wants ExecStart's program to exist:
// the copy it checks points at a stand-in, and is otherwise the unit as
// shipped; the socket is checked as shipped, beside it.
func TestUnitVerifies(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("no systemd-analyze on this machine: the unit's syntax was not verified")
		return
	}
	dir := t.TempDir()
	standIn := filepath.Join(dir, "epoxy-extensions")
	if err := os.WriteFile(standIn, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	unit := strings.Replace(string(b), "ExecStart=/usr/local/bin/epoxy-extensions", "ExecStart="+standIn, 1)
	path := filepath.Join(dir, filepath.Base(unitFile))
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	socket, err := os.ReadFile(socketFile)
	if err != nil {
		t.Fatal(err)
	}
	socketPath := filepath.Join(dir, filepath.Base(socketFile))
	if err := os.WriteFile(socketPath, socket, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"verify", socketPath, path},
		// Exposure 0 is fully locked down, 10 not at all; the unit scores
		// about 1.6; --threshold counts in tenths (20 is 2.0).
		{"security", "--offline=true", "--threshold=20", path},
	} {
		out, err := exec.Command(analyze, args...).CombinedOutput()
		if err != nil || strings.Contains(string(out), path+":") || strings.Contains(string(out), socketPath+":") {
			t.Errorf("systemd-analyze %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
