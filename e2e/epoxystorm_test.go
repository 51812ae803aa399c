package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/m-lab/epoxy-extensions/loadtest/storm"
)

// stormSize is how many machines boot at once, as after a site-wide power
// cut.
const stormSize = 200

// TestEPoxyBootStorm: stormSize machines boot at once through the real
// ePoxy boot server, each doing what an M-Lab machine does (stage1.json,
// then the token and BMC curl lines through ePoxy), on both backends. Every
// machine gets its own token (none crosses hosts), every token
// authenticates, every BMC entity reads back as the reboot service reads
// it, and no password or token reaches the server's log.
func TestEPoxyBootStorm(t *testing.T) {
	// Registering the machines, one epoxy_admin run each, mostly waits on
	// the Datastore emulator: it runs beside every other test, the storm
	// alone after it.
	waiting(t)
	_, ep := epoxyBootServer(t)
	machines := map[string][]*Machine{}
	bmcs := map[string]map[string]string{}
	var all []*Machine
	for _, backend := range kubeBackends {
		prefix := map[string]byte{"exec": 'x', "api": 'y'}[backend]
		bmcs[backend] = map[string]string{}
		for i := range stormSize {
			m := NewMachine(prefix, i, bmcProject)
			machines[backend] = append(machines[backend], m)
			bmcs[backend][m.BMC] = fmt.Sprintf("192.0.2.%d", 1+i%250)
		}
		all = append(all, machines[backend]...)
	}
	regCtx, regCancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer regCancel()
	if err := ep.RegisterAll(regCtx, all, "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	stormAlone(t)
	e, ep := epoxyEnv(t)
	forEachBackend(t, func(t *testing.T, backend string) {
		machines, bmcs := machines[backend], bmcs[backend]
		s := epoxyServer(t, e, backend, bmcs)

		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		tokens := make([]string, len(machines))
		passwords := make([]string, len(machines))
		for i := range passwords {
			passwords[i] = newPassword(t)
		}
		wall := storm.Release(len(machines), func(i int) {
			m := machines[i]
			if err := m.Stage1(ctx, ep); err != nil {
				t.Error(err)
				return
			}
			tok, err := m.Token(ctx)
			if err != nil {
				t.Errorf("%s: token: %v", m.Host, err)
				return
			}
			tokens[i] = strings.TrimSpace(tok)
			if code, err := m.StorePassword(ctx, "?p="+passwords[i]); err != nil || code != "200" {
				t.Errorf("%s: BMC store: %q, %v", m.Host, code, err)
			}
		})
		t.Logf("%d machines through ePoxy, %s backend: %s", len(machines), backend, wall.Round(time.Millisecond))
		if t.Failed() {
			t.FailNow()
		}

		secrets := bootstrapSecrets(t, e)
		seen := map[string]bool{}
		crossing := 0
		for i, m := range machines {
			match := bareToken.FindStringSubmatch(tokens[i])
			if match == nil {
				t.Fatalf("%s: answer %q is not a bare token", m.Host, tokens[i])
			}
			if seen[tokens[i]] {
				t.Errorf("%s: token %s.… was handed out twice", m.Host, match[1])
			}
			seen[tokens[i]] = true
			sec, ok := secrets[match[1]]
			if !ok {
				t.Errorf("%s: no Secret for token %s.…", m.Host, match[1])
				continue
			}
			if string(sec.Data["description"]) != description(m.Host) || string(sec.Data["token-secret"]) != strings.SplitN(tokens[i], ".", 2)[1] {
				crossing++
			}
			checkAuthenticates(t, e, tokens[i], match[1])
			checkCredentialsOf(t, e, bmcProject, m.BMC, bmcs[m.BMC], passwords[i])
		}
		if crossing > 0 {
			t.Errorf("%d tokens' Secrets name another machine or hold another secret", crossing)
		}
		log := s.Log()
		for i := range machines {
			if strings.Contains(log, passwords[i]) || strings.Contains(log, tokens[i]) {
				t.Fatalf("the server's log holds machine %d's password or token", i)
			}
		}
	})
}
