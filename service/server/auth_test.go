package server

import (
	"crypto/tls"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/neildo/tjob/service/pki"
	tjobv1 "github.com/neildo/tjob/service/proto/tjob/v1"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// TestTLSRefused: only TLS 1.3 clients with a valid client certificate from
// the CA get in.
func TestTLSRefused(t *testing.T) {
	ts := startServer(t, testConfig())
	good := ts.user(t, "alice")

	otherCA, err := pki.NewCA("other CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	foreign := writePair(t, otherCA, t.TempDir(), "alice", pki.Leaf{CN: "alice", Usage: x509.ExtKeyUsageClientAuth})
	expired := ts.issue(t, "expired", pki.Leaf{CN: "alice", Usage: x509.ExtKeyUsageClientAuth,
		NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	serverAuth := ts.issue(t, "server-as-client", pki.Leaf{CN: "alice", Usage: x509.ExtKeyUsageServerAuth, Hosts: []string{"localhost"}})

	tls12 := ts.clientTLS(&good)
	tls12.MinVersion, tls12.MaxVersion = tls.VersionTLS12, tls.VersionTLS12

	for _, tc := range []struct {
		name string
		cfg  *tls.Config
	}{
		{"no client certificate", ts.clientTLS(nil)},
		{"certificate from another CA", ts.clientTLS(&foreign)},
		{"expired certificate", ts.clientTLS(&expired)},
		{"server certificate as client", ts.clientTLS(&serverAuth)},
		{"TLS 1.2", tls12},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := strings.Count(ts.log.String(), " refused: ")
			_, c := ts.dial(t, tc.cfg)
			_, err := c.Status(ctxT(t), &tjobv1.StatusRequest{All: true})
			wantCode(t, "Status", err, codes.Unavailable)
			// The server refused the handshake, and said so.
			if !eventually(2*time.Second, func() bool { return strings.Count(ts.log.String(), " refused: ") > before }) {
				t.Errorf("no refused handshake in the log:\n%s", ts.log.String())
			}
			// No RPC reached a handler.
			if strings.Contains(ts.log.String(), "method=tjob.v1.Job/Status") {
				t.Errorf("an RPC got through:\n%s", ts.log.String())
			}
		})
	}

	t.Run("good certificate", func(t *testing.T) {
		_, c := ts.dial(t, ts.clientTLS(&good))
		if _, err := c.Status(ctxT(t), &tjobv1.StatusRequest{All: true}); err != nil {
			t.Fatal(err)
		}
	})
}

// TestNoCommonName: a valid certificate without a CN is no user: refused,
// except by the health service.
func TestNoCommonName(t *testing.T) {
	ts := startServer(t, testConfig())
	anon := ts.issue(t, "anon", pki.Leaf{CN: "", Usage: x509.ExtKeyUsageClientAuth})
	conn, c := ts.dial(t, ts.clientTLS(&anon))

	_, err := c.Run(ctxT(t), &tjobv1.RunRequest{Path: "true"})
	wantCode(t, "Run", err, codes.Unauthenticated)
	_, err = c.Status(ctxT(t), &tjobv1.StatusRequest{All: true})
	wantCode(t, "Status", err, codes.Unauthenticated)
	_, err = logs(ctxT(t), c, "x", false)
	wantCode(t, "Logs", err, codes.Unauthenticated)

	resp, err := healthpb.NewHealthClient(conn).Check(ctxT(t), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("health check: %v", err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v", resp.GetStatus())
	}
	if !strings.Contains(ts.log.String(), "user=- method=tjob.v1.Job/Run job=- code=Unauthenticated") {
		t.Errorf("refusal not logged:\n%s", ts.log.String())
	}
}

// TestIsolation: Bob cannot see, stop or read Alice's job, and cannot tell
// it exists.
func TestIsolation(t *testing.T) {
	ts := startServer(t, testConfig())
	alice, bob := ts.client(t, "alice"), ts.client(t, "bob")
	id := run(t, alice, "sleep", "1000")
	missing := "0badf00d-0000-4000-8000-000000000000"

	resp, err := bob.Status(ctxT(t), &tjobv1.StatusRequest{All: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetJobs()) != 0 {
		t.Fatalf("bob sees %d jobs", len(resp.GetJobs()))
	}

	// Each way of naming Alice's job answers exactly as a missing job does.
	for _, name := range []string{id, id[:8], id[:1], strings.ToUpper(id)} {
		for _, probe := range []struct {
			what string
			call func(string) error
		}{
			{"Status", func(id string) error {
				_, err := bob.Status(ctxT(t), &tjobv1.StatusRequest{JobId: &id})
				return err
			}},
			{"Stop", func(id string) error {
				_, err := bob.Stop(ctxT(t), &tjobv1.StopRequest{JobId: id})
				return err
			}},
			{"Logs", func(id string) error {
				_, err := logs(ctxT(t), bob, id, true)
				return err
			}},
		} {
			got := probe.call(name)
			wantCode(t, probe.what+" "+name, got, codes.NotFound)
			// The same message as for a job that does not exist, but for
			// the ID itself.
			miss := probe.call(missing)
			norm := func(err error) string {
				// The missing ID first: a prefix of alice's may be one of it too.
				return strings.NewReplacer(missing, "ID", strings.ToLower(name), "ID").Replace(err.Error())
			}
			if norm(got) != norm(miss) {
				t.Errorf("%s: %q for alice's job, %q for a missing one", probe.what, got, miss)
			}
		}
	}

	// Alice's job is untouched, and she sees it.
	if st := jobStatus(t, alice, id); st.GetState() != tjobv1.State_STATE_RUNNING || st.GetOwner() != "alice" {
		t.Fatalf("alice's job: %v, owner %q", st.GetState(), st.GetOwner())
	}
}
