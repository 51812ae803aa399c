package command

import "syscall"

// sysProcAttr puts a child in its own process group, so that a deadline kills
// everything it started, and has the kernel kill it if the server dies, so a
// crashed server leaves no kubeadm retrying against the API for a minute.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
