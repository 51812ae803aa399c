//go:build unix && !linux

package command

import "syscall"

// sysProcAttr puts a child in its own process group, so that a deadline kills
// everything it started.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
