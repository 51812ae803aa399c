package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/m-lab/epoxy-extensions/e2e/components"
)

// Emulator is a Cloud Datastore emulator on loopback, in memory, strongly
// consistent. It can be stopped and started again on the same port, so that
// clients pointed at it reconnect; its data does not survive a restart.
type Emulator struct {
	// Host is "127.0.0.1:PORT", the value of DATASTORE_EMULATOR_HOST.
	Host string

	log  string
	mu   sync.Mutex
	proc *Process
}

// StartEmulator starts the emulator on a free port, logging to logPath.
func StartEmulator(logPath string) (*Emulator, error) {
	if err := components.Check(components.Emulator, components.Java); err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	e := &Emulator{Host: "127.0.0.1:" + strconv.Itoa(port), log: logPath}
	if err := e.Start(); err != nil {
		return nil, err
	}
	return e, nil
}

// Start starts the emulator (again) on its port and waits until it answers.
func (e *Emulator) Start() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.proc != nil {
		return errors.New("datastore emulator already running")
	}
	logFile, err := os.OpenFile(e.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close()
	// The launcher script runs "$JAVA -cp … CloudDatastore ARGS" as a child.
	// With JAVA="exec java" the script becomes java instead, so the JVM is
	// our direct child and dies with the test process (Pdeathsig) even if
	// cleanup never runs. -XX:-UsePerfData keeps the JVM from writing
	// /tmp/hsperfdata_<user>, which would outlive the stack.
	java := os.Getenv("JAVA")
	if java == "" {
		java = "java"
	}
	host, port, err := net.SplitHostPort(e.Host)
	if err != nil {
		return err
	}
	e.proc, err = StartProcess("datastore emulator", logFile, []string{"JAVA=exec " + java + " -XX:-UsePerfData"}, components.Emulator.Path,
		"start", "--host="+host, "--port="+port, "--store_on_disk=false", "--consistency=1.0")
	if err != nil {
		return err
	}
	err = Poll(90*time.Second, 250*time.Millisecond, e.proc, func(ctx context.Context) error {
		return httpOK(ctx, http.DefaultClient, "http://"+e.Host+"/", "Ok")
	})
	if err != nil {
		e.proc.Stop(10 * time.Second)
		e.proc = nil
		return fmt.Errorf("datastore emulator: %w\n%s", err, Tail(e.log, 30))
	}
	return nil
}

// Running reports whether it was started and not stopped since.
func (e *Emulator) Running() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.proc != nil
}

// Stop stops the emulator; it can be started again with Start.
func (e *Emulator) Stop() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.proc != nil {
		e.proc.Stop(10 * time.Second)
		e.proc = nil
	}
}
