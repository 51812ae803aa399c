package main

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestListenBindsAddresses(t *testing.T) {
	tests := []struct {
		name      string
		addresses string
		want      int // listeners; 0 means an error
	}{
		{"one", "127.0.0.1:0", 1},
		{"two, with spaces", "127.0.0.1:0, 127.0.0.1:0", 2},
		{"bad second address", "127.0.0.1:0,127.0.0.1:notaport", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("LISTEN_FDS", "") // no socket activation
			lns, err := listen(tc.addresses, slog.New(slog.DiscardHandler))
			if tc.want == 0 {
				if err == nil {
					closeAll(lns)
					t.Fatalf("listen(%q) = %d listeners, want an error", tc.addresses, len(lns))
				}
				return
			}
			if err != nil {
				t.Fatalf("listen(%q): %v", tc.addresses, err)
			}
			defer closeAll(lns)
			if len(lns) != tc.want {
				t.Errorf("listen(%q) = %d listeners, want %d", tc.addresses, len(lns), tc.want)
			}
		})
	}
}

// helperEnv marks the test binary run as a socket-activated child by
// TestListenSocketActivation.
const helperEnv = "EPOXY_EXTENSIONS_LISTEN_HELPER"

// heldEnv tells the child the address of the socket the parent holds.
const heldEnv = "EPOXY_EXTENSIONS_LISTEN_HELD"

// TestListenSocketActivation starts this test binary as systemd would
// start the server: a listening socket as fd 3, LISTEN_FDS=1,
// LISTEN_FDNAMES, and LISTEN_PID set by a shell to its own pid, which exec
// keeps. The child serves on the socket it was given (not on
// -listen-address), and removes the variables from its environment. With
// LISTEN_PID naming another process, the socket is not the child's and it
// binds its address instead.
func TestListenSocketActivation(t *testing.T) {
	tests := []struct {
		name        string
		pid         string // shell code for LISTEN_PID
		fromSystemd bool
	}{
		{"LISTEN_PID is the server", "$$", true},
		{"LISTEN_PID is another process", "1", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			f, err := ln.(*net.TCPListener).File()
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			cmd := exec.Command("sh", "-c", `LISTEN_PID=`+tc.pid+` exec "$0" "$@"`,
				os.Args[0], "-test.run=^TestListenHelper$")
			cmd.Env = append(os.Environ(), helperEnv+"=1", heldEnv+"="+ln.Addr().String(), "LISTEN_FDS=1", "LISTEN_FDNAMES=http")
			cmd.ExtraFiles = []*os.File{f} // fd 3
			var out bytes.Buffer
			cmd.Stdout = &out
			cmd.Stderr = &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// The child answers on whichever socket it serves.
			if tc.fromSystemd {
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(c)
				c.Close()
				if got := string(b); got != "served" {
					t.Errorf("the socket held for the child answered %q, want served", got)
				}
			}
			if err := cmd.Wait(); err != nil {
				t.Fatalf("child: %v\n%s", err, out.String())
			}
			log := out.String()
			if got := strings.Contains(log, "listening on sockets from systemd"); got != tc.fromSystemd {
				t.Errorf("child logged socket activation: %v, want %v\n%s", got, tc.fromSystemd, log)
			}
			if tc.fromSystemd && !strings.Contains(log, `"names":["http"]`) {
				t.Errorf("child did not log the socket's name http:\n%s", log)
			}
			if !strings.Contains(log, "environment: LISTEN_PID= LISTEN_FDS= LISTEN_FDNAMES=\n") {
				t.Errorf("child kept LISTEN_* in its environment:\n%s", log)
			}
		})
	}
}

// TestListenHelper is the child of TestListenSocketActivation: it listens
// as the server does, prints what remains of LISTEN_* in its environment,
// and answers one connection when it serves the socket the parent holds.
func TestListenHelper(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		t.Skip("run by TestListenSocketActivation")
	}
	log := slog.New(slog.NewJSONHandler(os.Stdout, nil))
	lns, err := listen("127.0.0.1:0", log)
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll(lns)
	fmt.Printf("environment: LISTEN_PID=%s LISTEN_FDS=%s LISTEN_FDNAMES=%s\n",
		os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_FDNAMES"))
	if len(lns) != 1 {
		t.Fatalf("%d listeners, want 1", len(lns))
	}
	if lns[0].Addr().String() != os.Getenv(heldEnv) {
		return // it bound its own port
	}
	c, err := lns[0].Accept()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "served")
	c.Close()
}
