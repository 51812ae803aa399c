package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
)

// CanCreateBootstrapTokens returns a readiness check for the api backend:
// the API server answers, and says (in a SelfSubjectAccessReview) that this
// client may create Secrets in kube-system. client is the core client's
// REST client (ReadyClient: not the token client, whose rate limit a boot
// storm saturates); the review needs no permission of its own. An
// overloaded API server counts as ready: busy is not broken.
func CanCreateBootstrapTokens(client rest.Interface) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		review := authorizationv1.SelfSubjectAccessReview{
			TypeMeta: metav1.TypeMeta{APIVersion: "authorization.k8s.io/v1", Kind: "SelfSubjectAccessReview"},
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
				Namespace: metav1.NamespaceSystem, Verb: "create", Resource: "secrets",
			}},
		}
		body, err := json.Marshal(review)
		if err != nil {
			return fmt.Errorf("access review: %w", err)
		}
		var answer authorizationv1.SelfSubjectAccessReview
		err = Call(ctx, "access_review", func(ctx context.Context) error {
			raw, err := client.Post().AbsPath("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews").
				SetHeader("Content-Type", "application/json").SetHeader("Accept", "application/json").
				Body(body).Do(ctx).Raw()
			if err != nil {
				return err
			}
			return json.Unmarshal(raw, &answer)
		})
		if errors.Is(err, ErrOverloaded) {
			// An API server that answers 429 (or a saturated limiter) is
			// busy, not broken: the token requests it cannot take get 503
			// with Retry-After. Turning unready would take every replica
			// out of its Service at once, which is worse.
			return nil
		}
		if err != nil {
			return fmt.Errorf("access review: %w", err)
		}
		if !answer.Status.Allowed {
			return fmt.Errorf("not allowed to create Secrets in %s: %s", metav1.NamespaceSystem, answer.Status.Reason)
		}
		return nil
	}
}

// FollowCluster reads the join details with read every interval until ctx
// ends, and stores them when they differ from what load returns: a CA
// rotation rewrites cluster-info, and machines must get the new CA hash. A
// failed read keeps the details known.
func FollowCluster(ctx context.Context, read func(context.Context) (Cluster, error),
	load func() Cluster, store func(Cluster), interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, interval)
		c, err := read(rctx)
		cancel()
		if err != nil {
			log.Warn("could not re-read the join details; keeping the known ones", "error", err)
			continue
		}
		if old := load(); c != old {
			store(c)
			log.Info("join details changed", "join_api_address", c.APIAddress, "join_ca_hash", c.CAHash,
				"old_api_address", old.APIAddress, "old_ca_hash", old.CAHash)
		}
	}
}
