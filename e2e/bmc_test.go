package e2e

import (
	"context"
	"crypto/rand"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/datastore"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// The machine the BMC tests store credentials for, and what its BMC's name
// resolves to through the test's DNS server (-dns-server).
const (
	bmcMachine = "mlab1-lga01.mlab-sandbox.measurement-lab.org"
	bmcName    = "mlab1d-lga01.mlab-sandbox.measurement-lab.org"
	bmcProject = "mlab-sandbox"
	bmcAddress = "192.0.2.55"
)

// TestBMCStorePassword stores BMC passwords as stage 1 does and reads them
// back from the emulator the way the reboot service does.
func TestBMCStorePassword(t *testing.T) {
	parallel(t)
	e := env(t)
	s := e.startServer(t, serverConfig{hosts: map[string]string{bmcName: bmcAddress}})

	var passwords []string
	for _, name := range []string{"first store", "second store overwrites"} {
		t.Run(name, func(t *testing.T) {
			password := newPassword(t)
			passwords = append(passwords, password)
			got := post(t, s, "/v1/bmc_store_password", extensionBody(t, bmcMachine, "p="+password))
			if got.status != http.StatusOK || len(got.body) != 0 {
				t.Fatalf("got %d %q, want 200 and an empty body", got.status, got.body)
			}
			checkCredentials(t, e, password)
		})
	}
	log := s.Log()
	for i, p := range passwords {
		if strings.Contains(log, p) {
			t.Errorf("password %d appears in the server log", i+1)
		}
	}
}

// newPassword returns 20 characters of [A-Za-z0-9], like stage 1's.
func newPassword(t *testing.T) string {
	t.Helper()
	const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 20)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = alnum[int(b[i])%len(alnum)]
	}
	return string(b)
}

// loadCredentials reads the Credentials entity of the BMC named name from
// e's emulator.
func loadCredentials(t *testing.T, e *testEnv, project, name string) (datastore.PropertyList, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A new client each time: one kept across an emulator restart could
	// still be backing off from the outage. The options are those the
	// client takes from DATASTORE_EMULATOR_HOST, for the emulator of e,
	// which need not be the shared one.
	c, err := datastore.NewClient(ctx, project,
		option.WithEndpoint(e.emu.Host),
		option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	key := datastore.NameKey("Credentials", name, nil)
	key.Namespace = "reboot-api"
	var props datastore.PropertyList
	err = c.Get(ctx, key, &props)
	return props, err
}

// checkCredentials fails unless e's emulator holds exactly the entity the
// reboot service expects for the test BMC, with password.
func checkCredentials(t *testing.T, e *testEnv, password string) {
	t.Helper()
	checkCredentialsOf(t, e, bmcProject, bmcName, bmcAddress, password)
}

// checkCredentialsOf fails unless e's emulator holds, in project, exactly
// the entity the reboot service expects for the BMC name at address.
func checkCredentialsOf(t *testing.T, e *testEnv, project, name, address, password string) {
	t.Helper()
	props, err := loadCredentials(t, e, project, name)
	if err != nil {
		t.Fatalf("loading the credentials from Datastore: %v", err)
	}
	got := map[string]any{}
	for _, p := range props {
		if _, dup := got[p.Name]; dup {
			t.Errorf("property %q appears more than once", p.Name)
		}
		got[p.Name] = p.Value
	}
	want := map[string]any{
		"hostname": name,
		"username": "admin",
		"password": password,
		"model":    "DRAC",
		"address":  address,
	}
	if !maps.Equal(got, want) {
		// Never print the password itself.
		got["password"] = got["password"] == password
		want["password"] = true
		t.Errorf("stored properties = %v, want %v (password shown as whether it matched)", got, want)
	}
}
