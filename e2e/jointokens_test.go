package e2e

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"
)

// checkJoinTokens checks the answers to v2 token requests, hosts[i] having
// got responses[i]: every one is 200 with a well-formed token, no two tokens
// are the same, and each token's Secret, listed with one kubectl call,
// holds its secret and a description naming its own host.
func checkJoinTokens(t *testing.T, e *testEnv, hosts []string, responses []response) {
	t.Helper()
	const shown = 10 // failures reported one by one; the rest are counted
	failures := 0
	report := func(format string, args ...any) {
		t.Helper()
		if failures++; failures <= shown {
			t.Errorf(format, args...)
		}
	}
	tokens := map[string]string{} // token → host
	ids := make([]string, len(hosts))
	secretParts := make([]string, len(hosts))
	for i, got := range responses {
		if got.status != http.StatusOK {
			report("%s: status %d after %s, want 200", hosts[i], got.status, got.elapsed.Round(time.Millisecond))
			continue
		}
		var join struct {
			Token string `json:"token"`
		}
		if err := json.Unmarshal(got.body, &join); err != nil {
			report("%s: body %q: %v", hosts[i], got.body, err)
			continue
		}
		m := tokenRE.FindStringSubmatch(join.Token)
		if m == nil {
			report("%s: token %q, want ID.SECRET", hosts[i], join.Token)
			continue
		}
		if other, dup := tokens[join.Token]; dup {
			report("%s and %s got the same token", other, hosts[i])
		}
		tokens[join.Token] = hosts[i]
		ids[i], secretParts[i] = m[1], m[2]
	}
	if len(tokens) != len(hosts) {
		t.Errorf("%d distinct tokens, want %d", len(tokens), len(hosts))
	}

	secrets := bootstrapSecretsKubectl(t, e)
	for i, id := range ids {
		if id == "" {
			continue
		}
		sec, ok := secrets[id]
		if !ok {
			report("%s: no Secret bootstrap-token-%s for its token", hosts[i], id)
			continue
		}
		if got, want := string(sec.Data["description"]), description(hosts[i]); got != want {
			report("%s: its token's description = %q, want %q", hosts[i], got, want)
		}
		if string(sec.Data["token-secret"]) != secretParts[i] {
			report("%s: its Secret's token-secret differs from the token it got", hosts[i])
		}
	}
	if failures > shown {
		t.Errorf("... and %d more failures like these", failures-shown)
	}
}
