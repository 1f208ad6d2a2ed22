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
	if err := Init(dir, []string{"bob"}, &out); err != nil {
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
	if err := Init(dir, []string{"alice", "bob"}, &out); err != nil {
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
	if err := Init(dir, nil, &out); err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Errorf("half a CA: %v", err)
	}
	for _, bad := range []string{"ca", "svc", "../x", "a b", "", "-x"} {
		if err := Init(t.TempDir(), []string{bad}, &out); err == nil {
			t.Errorf("name %q accepted", bad)
		}
	}
}
