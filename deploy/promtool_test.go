package deploy_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/m-lab/epoxy-extensions/e2e/components"
)

var (
	promtoolOnce sync.Once
	promtoolPath string
	promtoolErr  error
)

// promtool returns the path of promtool, building it the first time on this
// machine. It skips only with -short; any other failure fails the test.
func promtool(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: promtool comes from a build of several minutes the first time")
	}
	promtoolOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		defer cancel()
		var dir string
		dir, promtoolErr = components.Ensure(ctx, components.Prometheus(components.PrometheusVersion), os.Stderr)
		promtoolPath = filepath.Join(dir, "promtool")
	})
	if promtoolErr != nil {
		t.Fatalf("promtool: %v", promtoolErr)
	}
	return promtoolPath
}

// runPromtool runs promtool with args in dir and fails the test, with its
// output, unless it exits 0.
func runPromtool(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command(promtool(t), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestPromtoolCheckRules checks the rule files with promtool's linter, whose
// findings are fatal.
func TestPromtoolCheckRules(t *testing.T) {
	for _, file := range []string{"rules.yml", "alerts.yml"} {
		t.Run(file, func(t *testing.T) {
			runPromtool(t, "prometheus", "check", "rules", "--lint=all", "--lint-fatal", file)
		})
	}
}

// TestPromtoolTestRules runs the unit tests of every recording rule and
// alert.
func TestPromtoolTestRules(t *testing.T) {
	for _, file := range []string{"rules_test.yml", "alerts_test.yml"} {
		t.Run(file, func(t *testing.T) {
			runPromtool(t, "prometheus", "test", "rules", file)
		})
	}
}
