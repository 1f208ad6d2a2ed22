package pki

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// ServerHosts are the names the server certificate is always valid for.
var ServerHosts = []string{"localhost", "127.0.0.1", "::1"}

// DefaultClient is the client whose certificate Init always makes: the CLI's
// default user.
const DefaultClient = "cli"

// CAName is the common name of the CAs Init makes, before a random suffix
// of their own ("tjob CA 3f9a1c"): two CAs, and an x509 error that names
// one, can be told apart.
const CAName = "tjob CA"

// validName is what a user name may be: it names files and is a CN.
var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// dnsLabel is one label of a host name (RFC 1123).
var dnsLabel = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)

// reserved are file names Init uses for itself.
var reserved = map[string]bool{"ca": true, "svc": true}

// Init makes the certificates tjobs and its users need in dir:
//
//	ca.crt, ca.key    the CA ("tjob CA" and a random suffix)
//	svc.crt, svc.key  the server (serverAuth; localhost, 127.0.0.1, ::1 and hosts)
//	cli.crt, cli.key  the client "cli" (clientAuth; CN cli)
//	NAME.crt, NAME.key for each of names (clientAuth; CN NAME)
//
// hosts are more DNS names and IP addresses the server certificate is valid
// for. It never overwrites a file. When dir already holds a CA, Init signs
// with it and only adds the pairs that are missing, so it can be run again
// to add users; an existing server certificate stays as it is, and when it
// lacks some of hosts Init says so. Keys are written 0600, dir is made 0700.
// Init reports what it wrote to w.
func Init(dir string, names, hosts []string, w io.Writer) error {
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
	svcHosts, err := serverHosts(hosts)
	if err != nil {
		return err
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
		fmt.Fprintf(w, "using the CA in %s (%q)\n", caCrt, ca.Cert.Subject.CommonName)
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
		if ca, err = newNamedCA(); err != nil {
			return err
		}
		keyPEM, err := ca.KeyPEM()
		if err != nil {
			return err
		}
		if err := (&Pair{CertPEM: ca.PEM, KeyPEM: keyPEM}).Write(caCrt, caKey); err != nil {
			return err
		}
		fmt.Fprintf(w, "wrote %s %s (CA %q)\n", caCrt, caKey, ca.Cert.Subject.CommonName)
	}

	issue := func(name string, l Leaf, what string) error {
		crt, key := path(name, ".crt"), path(name, ".key")
		switch c, k := exists(crt), exists(key); {
		case c && k:
			fmt.Fprintf(w, "kept  %s %s (exists%s)\n", crt, key, lacking(crt, l.Hosts))
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
	if err := issue("svc", Leaf{CN: "tjobs", Usage: x509.ExtKeyUsageServerAuth, Hosts: svcHosts}, "server: "+strings.Join(svcHosts, ", ")); err != nil {
		return err
	}
	for _, u := range users {
		if err := issue(u, Leaf{CN: u, Usage: x509.ExtKeyUsageClientAuth}, "client, CN "+u); err != nil {
			return err
		}
	}
	return nil
}

// newNamedCA makes a CA named CAName and a random suffix.
func newNamedCA() (*CA, error) {
	var suffix [3]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		return nil, err
	}
	return NewCA(CAName+" "+hex.EncodeToString(suffix[:]), CAValidity)
}

// serverHosts is ServerHosts and then hosts, each once; a host that is
// neither an IP address nor a DNS name is refused.
func serverHosts(hosts []string) ([]string, error) {
	all := slices.Clone(ServerHosts)
	for _, h := range hosts {
		if net.ParseIP(h) == nil && !isDNSName(h) {
			return nil, fmt.Errorf("bad host %q: give a DNS name (tjobs.example.com) or an IP address (10.0.0.5, fd00::5)", h)
		}
		if !slices.Contains(all, h) {
			all = append(all, h)
		}
	}
	return all, nil
}

func isDNSName(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if !dnsLabel.MatchString(label) {
			return false
		}
	}
	return true
}

// lacking is "; not valid for HOST, ...: ..." when the certificate in crt
// is not valid for all of hosts, or "". A certificate is never overwritten:
// the way to more names is a new one.
func lacking(crt string, hosts []string) string {
	if len(hosts) == 0 {
		return ""
	}
	cert, err := readCertificate(crt)
	if err != nil {
		return "; " + err.Error()
	}
	var missing []string
	for _, h := range hosts {
		if cert.VerifyHostname(h) != nil {
			missing = append(missing, h)
		}
	}
	if len(missing) == 0 {
		return ""
	}
	return fmt.Sprintf("; not valid for %s: a certificate is never overwritten, remove %s and its key and run again to make one that is",
		strings.Join(missing, ", "), filepath.Base(crt))
}
