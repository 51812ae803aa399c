// Command devstack is what `make run` runs: epoxy-extensions on loopback
// against real components, owned by this one process. It starts etcd and
// kube-apiserver (with certificates made fresh for the run), the Cloud
// Datastore emulator, a DNS server that resolves the sandbox BMC name (so
// that neither root nor the machine's /etc/hosts is needed), and the server
// built from this repository with the real kubectl. It creates a
// Node to delete, waits until the server's /ready says a token request would
// succeed, prints a ready-to-paste command line for every endpoint, streams
// the server's log to stderr, and on Ctrl-C or SIGTERM stops everything and
// removes its temporary folder.
//
//	make run
//	go run ./e2e/devstack [-listen-address 127.0.0.1:8800] [-server BINARY] [-- server flags...]
//
// Flags after "--" are passed to the server as they are, for example
// `go run ./e2e/devstack -- -max-tokens-per-host 0 -allowed-sources 127.0.0.0/8`,
// or `-- -kube-backend api` for the in-process Kubernetes backend.
// etcd, kube-apiserver and kubeadm come from $K8S_BIN_DIR, or are built from
// the Go module proxy on first use (minutes) and cached; kubectl, the
// emulator and Java come with the machine image.
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/m-lab/epoxy-extensions/e2e"
	"github.com/m-lab/epoxy-extensions/e2e/components"
)

// The machine the printed requests speak for, its BMC's name, and the
// address the server's private /etc/hosts gives that name.
const (
	machine    = "mlab1-lga01.mlab-sandbox.measurement-lab.org"
	bmcName    = "mlab1d-lga01.mlab-sandbox.measurement-lab.org"
	bmcProject = "mlab-sandbox"
	bmcAddress = "192.0.2.55"
)

var (
	listenAddress = flag.String("listen-address", "127.0.0.1:8800", "Address the server listens on; devstack fails if it is taken.")
	serverBinary  = flag.String("server", "", "Server binary to run; empty builds it from this repository.")
)

func main() {
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: %s [-listen-address ADDR] [-server BINARY] [-- server flags...]\n", os.Args[0])
		flag.PrintDefaults()
	}
	flag.Parse()
	os.Exit(run(flag.Args()))
}

// stack is what devstack started; close stops whatever of it runs.
type stack struct {
	dir    string
	cp     *e2e.ControlPlane
	emu    *e2e.Emulator
	dns    *e2e.DNSServer
	server *e2e.Server
}

func run(serverFlags []string) int {
	// Ctrl-C in a terminal reaches every process of the foreground group;
	// the components run in their own groups, so devstack alone gets it and
	// stops them in order.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// Fail before minutes of startup if the port is taken.
	ln, err := net.Listen("tcp", *listenAddress)
	if err != nil {
		return fail(fmt.Errorf("cannot listen on %s: %w\n(is another `make dev` or epoxy-extensions running? choose another address with -listen-address)", *listenAddress, err))
	}
	ln.Close()

	begin := time.Now()
	st, err := start(ctx, serverFlags)
	if st != nil {
		defer st.close()
	}
	if ctx.Err() != nil { // interrupted while starting
		return 0
	}
	if err != nil {
		return fail(err)
	}
	fmt.Fprintf(os.Stderr, "devstack: ready in %s: epoxy-extensions at %s, /ready answers 200\n", time.Since(begin).Round(100*time.Millisecond), st.server.URL)
	printUsage(os.Stdout, st)

	select {
	case <-ctx.Done():
		stop() // a second Ctrl-C kills devstack at once; its children die with it
		fmt.Fprintln(os.Stderr, "devstack: stopping (Ctrl-C again to kill at once)")
		return 0
	case <-st.server.Exited():
		return fail(fmt.Errorf("the server exited on its own: %v", st.server.Wait(0)))
	}
}

func fail(err error) int {
	fmt.Fprintf(os.Stderr, "devstack: %v\n", err)
	return 1
}

// start starts the components, builds and starts the server against them,
// creates the Node, and waits until the server is ready. It returns what it
// started even on error, to close.
func start(ctx context.Context, serverFlags []string) (*stack, error) {
	if err := components.Check(components.Emulator, components.Java, components.Kubectl); err != nil {
		return nil, fmt.Errorf("the machine lacks what the image should ship:\n%w", err)
	}
	root := ""
	if *serverBinary == "" {
		var err error
		if root, err = e2e.ModuleRoot(); err != nil {
			return nil, fmt.Errorf("%w (run devstack from the repository, or give -server)", err)
		}
	}
	binDir, err := e2e.K8sBinDir(ctx)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "epoxy-devstack-")
	if err != nil {
		return nil, err
	}
	st := &stack{dir: dir}
	fmt.Fprintf(os.Stderr, "devstack: starting etcd, kube-apiserver and the Datastore emulator, building the server (logs in %s)\n", dir)

	// Each takes seconds: do them at once.
	var (
		cpErr, emuErr, buildErr error
		binary                  = *serverBinary
		wg                      sync.WaitGroup
	)
	wg.Go(func() { st.cp, cpErr = e2e.StartControlPlane(binDir, dir) })
	wg.Go(func() { st.emu, emuErr = e2e.StartEmulator(filepath.Join(dir, "datastore-emulator.log")) })
	if binary == "" {
		wg.Go(func() { binary, buildErr = e2e.BuildServer(root, dir, false) })
	}
	wg.Wait()
	if err := errors.Join(cpErr, emuErr, buildErr); err != nil {
		return st, err
	}
	if err := createNode(st.cp, machine); err != nil {
		return st, err
	}
	// The server asks this DNS server, and only it, for BMC addresses.
	if st.dns, err = e2e.StartDNS(map[string]string{bmcName: bmcAddress}); err != nil {
		return st, err
	}
	opts := e2e.ServerOptions{
		Binary: binary,
		Addr:   *listenAddress,
		Args: append([]string{"-bin-dir", binDir, "-kubeconfig", st.cp.Kubeconfig, "-dns-server", st.dns.Addr},
			serverFlags...),
		Env:    []string{"DATASTORE_EMULATOR_HOST=" + st.emu.Host},
		Output: os.Stderr,
	}
	if st.server, err = e2e.StartServer(opts); err != nil {
		return st, err
	}
	return st, st.server.WaitReady(ctx, 60*time.Second)
}

// createNode makes a Node object, with no kubelet behind it, for the node
// delete request to remove.
func createNode(cp *e2e.ControlPlane, name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	node := map[string]any{"apiVersion": "v1", "kind": "Node", "metadata": map[string]string{"name": name}}
	status, body, err := cp.API.Do(ctx, http.MethodPost, "/api/v1/nodes", node)
	if err != nil {
		return fmt.Errorf("creating node %s: %w", name, err)
	}
	if status != http.StatusCreated {
		return fmt.Errorf("creating node %s: %d %s", name, status, body)
	}
	return nil
}

// close stops the server (letting it drain), then the components, and
// removes the temporary folder.
func (st *stack) close() {
	if st.server != nil {
		if err := st.server.Stop(15 * time.Second); err != nil {
			fmt.Fprintf(os.Stderr, "devstack: %v\n", err)
		}
	}
	if st.dns != nil {
		st.dns.Close()
	}
	var wg sync.WaitGroup
	if st.cp != nil {
		wg.Go(st.cp.Close)
	}
	if st.emu != nil {
		wg.Go(st.emu.Stop)
	}
	wg.Wait()
	if err := os.RemoveAll(st.dir); err != nil {
		fmt.Fprintf(os.Stderr, "devstack: %v\n", err)
		return
	}
	fmt.Fprintf(os.Stderr, "devstack: stopped everything and removed %s\n", st.dir)
}

// now is the shell's current UTC time: a pasted line may run minutes after
// devstack printed it, and last_boot must stay recent.
const now = `$(date -u +%Y-%m-%dT%H:%M:%SZ)`

// body returns an extension request for host as a single-quoted shell word,
// with the current time spliced in by the shell.
func body(host, rawQuery string) string {
	b := `'{"v1":{"hostname":"` + host + `","last_boot":"'"` + now + `"'"`
	if rawQuery != "" {
		b += `,"raw_query":"` + rawQuery + `"`
	}
	return b + `}}'`
}

// printUsage writes a command line for every endpoint, and the commands
// that show their effects.
func printUsage(w io.Writer, st *stack) {
	url := st.server.URL
	kubectl := quote(filepath.Join(st.cp.BinDir, "kubectl")) + " --kubeconfig " + quote(st.cp.Kubeconfig)
	status := `-w '\nHTTP %{http_code}\n'`
	post := func(path, body string) string {
		return "curl -sS " + status + " -XPOST --data-binary " + body + " " + url + path
	}
	password := newPassword()
	lookup := fmt.Sprintf(`'{"keys":[{"partitionId":{"projectId":"%s","namespaceId":"reboot-api"},"path":[{"kind":"Credentials","name":"%s"}]}]}'`,
		bmcProject, bmcName)

	lines := []struct{ comment, cmd string }{
		{"liveness", "curl -sS " + status + " " + url + "/"},
		{"readiness: 200 when a token request would succeed", "curl -sS " + status + " " + url + "/ready"},
		{"metrics", "curl -sS " + url + "/metrics | grep -E '^(epoxy_extensions|allocate_k8s_token|bmc_store_password|node_request)_' | head -n 30"},
		{"v1 token: the bare token", post("/v1/allocate_k8s_token", body(machine, ""))},
		{"v2 token: api_address, token, ca_hash", post("/v2/allocate_k8s_token", body(machine, ""))},
		{"BMC password (stage 1 sends it as raw_query p=...)", post("/v1/bmc_store_password", body(machine, "p="+password))},
		{"delete the Node " + machine, post("/v1/node/delete", body(machine, ""))},
		{"the bootstrap-token Secrets the token requests made", kubectl + " get secrets -n kube-system"},
		{"the Nodes (" + machine + " until deleted)", kubectl + " get nodes"},
		{"the stored BMC credentials, from the Datastore emulator's REST API", "curl -sS -XPOST -H 'Content-Type: application/json' --data-binary " + lookup +
			" http://" + st.emu.Host + "/v1/projects/" + bmcProject + ":lookup"},
	}
	fmt.Fprintf(w, "\n# epoxy-extensions is serving at %s (log on stderr). Paste any of these; Ctrl-C here stops everything.\n", url)
	for _, l := range lines {
		fmt.Fprintf(w, "\n# %s\n%s\n", l.comment, l.cmd)
	}
	fmt.Fprintf(w, "\n# component logs: %s/{etcd,kube-apiserver,datastore-emulator}.log\n\n", st.dir)
}

// newPassword returns 20 characters of [A-Za-z0-9], like stage 1's.
func newPassword() string {
	const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 20)
	rand.Read(b) // never fails
	for i := range b {
		b[i] = alnum[int(b[i])%len(alnum)]
	}
	return string(b)
}

// quote returns s as one shell word.
func quote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=@%+,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
