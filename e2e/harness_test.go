package e2e

import (
	"context"
	"regexp"
	"testing"
	"time"

	"cloud.google.com/go/datastore"
)

// TestHarness checks the components themselves, without the server: if
// these fail, every other failure in the package is suspect.
func TestHarness(t *testing.T) {
	parallel(t)
	e := env(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	t.Run("kubeadm token create prints a join command", func(t *testing.T) {
		out, err := e.cp.Kubeadm(ctx, "token", "create", "--ttl", "1m", "--print-join-command", "--description", description("harness"))
		if err != nil {
			t.Fatalf("kubeadm token create: %v", err)
		}
		re := regexp.MustCompile(`^kubeadm join (\S+) --token ([a-z0-9]{6})\.([a-z0-9]{16}) --discovery-token-ca-cert-hash (\S+) ?\n$`)
		m := re.FindStringSubmatch(string(out))
		if m == nil {
			t.Fatalf("kubeadm printed %q, want a join command", out)
		}
		if m[1] != e.cp.API.Addr {
			t.Errorf("API address = %q, want %q", m[1], e.cp.API.Addr)
		}
		if want := e.cp.PKI.CAHash(); m[4] != want {
			t.Errorf("CA hash = %q, want %q", m[4], want)
		}
		s := bootstrapSecret(t, e, m[2])
		if got := string(s.Data["description"]); got != description("harness") {
			t.Errorf("description = %q, want %q", got, description("harness"))
		}
		checkAuthenticates(t, e, m[2]+"."+m[3], m[2])
	})

	t.Run("kubectl delete node", func(t *testing.T) {
		const name = "harness-node.example.org"
		createNode(t, e, name)
		if !nodeExists(t, e, name) {
			t.Fatal("node missing right after creation")
		}
		out, err := e.cp.Kubectl(ctx, "delete", "node", "--", name)
		if err != nil {
			t.Fatalf("kubectl delete node: %v: %s", err, out)
		}
		if nodeExists(t, e, name) {
			t.Error("node still exists after kubectl delete")
		}
	})

	t.Run("emulator stores and loads", func(t *testing.T) {
		c, err := datastore.NewClient(ctx, "harness-project")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		key := datastore.NameKey("Harness", "one", nil)
		key.Namespace = "harness"
		in := datastore.PropertyList{{Name: "value", Value: "stored"}}
		if _, err := c.Put(ctx, key, &in); err != nil {
			t.Fatalf("Put: %v", err)
		}
		var out datastore.PropertyList
		if err := c.Get(ctx, key, &out); err != nil {
			t.Fatalf("Get: %v", err)
		}
		if len(out) != 1 || out[0].Name != "value" || out[0].Value != "stored" {
			t.Errorf("Get = %+v, want %+v", out, in)
		}
	})

}
