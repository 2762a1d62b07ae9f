package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"meshca/pkg/api"
	"meshca/pkg/meshctl"
)

// authCompare is what -auth-compare measured: registrations/s as the
// loopback admin over plain HTTP (no token, no role), with a user token
// whose access comes from an AccessRoleBinding over plain HTTP (token
// verification and role evaluation on every request), and with that token
// over HTTPS (plus TLS). The target is on what the token and the role add.
type authCompare struct {
	PerRound             int     `json:"perRound"`
	Rounds               int     `json:"rounds"`
	PlainPerSecond       float64 `json:"plainPerSecond"`
	TokenPerSecond       float64 `json:"plainTokenPerSecond"`
	HTTPSPerSecond       float64 `json:"httpsTokenPerSecond"`
	TokenOverheadPercent float64 `json:"tokenOverheadPercent"`
	HTTPSOverheadPercent float64 `json:"httpsOverheadPercent"`
	TargetPercentMax     float64 `json:"targetPercentMax"`
}

const authCompareMesh = "auth-bench"

// compareAuth registers cfg.authCompare dataplanes each way, in
// alternating rounds so that drift (load, store growth) falls on both.
func (r *runner) compareAuth(ctx context.Context) error {
	if _, err := r.api.Apply(ctx, &api.Mesh{Meta: api.Meta{Type: api.TypeMesh, Name: authCompareMesh}}, false); err != nil {
		return err
	}
	for _, res := range []api.Resource{
		&api.AccessRole{Meta: api.Meta{Type: api.TypeAccessRole, Name: "loadcp"}, AccessRoleSpec: api.AccessRoleSpec{Rules: []api.AccessRule{{
			Types: []string{api.TypeDataplane}, Mesh: authCompareMesh, Access: []string{api.AccessCreate, api.AccessUpdate, api.AccessGet},
		}}}},
		&api.AccessRoleBinding{Meta: api.Meta{Type: api.TypeAccessRoleBinding, Name: "loadcp"}, AccessRoleBindingSpec: api.AccessRoleBindingSpec{
			Subjects: []api.Subject{{Type: api.SubjectGroup, Name: "loadcp"}}, Roles: []string{"loadcp"},
		}},
	} {
		if _, err := r.api.Apply(ctx, res, false); err != nil {
			return err
		}
	}
	var tok []byte
	if _, err := r.api.Do(ctx, http.MethodPost, "/tokens/user", nil, map[string]any{"name": "loadcp", "groups": []string{"loadcp"}, "validFor": "1h"}, &tok); err != nil {
		return fmt.Errorf("generate user token: %w", err)
	}
	caPEM, err := os.ReadFile(filepath.Join(r.cp.dataDir, "api-server-ca.pem"))
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	hc := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool},
		MaxIdleConns:        r.cfg.concurrency * 2,
		MaxIdleConnsPerHost: r.cfg.concurrency * 2,
	}}
	defer hc.CloseIdleConnections()
	secure, err := meshctl.NewClient(r.cp.apiTLSURL, hc)
	if err != nil {
		return err
	}
	secure.SetToken(strings.TrimSpace(string(tok)))
	withToken, err := meshctl.NewClient(r.cp.apiURL, r.hc)
	if err != nil {
		return err
	}
	withToken.SetToken(strings.TrimSpace(string(tok)))

	const rounds = 10
	per := max(r.cfg.authCompare/rounds, 1)
	var next atomic.Int64
	register := func(c *meshctl.Client) (time.Duration, error) {
		t0 := time.Now()
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(r.cfg.concurrency)
		for range per {
			i := int(next.Add(1))
			g.Go(func() error {
				dp := r.dataplane(i)
				dp.Mesh, dp.Name = authCompareMesh, fmt.Sprintf("auth-%06d", i)
				_, err := c.Apply(gctx, dp, false)
				return err
			})
		}
		err := g.Wait()
		return time.Since(t0), err
	}
	// Each round runs the three ways in a rotated order.
	clients := []*meshctl.Client{r.api, withToken, secure}
	took := make([]time.Duration, len(clients))
	for round := range rounds {
		for k := range clients {
			i := (round + k) % len(clients)
			d, err := register(clients[i])
			if err != nil {
				return err
			}
			took[i] += d
		}
	}
	n := float64(per * rounds)
	ac := &authCompare{PerRound: per, Rounds: rounds, PlainPerSecond: n / took[0].Seconds(), TokenPerSecond: n / took[1].Seconds(),
		HTTPSPerSecond: n / took[2].Seconds(), TargetPercentMax: 5}
	ac.TokenOverheadPercent = (ac.PlainPerSecond/ac.TokenPerSecond - 1) * 100
	ac.HTTPSOverheadPercent = (ac.PlainPerSecond/ac.HTTPSPerSecond - 1) * 100
	r.rep.Phases.AuthCompare = ac
	r.log.Info("auth compare", "plainPerSecond", int(ac.PlainPerSecond), "plainTokenPerSecond", int(ac.TokenPerSecond), "httpsTokenPerSecond", int(ac.HTTPSPerSecond))
	return nil
}
