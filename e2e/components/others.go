package components

import (
	"context"
	"fmt"
	"runtime"
	"time"
)

// PrometheusVersion is the Prometheus release whose promtool and server the
// tests run.
const PrometheusVersion = "v0.316.0"

// Prometheus returns the spec of promtool and the Prometheus server of
// module version version (v0.X.Y, the module's tag for Prometheus 3.X.Y).
func Prometheus(version string) Spec {
	return Spec{
		Name:    "prometheus",
		Version: version,
		Programs: map[string]string{
			"prometheus": "github.com/prometheus/prometheus/cmd/prometheus",
			"promtool":   "github.com/prometheus/prometheus/cmd/promtool",
		},
		Expect: 2 * time.Minute,
		Module: requireOne("github.com/prometheus/prometheus", version),
		// The tests scrape static targets: no cloud service discovery
		// (AWS, Azure, GCE, Kubernetes, …), which is most of the build.
		Tags: []string{"remove_all_sd"},
		// Without optimisation or inlining: the tests scrape one target
		// and evaluate a few rules, so speed of compiling is what counts
		// (203 s of CPU instead of 321 s on 2 cores, 2026-11-26).
		GCFlags: "all=-N -l",
	}
}

// EPoxyVersion is the release of M-Lab's ePoxy boot server the tests run.
const EPoxyVersion = "v1.2.5"

// EPoxy returns the spec of M-Lab's ePoxy boot server and its admin tool
// at version.
func EPoxy(version string) Spec {
	return Spec{
		Name:    "epoxy",
		Version: version,
		Programs: map[string]string{
			"epoxy_boot_server": "github.com/m-lab/epoxy/cmd/epoxy_boot_server",
			"epoxy_admin":       "github.com/m-lab/epoxy/cmd/epoxy_admin",
		},
		Expect: 1 * time.Minute,
		Module: requireOne("github.com/m-lab/epoxy", version),
	}
}

// StaticcheckVersion is the release of honnef.co/go/tools whose staticcheck
// `make lint` runs.
const StaticcheckVersion = "v0.8.2"

// Staticcheck returns the spec of staticcheck from honnef.co/go/tools at
// version. It type-checks with the go/types of the Go it was built with, and
// a staticcheck built by an older Go cannot read code that needs a newer
// one: the cache folder names the Go release too (v0.8.2-go1.26.8), so that
// each Go release builds its own.
func Staticcheck(version string) Spec {
	return Spec{
		Name:    "staticcheck",
		Version: version + "-" + runtime.Version(),
		Programs: map[string]string{
			"staticcheck": "honnef.co/go/tools/cmd/staticcheck",
		},
		Expect: 1 * time.Minute,
		Module: requireOne("honnef.co/go/tools", version),
	}
}

// requireOne returns a Module function for a throwaway module that requires
// module at version and nothing else; go mod tidy adds the rest.
func requireOne(module, version string) func(context.Context, string) (string, error) {
	return func(context.Context, string) (string, error) {
		return fmt.Sprintf("module components/build\n\ngo 1.26\n\nrequire %s %s\n", module, version), nil
	}
}
