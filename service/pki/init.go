package pki

import (
	"crypto/x509"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
)

// ServerHosts are the names the server certificate is valid for.
var ServerHosts = []string{"localhost", "127.0.0.1", "::1"}

// DefaultClient is the client whose certificate Init always makes: the CLI's
// default user.
const DefaultClient = "cli"

// validName is what a user name may be: it names files and is a CN.
var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// reserved are file names Init uses for itself.
var reserved = map[string]bool{"ca": true, "svc": true}

// Init makes the certificates tjobs and its users need in dir:
//
//	ca.crt, ca.key    the CA
//	svc.crt, svc.key  the server (serverAuth; localhost, 127.0.0.1, ::1)
//	cli.crt, cli.key  the client "cli" (clientAuth; CN cli)
//	NAME.crt, NAME.key for each of names (clientAuth; CN NAME)
//
// It never overwrites a file. When dir already holds a CA, Init signs with it
// and only adds the pairs that are missing, so it can be run again to add
// users. Keys are written 0600, dir is made 0700. Init reports what it wrote
// to w.
func Init(dir string, names []string, w io.Writer) error {
	users := []string{DefaultClient}
	seen := map[string]bool{DefaultClient: true}
	for _, n := range names {
		if !validName.MatchString(n) || reserved[n] {
			return fmt.Errorf("bad user name %q: use letters, digits, '.', '_' or '-' (not %q or %q)", n, "ca", "svc")
		}
		if !seen[n] {
			seen[n] = true
			users = append(users, n)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	path := func(name, ext string) string { return filepath.Join(dir, name+ext) }

	caCrt, caKey := path("ca", ".crt"), path("ca", ".key")
	var ca *CA
	switch crt, key := exists(caCrt), exists(caKey); {
	case crt && key:
		var err error
		if ca, err = LoadCA(caCrt, caKey); err != nil {
			return fmt.Errorf("existing CA: %w", err)
		}
		fmt.Fprintf(w, "using the CA in %s\n", caCrt)
	case crt || key:
		return fmt.Errorf("refusing to overwrite an existing CA: %s and %s must both exist, or neither", caCrt, caKey)
	default:
		// A new CA: any certificate already here was signed by another one.
		for _, n := range append([]string{"svc"}, users...) {
			for _, f := range []string{path(n, ".crt"), path(n, ".key")} {
				if exists(f) {
					return fmt.Errorf("%s exists but the CA does not: remove it, or restore %s and %s", f, caCrt, caKey)
				}
			}
		}
		var err error
		if ca, err = NewCA("tjob CA", CAValidity); err != nil {
			return err
		}
		keyPEM, err := ca.KeyPEM()
		if err != nil {
			return err
		}
		if err := (&Pair{CertPEM: ca.PEM, KeyPEM: keyPEM}).Write(caCrt, caKey); err != nil {
			return err
		}
		fmt.Fprintf(w, "wrote %s %s (CA)\n", caCrt, caKey)
	}

	issue := func(name string, l Leaf, what string) error {
		crt, key := path(name, ".crt"), path(name, ".key")
		switch c, k := exists(crt), exists(key); {
		case c && k:
			fmt.Fprintf(w, "kept  %s %s (exists)\n", crt, key)
			return nil
		case c || k:
			return fmt.Errorf("refusing to overwrite: %s and %s must both exist, or neither", crt, key)
		}
		p, err := ca.Issue(l)
		if err != nil {
			return err
		}
		if err := p.Write(crt, key); err != nil {
			return err
		}
		fmt.Fprintf(w, "wrote %s %s (%s)\n", crt, key, what)
		return nil
	}
	if err := issue("svc", Leaf{CN: "tjobs", Usage: x509.ExtKeyUsageServerAuth, Hosts: ServerHosts}, "server"); err != nil {
		return err
	}
	for _, u := range users {
		if err := issue(u, Leaf{CN: u, Usage: x509.ExtKeyUsageClientAuth}, "client, CN "+u); err != nil {
			return err
		}
	}
	return nil
}
