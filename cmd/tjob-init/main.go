//go:build linux

// Command tjob-init is the init of tjob's jobs, as a program of its own: the
// code of internal/jobinit and nothing else, so that it starts in a
// fraction of the time the program that runs the jobs takes (a server with
// gRPC initialises much more). The tjob library runs it in place of
// re-executing its own program when it finds it: Job.InitPath, or a
// tjob-init beside the running program. It is not for people to run.
//
// Build it static and put it beside tjobs, as hack/demo.sh does:
// CGO_ENABLED=0 go build -o bin/tjob-init ./cmd/tjob-init
package main

import (
	"fmt"
	"os"

	"github.com/neildo/tjob/internal/jobinit"
)

func main() {
	if !jobinit.IsInit() {
		fmt.Fprintln(os.Stderr, "tjob-init: the init of tjob's jobs, which the tjob library starts; it is not for running by hand")
		os.Exit(2)
	}
	os.Exit(jobinit.Main())
}
