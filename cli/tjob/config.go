package main

import (
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"regexp"

	tjobv1 "github.com/neildo/tjob/service/proto/tjob/v1"
)

// The environment tjob reads; a flag on the command line wins over it.
const (
	envAddr     = "TJOB_ADDR"      // the server, host:port
	envCertPath = "TJOB_CERT_PATH" // the directory of ca.crt and the client's pair
	envUser     = "TJOB_USER"      // whose pair: NAME.crt and NAME.key
)

// tjob's own defaults, where the environment says nothing.
const (
	defaultAddr     = "localhost:8080"
	defaultCertPath = ".tjob"
	defaultUser     = "cli" // the client `tjobs certs` always makes
)

// validUser is what `tjobs certs` takes as a user name, which names files.
var validUser = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// cli is one invocation: its options and where it writes.
type cli struct {
	options
	defaults  options // what the options are when no flag gives them
	stdout    io.Writer
	stderr    io.Writer
	lookupEnv func(string) (string, bool)
	client    tjobv1.JobClient // once connected
}

// options are what a command line sets: the server and certificates every
// command has, and each command's own.
type options struct {
	addr, ca, cert, key string
	version             bool // -version, before the command

	all, quiet, noTrunc bool       // ps -a, -q, --no-trunc
	format              formatFlag // ps --format
	follow              bool       // logs -f
	force               bool       // rm -f
	stopTimeout         graceFlag  // stop -t
	run                 runOptions
}

// runOptions are `tjob run`'s.
type runOptions struct {
	memory, readBPS, writeBPS sizeFlag
	cpus                      cpusFlag
	pids                      countFlag
	env                       envFlag
	envFiles                  listFlag
	workdir                   string
	stopTimeout               graceFlag
	attach, remove            bool
}

// connectionDefaults are the server's address and the certificate files
// when no flag gives them: from TJOB_ADDR, TJOB_CERT_PATH and TJOB_USER,
// else tjob's own.
func connectionDefaults(lookupEnv func(string) (string, bool)) (options, error) {
	getenv := func(name string) string { v, _ := lookupEnv(name); return v }
	or := func(v, d string) string {
		if v != "" {
			return v
		}
		return d
	}
	dir := or(getenv(envCertPath), defaultCertPath)
	user := or(getenv(envUser), defaultUser)
	if !validUser.MatchString(user) {
		return options{}, fmt.Errorf("%s=%q is not a user name: use letters, digits, '.', '_' or '-'", envUser, user)
	}
	return options{
		addr: or(getenv(envAddr), defaultAddr),
		ca:   filepath.Join(dir, "ca.crt"),
		cert: filepath.Join(dir, user+".crt"),
		key:  filepath.Join(dir, user+".key"),
	}, nil
}

// commonFlags adds the options of every command to fs. Their defaults are
// what cl holds already (given before the command), else cl.defaults.
func (cl *cli) commonFlags(fs *flag.FlagSet) {
	def := func(v, d string) string {
		if v != "" {
			return v
		}
		return d
	}
	fs.StringVar(&cl.addr, "addr", def(cl.addr, cl.defaults.addr), "")
	fs.StringVar(&cl.ca, "ca", def(cl.ca, cl.defaults.ca), "")
	fs.StringVar(&cl.cert, "cert", def(cl.cert, cl.defaults.cert), "")
	fs.StringVar(&cl.key, "key", def(cl.key, cl.defaults.key), "")
}

// origin says how to change the address or certificate file behind -name,
// for an error that names it: the flag it was given with, or the flag and
// the environment its default comes from.
func (cl *cli) origin(name string) string {
	var given, def, env string
	switch name {
	case "addr":
		given, def, env = cl.addr, cl.defaults.addr, " or "+envAddr
	case "ca":
		given, def, env = cl.ca, cl.defaults.ca, " or "+envCertPath
	case "cert":
		given, def, env = cl.cert, cl.defaults.cert, ", "+envCertPath+" or "+envUser
	case "key":
		given, def, env = cl.key, cl.defaults.key, ", "+envCertPath+" or "+envUser
	}
	if given != def {
		return "given with -" + name
	}
	return "set -" + name + env
}
