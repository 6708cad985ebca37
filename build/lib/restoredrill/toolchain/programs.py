"""Go source of the small programs restoredrill builds itself.

pause: the sandbox's first process. Kubernetes' own pause is C; this does the same job (hold the
pod's namespaces, reap orphans when it is PID 1, exit on SIGINT/SIGTERM) in a static Go binary,
which needs no C toolchain and no registry.
"""

from __future__ import annotations

PAUSE_SOURCE = """\
// Command pause holds a pod's namespaces open until it is told to stop (built by restoredrill).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	children := make(chan os.Signal, 8)
	signal.Notify(children, syscall.SIGCHLD)
	for {
		select {
		case <-stop:
			os.Exit(0)
		case <-children:
			for {
				var status syscall.WaitStatus
				pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
		}
	}
}
"""

PROGRAM_SOURCES: dict[str, str] = {"pause": PAUSE_SOURCE}
