package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func readCert(t *testing.T, name string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM", name)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestInit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	var out bytes.Buffer
	if err := Init(dir, []string{"bob"}, nil, &out); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("dir: %v %v", fi.Mode(), err)
	}
	ca := readCert(t, filepath.Join(dir, "ca.crt"))
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	if !ca.IsCA || ca.MaxPathLen != 0 || !ca.MaxPathLenZero {
		t.Errorf("CA: IsCA %v MaxPathLen %d", ca.IsCA, ca.MaxPathLen)
	}
	for _, tc := range []struct {
		name, cn string
		usage    x509.ExtKeyUsage
	}{
		{"svc", "tjobs", x509.ExtKeyUsageServerAuth},
		{"cli", "cli", x509.ExtKeyUsageClientAuth},
		{"bob", "bob", x509.ExtKeyUsageClientAuth},
	} {
		crt, key := filepath.Join(dir, tc.name+".crt"), filepath.Join(dir, tc.name+".key")
		c := readCert(t, crt)
		if c.Subject.CommonName != tc.cn || c.IsCA || !c.BasicConstraintsValid ||
			len(c.ExtKeyUsage) != 1 || c.ExtKeyUsage[0] != tc.usage || c.KeyUsage != x509.KeyUsageDigitalSignature {
			t.Errorf("%s: CN %q IsCA %v EKU %v KU %v", tc.name, c.Subject.CommonName, c.IsCA, c.ExtKeyUsage, c.KeyUsage)
		}
		if pk, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || pk.Curve != elliptic.P256() {
			t.Errorf("%s: key %T, want ECDSA P-256", tc.name, c.PublicKey)
		}
		if _, err := c.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{tc.usage}}); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, %v", key, fi.Mode(), err)
		}
		if _, err := tls.LoadX509KeyPair(crt, key); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	svc := readCert(t, filepath.Join(dir, "svc.crt"))
	if strings.Join(svc.DNSNames, ",") != "localhost" || len(svc.IPAddresses) != 2 {
		t.Errorf("server names: %v %v", svc.DNSNames, svc.IPAddresses)
	}

	// Again, with a new user: the CA and the pairs are kept, alice is added
	// and signed by the same CA.
	before, _ := os.ReadFile(filepath.Join(dir, "ca.key"))
	svcBefore, _ := os.ReadFile(filepath.Join(dir, "svc.crt"))
	out.Reset()
	if err := Init(dir, []string{"alice", "bob"}, nil, &out); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, "ca.key"))
	svcAfter, _ := os.ReadFile(filepath.Join(dir, "svc.crt"))
	if !bytes.Equal(before, after) || !bytes.Equal(svcBefore, svcAfter) {
		t.Fatal("the CA or the server pair was overwritten")
	}
	alice := readCert(t, filepath.Join(dir, "alice.crt"))
	if _, err := alice.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("alice: %v", err)
	}
	if !strings.Contains(out.String(), "kept") {
		t.Errorf("output: %s", out.String())
	}

	// Half a CA is refused, and so are bad names.
	os.Remove(filepath.Join(dir, "ca.key"))
	if err := Init(dir, nil, nil, &out); err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Errorf("half a CA: %v", err)
	}
	for _, bad := range []string{"ca", "svc", "../x", "a b", "", "-x"} {
		if err := Init(t.TempDir(), []string{bad}, nil, &out); err == nil {
			t.Errorf("name %q accepted", bad)
		}
	}
}

// TestInitHosts: -host names and addresses join the server certificate's
// defaults; a bad one is refused before anything is written; an existing
// server certificate is kept, and Init says in one line which names it
// lacks.
func TestInitHosts(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	var out bytes.Buffer
	if err := Init(dir, nil, []string{"tjobs.example.com", "10.0.0.5", "fd00::5", "localhost"}, &out); err != nil {
		t.Fatal(err)
	}
	svc := readCert(t, filepath.Join(dir, "svc.crt"))
	for _, h := range []string{"localhost", "127.0.0.1", "::1", "tjobs.example.com", "10.0.0.5", "fd00::5"} {
		if err := svc.VerifyHostname(h); err != nil {
			t.Errorf("server certificate: %v", err)
		}
	}
	if len(svc.DNSNames) != 2 || len(svc.IPAddresses) != 4 {
		t.Errorf("server names %v, addresses %v: each once", svc.DNSNames, svc.IPAddresses)
	}

	// Again with a name it lacks: kept, and said so in one line.
	before, _ := os.ReadFile(filepath.Join(dir, "svc.crt"))
	out.Reset()
	if err := Init(dir, nil, []string{"10.0.0.5", "other.example.com"}, &out); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, "svc.crt"))
	if !bytes.Equal(before, after) {
		t.Fatal("svc.crt was overwritten")
	}
	var line string
	for _, l := range strings.Split(out.String(), "\n") {
		if strings.Contains(l, "svc.crt") {
			line = l
		}
	}
	if !strings.HasPrefix(line, "kept") || !strings.Contains(line, "not valid for other.example.com:") || strings.Contains(line, "10.0.0.5") {
		t.Errorf("the line about svc.crt: %q", line)
	}

	for _, bad := range []string{"a b", "-x.example.com", "x..y", "http://x", "[::1]", strings.Repeat("a", 64) + ".com"} {
		d := filepath.Join(t.TempDir(), "certs")
		if err := Init(d, nil, []string{bad}, &out); err == nil || !strings.Contains(err.Error(), "bad host") {
			t.Errorf("host %q: %v", bad, err)
		}
		if exists(d) {
			t.Errorf("host %q: %s made before the host was refused", bad, d)
		}
	}
}

// TestCANames: each CA Init makes has a name of its own, which the
// certificates it signs carry as their issuer: a client that does not trust
// a server's certificate can say which CA signed it, and which it trusts.
func TestCANames(t *testing.T) {
	var out bytes.Buffer
	names := map[string]bool{}
	var dirs []string
	for range 3 {
		dir := t.TempDir()
		if err := Init(dir, nil, nil, &out); err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, dir)
		cn := readCert(t, filepath.Join(dir, "ca.crt")).Subject.CommonName
		if !regexp.MustCompile(`^tjob CA [0-9a-f]{6}$`).MatchString(cn) {
			t.Errorf("CA name %q", cn)
		}
		names[cn] = true
	}
	if len(names) != 3 {
		t.Errorf("CA names %v: not one each", names)
	}
	for _, dir := range dirs {
		ca := readCert(t, filepath.Join(dir, "ca.crt")).Subject.CommonName
		for _, leaf := range []string{"svc", "cli"} {
			if issuer := readCert(t, filepath.Join(dir, leaf+".crt")).Issuer.CommonName; issuer != ca {
				t.Errorf("%s/%s.crt: issuer %q, want %q", dir, leaf, issuer, ca)
			}
		}
	}
}
