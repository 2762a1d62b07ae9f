package sds_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"meshca/pkg/sds"
	"meshca/pkg/sds/sdstest"
)

// A stream for a data plane the source cannot serve (not registered, mesh
// without mTLS) ends at once with a status that says why, instead of
// opening and then sending nothing; the control plane logs it once per
// stream. An unauthenticated client learns nothing of the kind.
func TestUnservableDataplaneIsToldWhy(t *testing.T) {
	e := newEnv(t)
	notFound := `dataplane "web-1" not found in mesh "default"`
	noMTLS := `mesh "default" has no mTLS backend enabled`
	e.src.Refuse("default", "web-1", errors.Join(sds.ErrDataplaneNotFound, errors.New(notFound)))
	e.src.Refuse("default", "web-2", errors.New(noMTLS))

	open := func(tok, node string, delta bool) error {
		t.Helper()
		ctx := authCtx(t, tok)
		if delta {
			s, err := e.client.DeltaSecrets(ctx)
			if err != nil {
				return err
			}
			_ = s.Send(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: sds.SecretTypeURL, ResourceNamesSubscribe: names})
			_, err = s.Recv()
			return err
		}
		s, err := e.client.StreamSecrets(ctx)
		if err != nil {
			return err
		}
		_ = s.Send(sotwRequest(node, nil))
		_, err = s.Recv()
		return err
	}
	for _, c := range []struct {
		name, dp string
		delta    bool
		code     codes.Code
		reason   string
	}{
		{"not registered", "web-1", false, codes.NotFound, notFound},
		{"not registered (delta)", "web-1", true, codes.NotFound, notFound},
		{"no mTLS", "web-2", false, codes.FailedPrecondition, noMTLS},
	} {
		t.Run(c.name, func(t *testing.T) {
			logged := "node=default." + c.dp + " code=" + c.code.String()
			before := strings.Count(e.logs.String(), logged)
			err := open(e.token(c.dp), "default."+c.dp, c.delta)
			wantCode(t, err, c.code)
			if msg := status.Convert(err).Message(); !strings.Contains(msg, c.reason) {
				t.Fatalf("status message %q does not say %q", msg, c.reason)
			}
			if n := strings.Count(e.logs.String(), logged) - before; n != 1 {
				t.Fatalf("the control plane logged the reason %d times for one stream, want 1; log:\n%s", n, e.logs)
			}
		})
	}
	if got := metricValue(t, e.reg, "meshca_sds_connections"); got != 0 {
		t.Fatalf("connections = %v after refusals, want 0", got)
	}

	// A bad token is refused as such, before anything about the dataplane.
	wantCode(t, open("garbage", "default.web-1", false), codes.Unauthenticated)

	// Once the operator fixes it, the next stream is served.
	s1 := sdstest.NewSecrets(t, "default", "web-1", 1, time.Now())
	e.src.Refuse("default", "web-1", nil)
	e.src.Set("default", "web-1", s1)
	_, r := openFirst(t, e, e.token("web-1"), "default.web-1")
	checkSecrets(t, r.GetResources(), s1)
}
