//go:build !(linux || darwin || dragonfly || freebsd || netbsd || openbsd || solaris || illumos)

package redisguard

import "syscall"

// peek reports false: here the guard cannot look into a socket without
// reading it, and judges a node by its replies alone (unread.go).
func peek(syscall.Conn) bool { return false }
