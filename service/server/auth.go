package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

const timeFormat = "2006-01-02T15:04:05.000Z07:00"

// healthPrefix is the health service's methods: any client with a verified
// certificate may call them, CN or not.
const healthPrefix = "/grpc.health.v1.Health/"

// TLSConfig loads the server's certificate and the CA that client
// certificates must chain to: TLS 1.3 only, client certificates required and
// verified (which also requires their extended key usage to allow client
// authentication).
func TLSConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("server certificate: %w", err)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("CA certificate: no PEM certificate in %s", caFile)
	}
	return &tls.Config{
		MinVersion:       tls.VersionTLS13,
		Certificates:     []tls.Certificate{cert},
		ClientAuth:       tls.RequireAndVerifyClientCert,
		ClientCAs:        pool,
		VerifyConnection: verifyClientLeaf,
	}, nil
}

// verifyClientLeaf refuses a verified client certificate that is not a
// client's leaf: the CA's own certificate (which verifies against itself and,
// having no extended key usage, passes for any use) or any other CA, and a
// certificate that does not name client authentication among its extended
// key usages.
func verifyClientLeaf(cs tls.ConnectionState) error {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return errors.New("no verified client certificate")
	}
	leaf := cs.VerifiedChains[0][0]
	if leaf.IsCA {
		return fmt.Errorf("client certificate %q is a CA certificate", leaf.Subject.CommonName)
	}
	if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) && !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageAny) {
		return fmt.Errorf("client certificate %q is not for client authentication (no clientAuth extended key usage)", leaf.Subject.CommonName)
	}
	return nil
}

// NewGRPCServer makes a gRPC server on TLS with the server's authorization
// and logging, and registers the services.
func (s *Server) NewGRPCServer(tlsConfig *tls.Config) *grpc.Server {
	g := grpc.NewServer(
		grpc.Creds(&loggedCreds{TransportCredentials: credentials.NewTLS(tlsConfig), s: s}),
		grpc.MaxSendMsgSize(maxMessage),
		codecOption(),
		grpc.ConnectionTimeout(10*time.Second), // for the TLS handshake
		grpc.ChainUnaryInterceptor(s.unaryInterceptor),
		grpc.ChainStreamInterceptor(s.streamInterceptor),
	)
	s.Register(g)
	return g
}

// loggedCreds logs refused TLS handshakes: they never become RPCs.
type loggedCreds struct {
	credentials.TransportCredentials
	s *Server
}

func (c *loggedCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	nc, ai, err := c.TransportCredentials.ServerHandshake(conn)
	if err != nil {
		c.s.logf("tls from=%s refused: %v", conn.RemoteAddr(), err)
	}
	return nc, ai, err
}

func (c *loggedCreds) Clone() credentials.TransportCredentials {
	return &loggedCreds{TransportCredentials: c.TransportCredentials.Clone(), s: c.s}
}

// call is what the interceptor logs about an RPC; handlers fill in the job.
type call struct {
	user string
	mu   sync.Mutex
	job  string
}

type callKey struct{}

func callOf(ctx context.Context) *call {
	c, _ := ctx.Value(callKey{}).(*call)
	return c
}

// userOf is the caller's CN, which the interceptors checked.
func userOf(ctx context.Context) string {
	if c := callOf(ctx); c != nil {
		return c.user
	}
	return ""
}

// setJob names the job an RPC is about, for its log line.
func setJob(ctx context.Context, id string) {
	if c := callOf(ctx); c != nil {
		c.mu.Lock()
		c.job = id
		c.mu.Unlock()
	}
}

// authenticate returns the CN of the caller's verified client certificate.
func authenticate(ctx context.Context) (string, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", status.Error(codes.Unauthenticated, "no peer")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return "", status.Error(codes.Unauthenticated, "no verified client certificate")
	}
	cn := info.State.VerifiedChains[0][0].Subject.CommonName
	if cn == "" {
		return "", status.Error(codes.Unauthenticated, "client certificate has no common name (CN)")
	}
	return cn, nil
}

func (s *Server) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	c := &call{}
	user, err := authenticate(ctx)
	switch {
	case err == nil:
		c.user = user
	case strings.HasPrefix(info.FullMethod, healthPrefix):
		err = nil
	}
	var resp any
	if err == nil {
		resp, err = handler(context.WithValue(ctx, callKey{}, c), req)
	}
	if m, ok := resp.(proto.Message); ok && err == nil && proto.Size(m) > maxMessage {
		// grpc would fail the send after this returns, and the log
		// would say OK: fail it here, as it will be.
		resp, err = nil, status.Errorf(codes.ResourceExhausted, "the answer is %d bytes, more than the %d a client takes", proto.Size(m), maxMessage)
	}
	s.logRPC(start, c, info.FullMethod, err)
	return resp, err
}

// maxMessage is the most a message to a client may be: grpc-go's default
// for what a client receives.
const maxMessage = 4 << 20

func (s *Server) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	start := time.Now()
	c := &call{}
	user, err := authenticate(ss.Context())
	switch {
	case err == nil:
		c.user = user
	case strings.HasPrefix(info.FullMethod, healthPrefix):
		err = nil
	}
	if err == nil {
		err = handler(srv, &callStream{ServerStream: ss, ctx: context.WithValue(ss.Context(), callKey{}, c)})
	}
	s.logRPC(start, c, info.FullMethod, err)
	return err
}

// callStream carries the call in its context.
type callStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *callStream) Context() context.Context { return s.ctx }

// logRPC writes the RPC's line:
//
//	TIME user=CN method=NAME job=ID code=CODE dur=DURATION [err="MESSAGE"]
//
// with "-" for what is not known.
func (s *Server) logRPC(start time.Time, c *call, method string, err error) {
	c.mu.Lock()
	job := c.job
	c.mu.Unlock()
	st, _ := status.FromError(err)
	if err != nil && st.Code() == codes.Unknown {
		// A handler's plain error, such as a failed Send to a client
		// that went away.
		if errors.Is(err, context.Canceled) {
			st = status.New(codes.Canceled, err.Error())
		}
	}
	line := fmt.Sprintf("%s user=%s method=%s job=%s code=%s dur=%s",
		start.Format(timeFormat), field(c.user), strings.TrimPrefix(method, "/"), field(job), st.Code(),
		time.Since(start).Round(time.Microsecond))
	if err != nil {
		line += " err=" + strconv.Quote(st.Message())
	}
	s.log.Print(line)
}

// field makes a log value one word: "-" when empty, quoted when it has
// spaces, quotes or control characters (a CN or a job ID from a client).
func field(v string) string {
	if v == "" {
		return "-"
	}
	for _, r := range v {
		if r <= ' ' || r == '"' || r == '=' || r == 0x7f || r > 0x7e {
			return strconv.Quote(v)
		}
	}
	return v
}
