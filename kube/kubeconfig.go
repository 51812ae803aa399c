package kube

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// AdminKubeconfig is where kubeadm writes the cluster admin's kubeconfig on
// a control-plane node, and where kubeadm looks last.
const AdminKubeconfig = "/etc/kubernetes/admin.conf"

// Env is what kubeconfig resolution reads of the process environment.
type Env struct {
	// Kubeconfig is $KUBECONFIG: one path or a list (filepath.SplitList).
	Kubeconfig string
	// Home is the user's home folder, for ~/.kube/config; empty when unknown.
	Home string
	// InCluster reports whether the process runs in a pod with a service
	// account (KUBERNETES_SERVICE_HOST and _PORT set).
	InCluster bool
}

// ProcessEnv returns the Env of this process.
func ProcessEnv() Env {
	home, _ := os.UserHomeDir()
	return Env{
		Kubeconfig: os.Getenv("KUBECONFIG"),
		Home:       home,
		InCluster:  os.Getenv("KUBERNETES_SERVICE_HOST") != "" && os.Getenv("KUBERNETES_SERVICE_PORT") != "",
	}
}

// Kubeconfig is a resolved kubeconfig: its path and where that came from,
// for the start-up log.
type Kubeconfig struct {
	// Path is the file; empty means the pod's service account (api only).
	Path string
	// Source is "flag", "KUBECONFIG", "home", "admin.conf" or "in-cluster".
	Source string
}

// exists is os.Stat, swapped in tests.
var exists = func(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// ResolveForTools finds the kubeconfig as kubeadm does (its
// GetKubeConfigPath, which kubectl's loading rules extend with admin.conf):
// the flag when set; else the first file of $KUBECONFIG that exists; else,
// without $KUBECONFIG, ~/.kube/config if it exists; else
// /etc/kubernetes/admin.conf if it exists; else the first candidate, which
// CheckReadable then reports as missing. The exec backend passes the path
// found explicitly to every kubeadm and kubectl run, so that both tools use
// the same file whatever their own defaults.
func ResolveForTools(flagValue string, env Env) Kubeconfig {
	if flagValue != "" {
		return Kubeconfig{flagValue, "flag"}
	}
	var candidates []Kubeconfig
	if env.Kubeconfig != "" {
		for _, p := range filepath.SplitList(env.Kubeconfig) {
			if p != "" {
				candidates = append(candidates, Kubeconfig{p, "KUBECONFIG"})
			}
		}
	} else if env.Home != "" {
		candidates = append(candidates, Kubeconfig{filepath.Join(env.Home, ".kube", "config"), "home"})
	}
	candidates = append(candidates, Kubeconfig{AdminKubeconfig, "admin.conf"})
	for _, c := range candidates {
		if exists(c.Path) {
			return c
		}
	}
	return candidates[0]
}

// ResolveForAPI finds the kubeconfig of the api backend: the flag; else
// the first file of $KUBECONFIG that exists (the first one when none does);
// else the pod's service account when in a pod; else
// /etc/kubernetes/admin.conf.
func ResolveForAPI(flagValue string, env Env) Kubeconfig {
	if flagValue != "" {
		return Kubeconfig{flagValue, "flag"}
	}
	if env.Kubeconfig != "" {
		paths := filepath.SplitList(env.Kubeconfig)
		for _, p := range paths {
			if p != "" && exists(p) {
				return Kubeconfig{p, "KUBECONFIG"}
			}
		}
		for _, p := range paths {
			if p != "" {
				return Kubeconfig{p, "KUBECONFIG"}
			}
		}
	}
	if env.InCluster {
		return Kubeconfig{"", "in-cluster"}
	}
	return Kubeconfig{AdminKubeconfig, "admin.conf"}
}

// CheckReadable returns an error naming the path, the user this process runs
// as and the fix, unless the kubeconfig k (when it is a file) can be read.
func CheckReadable(k Kubeconfig) error {
	if k.Path == "" {
		return nil
	}
	f, err := os.Open(k.Path)
	if err == nil {
		return f.Close()
	}
	who := fmt.Sprintf("uid %d, gid %d", os.Geteuid(), os.Getegid())
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("kubeconfig %s (from %s) does not exist: give -kubeconfig or $KUBECONFIG, "+
			"or run on a control-plane node, where kubeadm writes %s: %w", k.Path, k.Source, AdminKubeconfig, err)
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("kubeconfig %s (from %s) is not readable by this server, running as %s: run it as "+
			"root (M-Lab's unit does; with -run-as it then drops to an unprivileged user after reading the file), "+
			"or give it a kubeconfig that user may read: %w", k.Path, k.Source, who, err)
	}
	return fmt.Errorf("kubeconfig %s (from %s), as %s: %w", k.Path, k.Source, who, err)
}

// Flatten returns the kubeconfig at path with every file it refers to
// (certificates, keys, CA) embedded, so that it still works once copied
// where those files cannot be read.
func Flatten(path string) ([]byte, error) {
	cfg, err := clientcmd.LoadFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading kubeconfig %s: %w", path, err)
	}
	if err := clientcmdapi.FlattenConfig(cfg); err != nil {
		return nil, fmt.Errorf("embedding the files kubeconfig %s refers to: %w", path, err)
	}
	b, err := clientcmd.Write(*cfg)
	if err != nil {
		return nil, fmt.Errorf("writing kubeconfig %s: %w", path, err)
	}
	return b, nil
}
