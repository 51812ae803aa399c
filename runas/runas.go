// Package runas lets a server started as root (as M-Lab's systemd unit
// starts the container) give up root once it has read what only root may
// read: the kubeconfig is copied, with every file it refers to embedded, into
// a new folder only the unprivileged user can read, and the process then
// becomes that user for good. kubeadm and kubectl, started later, run as that
// user too and are given the copy.
package runas

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// User is a numeric user and group to run as.
type User struct {
	UID, GID int
}

// String returns "uid:gid".
func (u User) String() string { return fmt.Sprintf("%d:%d", u.UID, u.GID) }

// Parse reads "uid:gid", "uid" (the group then is the same number), or
// user and group names known to this system's user database.
func Parse(s string) (User, error) {
	name, group, hasGroup := strings.Cut(s, ":")
	uid, err := id(name, func(n string) (string, error) {
		u, err := user.Lookup(n)
		if err != nil {
			return "", err
		}
		if !hasGroup {
			group = u.Gid
		}
		return u.Uid, nil
	})
	if err != nil {
		return User{}, fmt.Errorf("-run-as %q: user: %w", s, err)
	}
	if group == "" {
		group = strconv.Itoa(uid)
	}
	gid, err := id(group, func(n string) (string, error) {
		g, err := user.LookupGroup(n)
		if err != nil {
			return "", err
		}
		return g.Gid, nil
	})
	if err != nil {
		return User{}, fmt.Errorf("-run-as %q: group: %w", s, err)
	}
	if uid == 0 || gid == 0 {
		return User{}, fmt.Errorf("-run-as %q: that is root", s)
	}
	return User{uid, gid}, nil
}

// id returns s as a number, or what lookup says of the name s.
func id(s string, lookup func(string) (string, error)) (int, error) {
	if s == "" {
		return 0, errors.New("empty")
	}
	if n, err := strconv.Atoi(s); err == nil {
		if n < 0 {
			return 0, fmt.Errorf("%d is negative", n)
		}
		return n, nil
	}
	v, err := lookup(s)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(v)
}

// Dropped is what Drop did.
type Dropped struct {
	// Dir is the private folder holding the kubeconfig copy; empty when Drop
	// had nothing to do. It is also the HOME of kubeadm and kubectl, whose
	// caches land there.
	Dir string
	// Kubeconfig is the copy's path; empty when no kubeconfig was given or
	// Drop had nothing to do.
	Kubeconfig string
}

// Cleanup removes the private folder.
func (d Dropped) Cleanup() error {
	if d.Dir == "" {
		return nil
	}
	return os.RemoveAll(d.Dir)
}

// Drop makes this process run as u, for good: supplementary groups cleared,
// then group, then user, on every thread. Before that, when kubeconfig is not
// nil, it writes it (mode 0600) into a new folder (mode 0700) that u owns.
// A process that already runs as u has nothing to do; any other non-root
// process cannot become u, which is an error.
func Drop(u User, kubeconfig []byte) (Dropped, error) {
	if os.Geteuid() != 0 {
		if os.Getuid() == u.UID && os.Geteuid() == u.UID && os.Getegid() == u.GID {
			return Dropped{}, nil
		}
		return Dropped{}, fmt.Errorf("-run-as %s needs the server to start as root; it runs as uid %d, gid %d", u, os.Geteuid(), os.Getegid())
	}
	dir, err := os.MkdirTemp("", "epoxy-extensions-")
	if err != nil {
		return Dropped{}, fmt.Errorf("private folder for %s: %w", u, err)
	}
	d := Dropped{Dir: dir}
	if err := d.handOver(u, kubeconfig); err != nil {
		os.RemoveAll(dir)
		return Dropped{}, err
	}
	if err := become(u); err != nil {
		os.RemoveAll(dir)
		return Dropped{}, err
	}
	return d, nil
}

// handOver gives d.Dir to u and writes kubeconfig into it.
func (d *Dropped) handOver(u User, kubeconfig []byte) error {
	if err := os.Chown(d.Dir, u.UID, u.GID); err != nil {
		return fmt.Errorf("private folder for %s: %w", u, err)
	}
	if kubeconfig == nil {
		return nil
	}
	path := filepath.Join(d.Dir, "kubeconfig")
	if err := os.WriteFile(path, kubeconfig, 0o600); err != nil {
		return fmt.Errorf("kubeconfig copy for %s: %w", u, err)
	}
	if err := os.Chown(path, u.UID, u.GID); err != nil {
		return fmt.Errorf("kubeconfig copy for %s: %w", u, err)
	}
	d.Kubeconfig = path
	return nil
}

// become switches every thread of the process to u, and checks that root
// cannot be had back.
func become(u User) error {
	if err := syscall.Setgroups(nil); err != nil {
		return fmt.Errorf("clearing supplementary groups: %w", err)
	}
	if err := syscall.Setgid(u.GID); err != nil {
		return fmt.Errorf("setgid %d: %w", u.GID, err)
	}
	if err := syscall.Setuid(u.UID); err != nil {
		return fmt.Errorf("setuid %d: %w", u.UID, err)
	}
	if syscall.Setuid(0) == nil {
		return errors.New("root could be regained after dropping it")
	}
	if os.Geteuid() != u.UID || os.Getegid() != u.GID {
		return fmt.Errorf("still uid %d, gid %d after dropping to %s", os.Geteuid(), os.Getegid(), u)
	}
	return nil
}
