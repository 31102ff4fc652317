package redistest

import "syscall"

// sysProcAttr puts redis-server in a process group of its own, so Kill reaches any child, and
// has the kernel kill it if the test binary dies without running its clean-ups (a panic or
// the -timeout alarm).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
