package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
)

// stormSize is how many machines boot at once, as after a site-wide power cut.
const stormSize = 200

// TestBootStorm has many machines ask for a token at the same moment, with
// the server's default settings: every one gets its own working token,
// described with its own name.
func TestBootStorm(t *testing.T) {
	e := env(t)
	forEachBackend(t, func(t *testing.T, backend string) {
		testBootStorm(t, e, backend)
	})
}

func testBootStorm(t *testing.T, e *testEnv, backend string) {
	s := e.startServer(t, serverConfig{backend: backend})

	hosts := make([]string, stormSize)
	bodies := make([][]byte, stormSize)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("node-%03d.%s.example.org", i, backend)
		bodies[i] = extensionBody(t, hosts[i], "")
	}
	responses := make([]response, stormSize)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range hosts {
		wg.Go(func() {
			<-start
			var err error
			responses[i], err = send(http.MethodPost, s.URL+"/v2/allocate_k8s_token", bodies[i])
			if err != nil {
				t.Errorf("%s: %v", hosts[i], err)
			}
		})
	}
	close(start)
	wg.Wait()
	if t.Failed() {
		t.FailNow() // a transport error; the responses are incomplete
	}

	tokens := map[string]string{} // token → host
	ids := make([]string, stormSize)
	failures := 0
	for i, got := range responses {
		if got.status != http.StatusOK {
			failures++
			if failures <= 5 {
				t.Errorf("%s: status %d after %s, want 200", hosts[i], got.status, got.elapsed)
			}
			continue
		}
		var join struct {
			Token string `json:"token"`
		}
		if err := json.Unmarshal(got.body, &join); err != nil {
			t.Errorf("%s: body %q: %v", hosts[i], got.body, err)
			continue
		}
		m := tokenRE.FindStringSubmatch(join.Token)
		if m == nil {
			t.Errorf("%s: token %q, want ID.SECRET", hosts[i], join.Token)
			continue
		}
		if other, dup := tokens[join.Token]; dup {
			t.Errorf("%s and %s got the same token", other, hosts[i])
		}
		tokens[join.Token] = hosts[i]
		ids[i] = m[1]
	}
	if failures > 0 {
		t.Errorf("%d of %d machines got no token", failures, stormSize)
	}
	if len(tokens) != stormSize {
		t.Errorf("%d distinct tokens, want %d", len(tokens), stormSize)
	}

	secrets := bootstrapSecrets(t, e)
	for i, id := range ids {
		if id == "" {
			continue
		}
		sec, ok := secrets[id]
		if !ok {
			t.Errorf("%s: no Secret for its token %s", hosts[i], id)
			continue
		}
		if got := string(sec.Data["description"]); got != description(hosts[i]) {
			t.Errorf("%s: its token's description = %q, want %q", hosts[i], got, description(hosts[i]))
		}
	}
}
