// Command ping runs `ping 127.0.0.1` as a tjob job with limits, prints its
// output live for a few seconds, stops it, and prints the final status.
// Run it as root: go run ./examples/ping
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"time"

	"github.com/neildo/tjob"
)

func main() {
	if _, err := exec.LookPath("ping"); err != nil {
		fmt.Fprintln(os.Stderr, "ping is not installed: apt-get install iputils-ping")
		os.Exit(1)
	}
	job := tjob.NewJob("ping", "127.0.0.1")
	job.CPUPercent = 20
	job.MemoryMB = 20
	defer job.Close()

	done := job.Run() // starts the job, does not wait

	// Stop it in a few seconds.
	go func() {
		time.Sleep(3 * time.Second)
		if err := job.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}()

	// Follow the output live, from the first byte, in this goroutine: the
	// reader gives io.EOF only once the job has ended and all it wrote has
	// been read, so nothing of the end is lost, however slow stdout is.
	out, err := job.Output(context.Background(), true)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if _, err := io.Copy(os.Stdout, out); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	out.Close()

	st := <-done // already there: the output ended after it
	fmt.Printf("\n%s after %.1fs: %s (CPU %v, peak memory %d KiB)\n",
		st.Cmd, st.Elapsed, st, st.Usage.CPU, st.Usage.MemoryPeak>>10)
	if st.Error != nil {
		fmt.Fprintln(os.Stderr, st.Error)
		os.Exit(1)
	}
}
