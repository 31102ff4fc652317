//go:build !unix

package devstack

// nofile is unknown off Unix.
func nofile() uint64 { return 0 }
