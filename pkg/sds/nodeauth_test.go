package sds_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/codes"

	"meshca/pkg/sds"
	"meshca/pkg/sds/sdstest"
	"meshca/pkg/tokens"
)

// nsAuth is a NodeAuthenticator in the manner of ServiceAccount tokens:
// token "ns:<namespace>" may act for the dataplanes named *.<namespace>.
type nsAuth struct {
	sds.TokenAuthenticator
	calls atomic.Int32
	nodes chan string
}

func (a *nsAuth) VerifyNode(_ context.Context, token, node string) (string, string, time.Time, error) {
	a.calls.Add(1)
	select {
	case a.nodes <- node:
	default:
	}
	ns, ok := strings.CutPrefix(token, "ns:")
	mesh, name, split := sds.SplitNodeID(node)
	if !ok || !split || !strings.HasSuffix(name, "."+ns) {
		return "", "", time.Time{}, fmt.Errorf("%w: not of namespace %q", sds.ErrRejected, ns)
	}
	return mesh, name, time.Now().Add(time.Hour), nil
}

// A NodeAuthenticator is asked once the first request named the node; the
// stream is served for that node only.
func TestNodeAuthenticator(t *testing.T) {
	na := &nsAuth{nodes: make(chan string, 16)}
	e := newEnvAuth(t, func(tk *tokens.Tokens) sds.Authenticator {
		na.TokenAuthenticator = sds.TokenAuthenticator{Tokens: tk}
		return na
	})
	want := sdstest.NewSecrets(t, "default", "web-1.payments", 1, time.Now())
	e.src.Set("default", "web-1.payments", want)

	t.Run("served", func(t *testing.T) {
		s, err := e.client.StreamSecrets(authCtx(t, "ns:payments"))
		if err != nil {
			t.Fatal(err)
		}
		// Nothing is verified before the first request says which node.
		time.Sleep(50 * time.Millisecond)
		if n := na.calls.Load(); n != 0 {
			t.Fatalf("%d verifications before the first request", n)
		}
		if err := s.Send(sotwRequest("default.web-1.payments", nil)); err != nil {
			t.Fatal(err)
		}
		r, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		checkSecrets(t, r.GetResources(), want)
		if got := <-na.nodes; got != "default.web-1.payments" {
			t.Fatalf("verified for node %q", got)
		}
		// The same stream cannot switch to another node.
		if err := s.Send(sotwRequest("default.web-2.payments", r)); err != nil {
			t.Fatal(err)
		}
		_, err = s.Recv()
		wantCode(t, err, codes.PermissionDenied)
	})
	t.Run("delta served", func(t *testing.T) {
		s, err := e.client.DeltaSecrets(authCtx(t, "ns:payments"))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Send(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "default.web-1.payments"}, TypeUrl: sds.SecretTypeURL, ResourceNamesSubscribe: names}); err != nil {
			t.Fatal(err)
		}
		r, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if len(r.GetResources()) != 2 {
			t.Fatalf("%d resources", len(r.GetResources()))
		}
	})
	for name, c := range map[string]struct {
		token, node string
		code        codes.Code
	}{
		"other namespace": {"ns:billing", "default.web-1.payments", codes.Unauthenticated},
		"no node":         {"ns:payments", "", codes.InvalidArgument},
	} {
		t.Run(name, func(t *testing.T) {
			s, err := e.client.StreamSecrets(authCtx(t, c.token))
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Send(sotwRequest(c.node, nil)); err != nil {
				t.Fatal(err)
			}
			_, err = s.Recv()
			wantCode(t, err, c.code)
		})
	}
	// A stream that never sends its first request is not kept open for
	// ever unauthenticated.
	t.Run("no first request", func(t *testing.T) {
		sds.SetFirstRequestTimeout(t, 100*time.Millisecond)
		s, err := e.client.StreamSecrets(authCtx(t, "ns:payments"))
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.Recv()
		wantCode(t, err, codes.Unauthenticated)
	})
	// The server asks VerifyNode, never Verify: a dataplane token that
	// this NodeAuthenticator does not take is refused although the
	// embedded TokenAuthenticator's Verify would accept it.
	t.Run("verify not used", func(t *testing.T) {
		s, err := e.client.StreamSecrets(authCtx(t, e.token("web-1")))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Send(sotwRequest("default.web-1", nil)); err != nil {
			t.Fatal(err)
		}
		_, err = s.Recv()
		wantCode(t, err, codes.Unauthenticated)
	})
}
