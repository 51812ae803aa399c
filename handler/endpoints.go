package handler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/m-lab/epoxy-extensions/hostname"
	"github.com/m-lab/epoxy-extensions/metrics"
	"github.com/m-lab/epoxy-extensions/token/joincmd"
)

// Endpoint names, as used in logs and the refusals metric.
const (
	endpointTokenV1 = "allocate_k8s_token_v1"
	endpointTokenV2 = "allocate_k8s_token_v2"
	endpointBMC     = "bmc_store_password"
	endpointNode    = "node_delete"
)

// extensionEndpoints are the extension endpoints of a Server.
type extensionEndpoints struct {
	tokenV1, tokenV2, bmc, node endpoint
}

// backendNames are the names of a Server's backends, read once.
type backendNames struct {
	tokens, nodes, creds, revoker string
}

// endpoints returns s's extension endpoints, reading its backends' names.
func (s *Server) endpoints() extensionEndpoints {
	n := backendNames{tokens: s.Tokens.Name(), nodes: s.Nodes.Name(), creds: s.Creds.Name()}
	if s.Revoker != nil {
		n.revoker = s.Revoker.Name()
	}
	return extensionEndpoints{
		tokenV1: endpoint{name: endpointTokenV1, hostOptional: true, work: func(j *job) (response, error) {
			join, err := s.token(j, n)
			return response{"text/plain; charset=utf-8", []byte(join.Token)}, err
		}},
		tokenV2: endpoint{name: endpointTokenV2, hostOptional: true, work: func(j *job) (response, error) {
			join, err := s.token(j, n)
			if err != nil {
				return response{}, err
			}
			body, err := json.Marshal(join)
			return response{"application/json; charset=utf-8", body}, err
		}},
		bmc:  endpoint{name: endpointBMC, work: func(j *job) (response, error) { return response{}, s.bmc(j, n) }},
		node: endpoint{name: endpointNode, work: func(j *job) (response, error) { return response{}, s.deleteNode(j, n) }},
	}
}

// token creates a join token for the request's host, after checking a
// direct caller's identity.
func (s *Server) token(j *job, n backendNames) (joincmd.Join, error) {
	if j.Direct && s.Identity != nil {
		if err := s.Identity.Verify(j.ctx, j.r.Header.Get("Authorization"), j.Host); err != nil {
			return joincmd.Join{}, err
		}
	}
	var join joincmd.Join
	err := j.call(n.tokens, func(ctx context.Context) (err error) {
		join, err = s.Tokens.Create(ctx, j.Host)
		return err
	})
	return join, err
}

// bmc stores the BMC password the request carries in its raw query.
func (s *Server) bmc(j *job, n backendNames) error {
	if j.Direct {
		// Physical machines always come through ePoxy.
		return fmt.Errorf("%w: BMC passwords come only through a trusted proxy", ErrNotTrusted)
	}
	password, err := Password(j.RawQuery)
	if err != nil {
		return err
	}
	bmc, err := hostname.ParseBMC(j.Host)
	if err != nil {
		return errors.Join(ErrNotMachine, err)
	}
	return j.call(n.creds, func(ctx context.Context) error { return s.Creds.Put(ctx, bmc, password) })
}

// deleteNode deletes the request's node (only the caller's own, for a
// direct caller), then revokes the host's join tokens.
func (s *Server) deleteNode(j *job, n backendNames) error {
	var owner netip.Addr
	if j.Direct {
		owner = j.Caller
	}
	if err := j.call(n.nodes, func(ctx context.Context) error { return s.Nodes.Delete(ctx, j.Host, owner) }); err != nil {
		return err
	}
	if s.Revoker == nil {
		return nil
	}
	revoked, err := s.Revoker.Revoke(j.ctx, j.Host, time.Time{})
	if revoked > 0 {
		metrics.TokensRevoked.WithLabelValues("node_delete").Add(float64(revoked))
		s.Log.Info("join tokens revoked", slog.String("host", j.Host), slog.Int("tokens", revoked), slog.String("why", "node_delete"))
	}
	return failed(n.revoker, err)
}
