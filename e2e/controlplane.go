package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ControlPlane is a one-member etcd and a kube-apiserver on loopback, with an
// admin kubeconfig for kubeadm and kubectl.
type ControlPlane struct {
	// BinDir holds etcd, kube-apiserver, kubeadm and kubectl (K8sBinDir).
	BinDir string
	// PKI holds the cluster's certificates.
	PKI *PKI
	// API is the API server.
	API *APIServer
	// Kubeconfig is the admin kubeconfig file.
	Kubeconfig string

	etcd *Process
}

// StartControlPlane starts etcd and kube-apiserver with binaries from
// binDir and state in dir, and waits until the API server is ready.
func StartControlPlane(binDir, dir string) (_ *ControlPlane, err error) {
	c := &ControlPlane{BinDir: binDir}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	if c.PKI, err = NewPKI(dir); err != nil {
		return nil, fmt.Errorf("certificates: %w", err)
	}
	etcdURL, err := c.startEtcd(dir)
	if err != nil {
		return nil, err
	}
	apiPort, err := FreePort()
	if err != nil {
		return nil, err
	}
	c.API = &APIServer{
		Addr:    fmt.Sprintf("127.0.0.1:%d", apiPort),
		PKI:     c.PKI,
		path:    filepath.Join(binDir, "kube-apiserver"),
		log:     filepath.Join(dir, "kube-apiserver.log"),
		clients: map[bool]*http.Client{},
		args: []string{
			"--etcd-servers=" + etcdURL,
			"--bind-address=127.0.0.1",
			"--advertise-address=127.0.0.1",
			"--secure-port=" + strconv.Itoa(apiPort),
			"--tls-cert-file=" + c.PKI.ServingCertFile,
			"--tls-private-key-file=" + c.PKI.ServingKeyFile,
			"--client-ca-file=" + c.PKI.CAFile,
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--service-account-key-file=" + c.PKI.SAPublicFile,
			"--service-account-signing-key-file=" + c.PKI.SAPrivateFile,
			"--service-cluster-ip-range=10.96.0.0/12",
			"--authorization-mode=Node,RBAC",
			"--enable-bootstrap-token-auth",
			"--cert-dir=" + filepath.Join(dir, "apiserver-certs"),
		},
	}
	for _, admin := range []bool{true, false} {
		cfg, err := c.PKI.TLSConfig(admin)
		if err != nil {
			return nil, err
		}
		c.API.clients[admin] = newClient(cfg)
	}
	if err := c.API.Start(); err != nil {
		return nil, err
	}
	// kubeadm token create needs nothing more: it takes the join command's
	// address and CA from this file, and no cluster-info ConfigMap.
	kubeconfig, err := c.PKI.Kubeconfig(c.API.URL())
	if err != nil {
		return nil, err
	}
	c.Kubeconfig = filepath.Join(dir, "admin.conf")
	if err := os.WriteFile(c.Kubeconfig, kubeconfig, 0o600); err != nil {
		return nil, err
	}
	return c, nil
}

// startEtcd starts a one-member etcd with its data in dir, and returns its
// client URL once it is healthy.
func (c *ControlPlane) startEtcd(dir string) (string, error) {
	clientPort, err := FreePort()
	if err != nil {
		return "", err
	}
	peerPort, err := FreePort()
	if err != nil {
		return "", err
	}
	clientURL := fmt.Sprintf("http://127.0.0.1:%d", clientPort)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
	logPath := filepath.Join(dir, "etcd.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return "", err
	}
	defer logFile.Close() // the child keeps its own descriptor
	c.etcd, err = StartProcess("etcd", logFile, nil, filepath.Join(c.BinDir, "etcd"),
		"--name=e2e", "--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+clientURL, "--advertise-client-urls="+clientURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=e2e="+peerURL)
	if err != nil {
		return "", err
	}
	err = Poll(30*time.Second, 100*time.Millisecond, c.etcd, func(ctx context.Context) error {
		return httpOK(ctx, http.DefaultClient, clientURL+"/health", `"health":"true"`)
	})
	if err != nil {
		return "", fmt.Errorf("etcd: %w\n%s", err, Tail(logPath, 20))
	}
	return clientURL, nil
}

// Close stops the API server and etcd.
func (c *ControlPlane) Close() {
	if c.API != nil {
		c.API.Stop()
	}
	if c.etcd != nil {
		c.etcd.Stop(10 * time.Second)
	}
}

// Kubectl runs kubectl with the admin kubeconfig and returns its combined output.
func (c *ControlPlane) Kubectl(ctx context.Context, args ...string) ([]byte, error) {
	args = append([]string{"--kubeconfig", c.Kubeconfig}, args...)
	return exec.CommandContext(ctx, filepath.Join(c.BinDir, "kubectl"), args...).CombinedOutput()
}

// Kubeadm runs kubeadm with the admin kubeconfig and returns its stdout.
func (c *ControlPlane) Kubeadm(ctx context.Context, args ...string) ([]byte, error) {
	args = append(args, "--kubeconfig", c.Kubeconfig)
	return exec.CommandContext(ctx, filepath.Join(c.BinDir, "kubeadm"), args...).Output()
}

// APIServer is a kube-apiserver that can be stopped and started again on
// the same address, to test what happens while it is away.
type APIServer struct {
	// Addr is "127.0.0.1:PORT".
	Addr string
	// PKI holds the certificates it serves and trusts.
	PKI *PKI

	path, log string
	args      []string
	clients   map[bool]*http.Client // by admin

	mu   sync.Mutex
	proc *Process
}

// URL returns "https://127.0.0.1:PORT".
func (a *APIServer) URL() string { return "https://" + a.Addr }

// Start starts the API server (again) and waits until /readyz answers ok
// and the system namespaces exist.
func (a *APIServer) Start() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.proc != nil {
		return errors.New("kube-apiserver already running")
	}
	logFile, err := os.OpenFile(a.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close()
	if a.proc, err = StartProcess("kube-apiserver", logFile, nil, a.path, a.args...); err != nil {
		return err
	}
	client := a.Client(true)
	err = Poll(90*time.Second, 250*time.Millisecond, a.proc, func(ctx context.Context) error {
		if err := httpOK(ctx, client, a.URL()+"/readyz", "ok"); err != nil {
			return err
		}
		for _, ns := range []string{"kube-system", "kube-public"} {
			if err := httpOK(ctx, client, a.URL()+"/api/v1/namespaces/"+ns, ""); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		a.proc.Stop(10 * time.Second)
		a.proc = nil
		return fmt.Errorf("kube-apiserver: %w\n%s", err, Tail(a.log, 30))
	}
	return nil
}

// Running reports whether it was started and not stopped since.
func (a *APIServer) Running() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.proc != nil
}

// Stop stops the API server; it can be started again with Start.
func (a *APIServer) Stop() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.proc != nil {
		a.proc.Stop(15 * time.Second)
		a.proc = nil
	}
}

// Client returns an HTTPS client that trusts the cluster CA and, when admin
// is true, presents the admin (system:masters) certificate.
func (a *APIServer) Client(admin bool) *http.Client { return a.clients[admin] }

func newClient(cfg *tls.Config) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig:     cfg,
		MaxIdleConnsPerHost: 16,
	}}
}

// Do sends a request with body in (JSON-encoded unless nil) to path on the
// API server as admin, and returns the status code and response body.
func (a *APIServer) Do(ctx context.Context, method, path string, in any) (int, []byte, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.URL()+path, body)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := a.Client(true).Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	return resp.StatusCode, out, err
}

// httpOK returns nil when GET url answers 200 with a body containing want.
func httpOK(ctx context.Context, client *http.Client, url, want string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
		return fmt.Errorf("GET %s: %s %q", url, resp.Status, body)
	}
	return nil
}
