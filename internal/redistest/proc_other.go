//go:build unix && !linux

package redistest

import "syscall"

// sysProcAttr puts redis-server in a process group of its own, so Kill reaches any child.
// Without Pdeathsig, a test binary that dies without running its clean-ups leaves it running.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
