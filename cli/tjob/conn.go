package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	tjobv1 "github.com/neildo/tjob/service/proto/tjob/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// tlsConfig loads the CA and the client's pair: TLS 1.3 only.
func (c *cli) tlsConfig() (*tls.Config, error) {
	for _, f := range []struct{ what, name, flag string }{
		{"CA certificate", c.ca, "ca"},
		{"client certificate", c.cert, "cert"},
		{"client key", c.key, "key"},
	} {
		if _, err := os.Stat(f.name); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("%s file %s does not exist (%s, or make certificates with 'tjobs certs')", f.what, f.name, c.origin(f.flag))
			}
			return nil, fmt.Errorf("%s file: %v (%s)", f.what, err, c.origin(f.flag))
		}
	}
	caPEM, err := os.ReadFile(c.ca)
	if err != nil {
		return nil, fmt.Errorf("CA certificate file: %v (%s)", err, c.origin("ca"))
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("CA certificate file %s holds no PEM certificate (%s)", c.ca, c.origin("ca"))
	}
	pair, err := tls.LoadX509KeyPair(c.cert, c.key)
	if err != nil {
		return nil, fmt.Errorf("client certificate %s and key %s: %v (%s)", c.cert, c.key, err, c.origin("cert"))
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		RootCAs:      pool,
		Certificates: []tls.Certificate{pair},
	}, nil
}

// connect makes the client for the server. It does not dial: the first call
// does, and explain makes sense of its failure.
func (c *cli) connect() (*grpc.ClientConn, error) {
	cfg, err := c.tlsConfig()
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(c.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		return nil, fmt.Errorf("server address %q: %v (%s)", c.addr, err, c.origin("addr"))
	}
	c.client = tjobv1.NewJobClient(conn)
	return conn, nil
}

// explain turns a failed call into one line a person can act on, without
// gRPC's words.
func (c *cli) explain(err error) error {
	st := status.Convert(err)
	msg := st.Message()
	switch st.Code() {
	case codes.NotFound, codes.InvalidArgument, codes.FailedPrecondition, codes.ResourceExhausted:
		return errors.New(msg) // the server's words are for people
	case codes.Unauthenticated, codes.PermissionDenied:
		return fmt.Errorf("certificate %s rejected by the server at %s: %s (%s)", c.cert, c.addr, msg, c.origin("cert"))
	case codes.DeadlineExceeded:
		return fmt.Errorf("the server at %s did not answer in time", c.addr)
	case codes.Canceled:
		return errors.New("canceled")
	case codes.Unavailable:
		if msg == "server is shutting down" {
			return fmt.Errorf("the server at %s is shutting down", c.addr)
		}
		return c.diagnose(msg)
	}
	return fmt.Errorf("the server at %s failed: %s", c.addr, msg)
}

// diagnose finds out why the server could not be reached: no server, or a
// certificate one side rejects. gRPC's message is kept as a last resort.
func (c *cli) diagnose(msg string) error {
	raw, err := net.DialTimeout("tcp", c.addr, 5*time.Second)
	if err != nil {
		return fmt.Errorf("server not reachable at %s: %s (%s)", c.addr, netReason(err), c.origin("addr"))
	}
	defer raw.Close()
	cfg, err := c.tlsConfig()
	if err != nil {
		return err
	}
	cfg.NextProtos = []string{"h2"}
	if host, _, err := net.SplitHostPort(c.addr); err == nil {
		cfg.ServerName = host
	}
	conn := tls.Client(raw, cfg)
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if err := conn.Handshake(); err != nil {
		var verr *tls.CertificateVerificationError
		if errors.As(err, &verr) {
			return c.untrusted(verr, cfg.ServerName)
		}
		return tlsRejected(c, err, msg)
	}
	// In TLS 1.3 the server checks the client's certificate after the
	// client has finished its side: a refusal comes with the first read.
	var b [1]byte
	if _, err := conn.Read(b[:]); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		return tlsRejected(c, err, msg)
	}
	return fmt.Errorf("server not reachable at %s: %s", c.addr, msg)
}

// untrusted explains a server certificate tjob does not accept: made for
// other names, or signed by another CA than the one tjob trusts (which the
// CAs' common names tell apart: `tjobs certs` gives each a suffix of its
// own).
func (c *cli) untrusted(verr *tls.CertificateVerificationError, host string) error {
	var hostErr x509.HostnameError
	if errors.As(verr.Err, &hostErr) {
		return fmt.Errorf("the server's certificate at %s is not valid for %s: %v (make it with 'tjobs certs -host %s')", c.addr, host, verr.Err, host)
	}
	var authErr x509.UnknownAuthorityError
	if errors.As(verr.Err, &authErr) && len(verr.UnverifiedCertificates) > 0 {
		signer := verr.UnverifiedCertificates[0].Issuer.CommonName
		return fmt.Errorf("the server's certificate at %s is signed by %q, not by the CA in %s%s (%s)", c.addr, signer, c.ca, caName(c.ca), c.origin("ca"))
	}
	return fmt.Errorf("the server's certificate at %s is not trusted (CA %s): %v (%s)", c.addr, c.ca, verr.Err, c.origin("ca"))
}

// caName is ` ("CN")` of the first certificate in file, or "".
func caName(file string) string {
	rest, _ := os.ReadFile(file)
	for {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			return ""
		}
		if cert, err := x509.ParseCertificate(blk.Bytes); err == nil && blk.Type == "CERTIFICATE" {
			return fmt.Sprintf(" (%q)", cert.Subject.CommonName)
		}
	}
}

// tlsRejected explains a TLS alert from the server.
func tlsRejected(c *cli, err error, msg string) error {
	s := err.Error()
	if i := strings.Index(s, "tls: "); i >= 0 && strings.Contains(s, "remote error") {
		return fmt.Errorf("certificate %s rejected by the server at %s (%s; %s)", c.cert, c.addr, s[i+len("tls: "):], c.origin("cert"))
	}
	if strings.Contains(s, "protocol version") {
		return fmt.Errorf("the server at %s does not speak TLS 1.3", c.addr)
	}
	return fmt.Errorf("server not reachable at %s: %s", c.addr, msg)
}

// netReason is the heart of a dial error: "connection refused", "no such
// host".
func netReason(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return dnsErr.Err
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Err != nil {
		return opErr.Err.Error()
	}
	return err.Error()
}
