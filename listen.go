package main

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"

	"github.com/coreos/go-systemd/v22/activation"
)

// listen returns the sockets to serve on. When systemd passed sockets
// (socket activation: LISTEN_PID is this process, LISTEN_FDS counts them
// from fd 3, LISTEN_FDNAMES names them, as sd_listen_fds(3) defines), it
// serves those and ignores addresses: systemd holds the port open across
// restarts, and connections made while no process runs wait in the
// kernel's backlog. Otherwise it binds each of the comma-separated
// addresses, all before any is served, so that a busy port fails at start.
//
// The LISTEN_* variables are removed from the environment either way, so
// that kubeadm and kubectl never see them, and the passed descriptors are
// not inherited by them (close-on-exec).
func listen(addresses string, log *slog.Logger) ([]net.Listener, error) {
	if files := activation.Files(true); len(files) > 0 {
		return fromSystemd(files, addresses, log)
	}
	var listeners []net.Listener
	for _, addr := range strings.Split(addresses, ",") {
		ln, err := net.Listen("tcp", strings.TrimSpace(addr))
		if err != nil {
			closeAll(listeners)
			return nil, fmt.Errorf("listening on %s: %w", addr, err)
		}
		listeners = append(listeners, ln)
	}
	return listeners, nil
}

// fromSystemd turns the descriptors systemd passed into listeners; every
// one must be a listening stream socket.
func fromSystemd(files []*os.File, ignored string, log *slog.Logger) ([]net.Listener, error) {
	var (
		listeners []net.Listener
		names     []string
		addrs     []string
	)
	for i, f := range files {
		ln, err := net.FileListener(f)
		f.Close() // FileListener holds its own copy
		if err != nil {
			closeAll(listeners)
			return nil, fmt.Errorf("socket %q from systemd (fd %d) is not a listening stream socket: %w", f.Name(), 3+i, err)
		}
		listeners = append(listeners, ln)
		names = append(names, f.Name())
		addrs = append(addrs, ln.Addr().String())
	}
	log.Info("listening on sockets from systemd (socket activation); -listen-address is ignored",
		"names", names, "addresses", addrs, "ignored_listen_address", ignored)
	return listeners, nil
}

func closeAll(listeners []net.Listener) {
	for _, ln := range listeners {
		ln.Close()
	}
}
