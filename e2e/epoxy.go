package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
)

// ePoxy v1.2.5 sends its two extensions to these servers (its
// storage.Extensions, with the project filled in).
const (
	EPoxyTokenServer = "token-server-platform-cluster.%s.measurementlab.net"
	EPoxyBMCServer   = "bmc-store-password-platform-cluster.%s.measurementlab.net"
	EPoxyTokenPort   = 8800
	EPoxyBMCPort     = 8801
)

// EPoxy is M-Lab's ePoxy boot server on loopback, against the Datastore
// emulator. It runs in a private mount namespace whose /etc/hosts resolves
// the two extension servers' names to one loopback address, so that the
// machine's own /etc/hosts is never touched.
type EPoxy struct {
	// URL is "http://127.0.0.1:PORT"; the kernel arguments it hands out name
	// it as https://127.0.0.1:PORT (its PUBLIC_HOSTNAME).
	URL string
	// Project is its Google Cloud project (GCLOUD_PROJECT).
	Project string
	// ExtensionIP is the loopback address the extension servers' names
	// resolve to: serve :8800 and :8801 there.
	ExtensionIP string

	binDir string
	env    []string
	log    string
	proc   *Process
}

// StartEPoxy starts epoxy_boot_server from binDir in project, talking to the
// Datastore emulator at emuHost, with its log and hosts file in dir.
// extensionIP is where the extension servers' names resolve. ePoxy also
// serves its own metrics on :9000, fixed, so only one runs at a time.
func StartEPoxy(binDir, emuHost, project, extensionIP, dir string) (*EPoxy, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	e := &EPoxy{
		URL:         "http://127.0.0.1:" + strconv.Itoa(port),
		Project:     project,
		ExtensionIP: extensionIP,
		binDir:      binDir,
		log:         filepath.Join(dir, "epoxy.log"),
		env:         []string{"DATASTORE_EMULATOR_HOST=" + emuHost, "GCLOUD_PROJECT=" + project},
	}
	hosts := filepath.Join(dir, "epoxy-hosts")
	content := fmt.Sprintf("127.0.0.1 localhost\n%s %s %s\n", extensionIP,
		fmt.Sprintf(EPoxyTokenServer, project), fmt.Sprintf(EPoxyBMCServer, project))
	if err := os.WriteFile(hosts, []byte(content), 0o644); err != nil {
		return nil, err
	}
	logPath := e.log
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	env := append(serverEnv(e.env), "GAE_SERVICE=default", "LISTEN=127.0.0.1", "PORT="+strconv.Itoa(port),
		"PUBLIC_HOSTNAME=127.0.0.1:"+strconv.Itoa(port))
	path, args := withPrivateMounts(hosts, "", filepath.Join(binDir, "epoxy_boot_server"), nil)
	if e.proc, err = startProcess("epoxy_boot_server", logFile, env, path, args...); err != nil {
		return nil, err
	}
	err = Poll(30*time.Second, 100*time.Millisecond, e.proc, func(ctx context.Context) error {
		return httpOK(ctx, http.DefaultClient, e.URL+"/_ah/health", "ok")
	})
	if err != nil {
		e.Stop()
		return nil, fmt.Errorf("epoxy_boot_server: %w\n%s", err, Tail(logPath, 20))
	}
	return e, nil
}

// RegisterAll registers every machine, coming from address, a few
// epoxy_admin runs at a time.
func (e *EPoxy) RegisterAll(ctx context.Context, machines []*Machine, address string) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for _, m := range machines {
		g.Go(func() error { return e.Register(ctx, m.Host, address) })
	}
	return g.Wait()
}

// Log returns what the boot server wrote so far.
func (e *EPoxy) Log() string {
	b, _ := os.ReadFile(e.log)
	return string(b)
}

// Stop stops the boot server.
func (e *EPoxy) Stop() {
	if e.proc != nil {
		e.proc.Stop(10 * time.Second)
	}
}

// Register registers a machine the way operators do, with epoxy_admin:
// ePoxy then serves it when its requests come from address.
func (e *EPoxy) Register(ctx context.Context, hostname, address string) error {
	cmd := exec.CommandContext(ctx, filepath.Join(e.binDir, "epoxy_admin"), "create",
		"--project", e.Project, "--hostname", hostname, "--address", address)
	cmd.Env = serverEnv(e.env)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("epoxy_admin create %s: %w\n%s", hostname, err, out)
	}
	return nil
}

// Machine is one simulated M-Lab machine booting through ePoxy: it runs the
// real curl with the lines of M-Lab's stage scripts.
type Machine struct {
	// Host is its name, BMC its BMC's.
	Host, BMC string
	// Nice, when positive, runs its curl at that lower CPU priority: in a
	// storm of a thousand machines on one small host, the machines' own
	// processes stand for CPUs that in the field are not the server's.
	Nice int
	// extensions are the URLs from its stage1 kernel arguments, by
	// operation, with http:// (ePoxy serves plain HTTP on loopback).
	extensions map[string]string
}

// NewMachine returns machine i of a series named by the letter prefix: a
// distinct M-Lab name (mlab1-4, site [a-z]{3}[0-9]{2}) in project.
func NewMachine(prefix byte, i int, project string) *Machine {
	site := fmt.Sprintf("%c%c%c%02d", prefix, 'a'+i/4/100%26, 'a'+i/4/2600%26, i/4%100)
	m := fmt.Sprintf("mlab%d", 1+i%4)
	return &Machine{
		Host: fmt.Sprintf("%s-%s.%s.measurement-lab.org", m, site, project),
		BMC:  fmt.Sprintf("%sd-%s.%s.measurement-lab.org", m, site, project),
	}
}

// Stage1 does what the machine's stage 1 does: POST stage1.json on ePoxy,
// and keep the extension URLs of the kernel arguments it answers.
func (m *Machine) Stage1(ctx context.Context, ep *EPoxy) error {
	out, err := m.curl(ctx, "--fail", "--silent", "--show-error", "-XPOST", ep.URL+"/v1/boot/"+m.Host+"/stage1.json")
	if err != nil {
		return fmt.Errorf("stage1.json for %s: %w", m.Host, err)
	}
	var cfg struct {
		Kargs map[string]string `json:"kargs"`
	}
	if err := json.Unmarshal([]byte(out), &cfg); err != nil {
		return fmt.Errorf("stage1.json for %s: %w: %q", m.Host, err, out)
	}
	m.extensions = map[string]string{}
	for _, op := range []string{"allocate_k8s_token", "bmc_store_password"} {
		u, ok := cfg.Kargs["epoxy."+op]
		if !ok {
			return fmt.Errorf("stage1.json for %s: no epoxy.%s among %v", m.Host, op, cfg.Kargs)
		}
		m.extensions[op] = strings.Replace(u, "https://", "http://", 1)
	}
	return nil
}

// Token runs setup_k8s.sh's line: curl --fail --silent --show-error -XPOST
// --data-binary "{}" $K8S_TOKEN_URL.
func (m *Machine) Token(ctx context.Context) (string, error) {
	return m.curl(ctx, "--fail", "--silent", "--show-error", "-XPOST", "--data-binary", "{}", m.extensions["allocate_k8s_token"])
}

// StorePassword runs rc.local's line: curl --fail --silent --show-error
// -XPOST --data-binary "{}" --write-out "%{http_code}" "$url?p=$password".
// query is what follows the URL ("?p=…", or "" for none).
func (m *Machine) StorePassword(ctx context.Context, query string) (string, error) {
	return m.curl(ctx, "--fail", "--silent", "--show-error", "-XPOST", "--data-binary", "{}",
		"--write-out", "%{http_code}", m.extensions["bmc_store_password"]+query)
}

// curl runs curl with args at the machine's priority.
func (m *Machine) curl(ctx context.Context, args ...string) (string, error) {
	return curlNice(ctx, m.Nice, args...)
}

// curlError is curl's exit status and what it wrote to stderr.
type curlError struct {
	Status int
	Stderr string
}

func (e *curlError) Error() string {
	return fmt.Sprintf("curl exited %d: %s", e.Status, strings.TrimSpace(e.Stderr))
}

// Curl runs the real curl with args and returns its stdout; a failed run
// returns a *curlError (CurlStatus reads it).
func Curl(ctx context.Context, args ...string) (string, error) {
	return curlNice(ctx, 0, args...)
}

// curlNice is Curl at CPU priority nice (0: unchanged), through nice(1).
func curlNice(ctx context.Context, nice int, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "curl", args...)
	if nice > 0 {
		cmd = exec.CommandContext(ctx, "nice", append([]string{"-n", strconv.Itoa(nice), "curl"}, args...)...)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return string(out), &curlError{exit.ExitCode(), stderr.String()}
	}
	if err != nil {
		return "", fmt.Errorf("curl: %w", err)
	}
	return string(out), nil
}

// CurlStatus returns curl's exit status and stderr from an error of Curl,
// or 0 and "" when err is nil.
func CurlStatus(err error) (int, string) {
	var c *curlError
	if errors.As(err, &c) {
		return c.Status, c.Stderr
	}
	return 0, ""
}
