// Command pause is the sandbox ("pause") process of the cluster testbed's
// pods: it holds the pod's namespaces, sleeps until SIGINT or SIGTERM (then
// exits 0) and reaps the zombies of processes that end up parented to it.
// Built by testbed/cluster/build; packed into testbed/pause:3.10 by
// testbed/cluster/up. (registry.k8s.io is unreachable from the testbed.)
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
