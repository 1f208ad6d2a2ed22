package main

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	units "github.com/docker/go-units"
)

// The values of tjob's options that are more than a string or a switch.
// Each checks what it is given when the command line is parsed, so that a
// wrong one is a usage error (exit 2), before anything reaches the server.

// sizeFlag is a number of bytes written as Docker writes them: 512k, 64m,
// 1.5g (powers of 1024, as `docker run --memory`). Zero leaves the limit to
// the server.
type sizeFlag int64

func (f *sizeFlag) String() string { return strconv.FormatInt(int64(*f), 10) }

func (f *sizeFlag) Set(s string) error {
	n, err := units.RAMInBytes(s)
	if err != nil || n < 0 {
		return errors.New("not a size such as 512k, 64m or 1g")
	}
	*f = sizeFlag(n)
	return nil
}

// mebibytes is the size in MiB, rounded up: 1 byte asks for 1 MiB, not for
// the server's default.
func (f sizeFlag) mebibytes() int64 {
	const mib = 1 << 20
	return int64(f)/mib + min(int64(f)%mib, 1)
}

// cpusFlag is CPUs as `docker run --cpus` takes them, 0.5 for half of one,
// kept as the API's percent of one CPU.
type cpusFlag int32

func (f *cpusFlag) String() string { return strconv.FormatFloat(float64(*f)/100, 'f', -1, 64) }

func (f *cpusFlag) Set(s string) error {
	cpus, err := strconv.ParseFloat(s, 64)
	switch {
	case err != nil || math.IsNaN(cpus) || cpus < 0:
		return errors.New("not a number of CPUs such as 0.5 or 2")
	case cpus*100 > math.MaxInt32:
		return errors.New("more CPUs than any machine has")
	case cpus > 0 && math.Round(cpus*100) < 1:
		// It would be sent as 0, which asks for the server's default.
		return errors.New("less than 0.01, a hundredth of a CPU")
	}
	*f = cpusFlag(math.Round(cpus * 100))
	return nil
}

// countFlag is a count that may not be negative, such as --pids-limit.
// Zero leaves the limit to the server.
type countFlag int32

func (f *countFlag) String() string { return strconv.Itoa(int(*f)) }

func (f *countFlag) Set(s string) error {
	n, err := strconv.ParseInt(s, 10, 32)
	if err != nil || n < 0 {
		return errors.New("not a whole number, 0 or more")
	}
	*f = countFlag(n)
	return nil
}

// graceFlag is the time between SIGTERM and SIGKILL: seconds, as Docker's
// --stop-timeout and stop -t take it, or a duration such as 1m30s. It
// remembers whether it was given: an unset grace period is the server's
// (or the job's) choice, while zero asks for none.
type graceFlag struct {
	d   time.Duration
	set bool
}

func (f *graceFlag) String() string { return f.d.String() }

func (f *graceFlag) Set(s string) error {
	d, err := parseGrace(s)
	if err != nil {
		return err
	}
	f.d, f.set = d, true
	return nil
}

func parseGrace(s string) (time.Duration, error) {
	secs, err := strconv.ParseUint(s, 10, 32)
	if err == nil {
		return time.Duration(secs) * time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, errors.New("not seconds (30) or a duration (1m30s)")
	}
	return d, nil
}

// listFlag is an option that may be given many times: -e, --env-file.
type listFlag []string

func (f *listFlag) String() string { return strings.Join(*f, ",") }

func (f *listFlag) Set(s string) error {
	*f = append(*f, s)
	return nil
}

// envFlag is -e KEY=value, or -e KEY for KEY's value in tjob's own
// environment, as `docker run -e` takes them.
type envFlag struct{ listFlag }

func (f *envFlag) Set(s string) error {
	if name, _, _ := strings.Cut(s, "="); name == "" || strings.ContainsAny(name, " \t\n") {
		return fmt.Errorf("%q is not KEY=value or KEY", s)
	}
	return f.listFlag.Set(s)
}

// formatFlag is how `ps` writes: "table" (the default) or "json".
type formatFlag string

func (f *formatFlag) String() string { return string(*f) }

func (f *formatFlag) Set(s string) error {
	if s != "table" && s != "json" {
		return errors.New(`only "table" and "json" are known`)
	}
	*f = formatFlag(s)
	return nil
}
