package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/m-lab/epoxy-extensions/command"
	"github.com/m-lab/epoxy-extensions/handler"
	"github.com/m-lab/epoxy-extensions/identity"
	"github.com/m-lab/epoxy-extensions/kube"
	"github.com/m-lab/epoxy-extensions/runas"
)

// setUp checks what the Kubernetes backend needs before anything is served,
// so that a broken set-up stops the server at start with the cause named
// rather than failing every request: a known backend; the kubeconfig,
// resolved as kubeadm resolves it (exec) or as documented for api, and
// readable; with -run-as, the switch to that user, keeping a private copy of
// the kubeconfig; then, for exec, kubectl (the one program it runs)
// executable by the user the server now runs as. It sets cfg.Kubeconfig to the file every kubeadm
// and kubectl run and the API client use. An API server that does not answer
// yet is no error: /ready says so until it does.
func setUp(cfg *backendConfig, runAs string, log *slog.Logger) (runas.Dropped, error) {
	env := kube.ProcessEnv()
	explicit := cfg.Kubeconfig
	if explicit == env.Kubeconfig {
		// flagx set the flag from $KUBECONFIG: read that as kubeadm does
		// (a list, the first file that exists), not as one path.
		explicit = ""
	}
	var k kube.Kubeconfig
	switch cfg.Backend {
	case "exec":
		k = kube.ResolveForTools(explicit, env)
	case "api":
		k = kube.ResolveForAPI(explicit, env)
	default:
		return runas.Dropped{}, fmt.Errorf("-kube-backend %q: want exec or api", cfg.Backend)
	}
	if err := kube.CheckReadable(k); err != nil {
		return runas.Dropped{}, err
	}
	resolved := k.Path
	var dropped runas.Dropped
	if runAs != "" {
		u, err := runas.Parse(runAs)
		if err != nil {
			return runas.Dropped{}, err
		}
		var kubeconfig []byte
		if k.Path != "" {
			if kubeconfig, err = kube.Flatten(k.Path); err != nil {
				return runas.Dropped{}, err
			}
		}
		if dropped, err = runas.Drop(u, kubeconfig); err != nil {
			return runas.Dropped{}, err
		}
		if dropped.Dir != "" {
			// kubeadm and kubectl keep their caches in $HOME, which root's
			// may not let this user write.
			os.Setenv("HOME", dropped.Dir)
			log.Info("dropped root", "user", u.String(), "kubeconfig_copy", dropped.Kubeconfig)
		}
		if dropped.Kubeconfig != "" {
			k.Path = dropped.Kubeconfig
		}
	}
	// As the user the server now runs as: the copy (its folder is in
	// $TMPDIR, which that user must be able to reach), and the programs.
	err := kube.CheckReadable(k)
	if err == nil && cfg.Backend == "exec" {
		if err = command.Executable(cfg.BinDir, "kubectl"); err != nil {
			err = fmt.Errorf("-bin-dir %s must hold kubectl: %w", cfg.BinDir, err)
		}
	}
	if err != nil {
		dropped.Cleanup()
		return runas.Dropped{}, err
	}
	cfg.Kubeconfig = k.Path
	log.Info("kubeconfig", "path", resolved, "source", k.Source, "passed_as", k.Path,
		"kube_backend", cfg.Backend, "uid", os.Geteuid(), "gid", os.Getegid())
	return dropped, nil
}

// callerTrust reads -trusted-proxies and the instance identity flags: the
// callers that may speak for other machines (none named: all may), and the
// check of direct callers' identity (nil when not asked for).
func callerTrust(proxyList, audience, projectList string, log *slog.Logger) (handler.Sources, handler.IdentityVerifier, error) {
	var proxies handler.Sources
	if strings.TrimSpace(proxyList) != "" {
		var err error
		if proxies, err = handler.ParseSources(proxyList); err != nil {
			return nil, nil, fmt.Errorf("-trusted-proxies: %w", err)
		}
	}
	if proxies.AllowsAny() {
		log.Warn("-trusted-proxies is empty: every caller may act for any machine (store any BMC password, delete any Node but the control plane's)")
	}
	if audience == "" {
		return proxies, nil, nil
	}
	var projects []string
	for _, p := range strings.Split(projectList, ",") {
		if p = strings.TrimSpace(p); p != "" {
			projects = append(projects, p)
		}
	}
	if len(proxies) == 0 || len(projects) == 0 {
		return nil, nil, fmt.Errorf("-vm-identity-audience needs -trusted-proxies (else no caller is direct, and none is asked) and -vm-identity-projects")
	}
	v, err := identity.NewVerifier(context.Background(), audience, projects, nil)
	if err != nil {
		return nil, nil, err
	}
	log.Info("direct callers prove their identity", "audience", audience, "projects", projects)
	return proxies, v, nil
}
