// Command prepare checks that the machine has the programs the image should
// ship for the tests and the local stack, each missing one named with its
// Debian package and path in one line, then builds the named components from
// the Go module proxy into the cache (once per version, side by side) and
// prints their folders. `make test` and `make run` run it first, so that a missing
// prerequisite shows before any minutes of work. `make lint` runs it with
// -check=false for staticcheck alone.
//
//	go run ./e2e/prepare [-race] [-check=false] [kubernetes] [prometheus] [epoxy] [staticcheck]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/m-lab/epoxy-extensions/e2e/components"
)

var (
	race  = flag.Bool("race", false, "Also check for a C compiler, which go test -race needs.")
	check = flag.Bool("check", true, "Check for the image's programs before building; false builds the components alone.")
)

func main() {
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: %s [-race] [-check=false] [kubernetes|prometheus|epoxy|staticcheck]...\n", os.Args[0])
		flag.PrintDefaults()
	}
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, flag.Args()); err != nil {
		fmt.Fprintf(os.Stderr, "prepare: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, names []string) error {
	prereqs := []components.Prereq{components.Emulator, components.Java, components.Kubectl, components.Unshare, components.Curl}
	if *race {
		prereqs = append(prereqs, components.CC)
	}
	if *check {
		if err := components.Check(prereqs...); err != nil {
			return fmt.Errorf("the machine lacks what the image should ship:\n%w", err)
		}
	}
	specs := map[string]components.Spec{
		"kubernetes":  components.Kubernetes(components.KubernetesVersion),
		"prometheus":  components.Prometheus(components.PrometheusVersion),
		"epoxy":       components.EPoxy(components.EPoxyVersion),
		"staticcheck": components.Staticcheck(components.StaticcheckVersion),
	}
	// The builds run side by side: each alone leaves a core idle while it
	// links or downloads.
	dirs := make([]string, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		spec, ok := specs[name]
		if !ok {
			return fmt.Errorf("unknown component %q", name)
		}
		wg.Go(func() { dirs[i], errs[i] = components.Ensure(ctx, spec, os.Stderr) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, dir := range dirs {
		fmt.Println(dir)
	}
	return nil
}
