package components

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// KubernetesVersion is the Kubernetes release the tests and the local stack
// run: kube-apiserver and kubeadm of this version, and the etcd release it
// requires.
const KubernetesVersion = "v1.34.4"

// Kubernetes returns the spec of kube-apiserver and kubeadm of version
// (v1.X.Y), and etcd at the version that k8s.io/kubernetes requires of
// go.etcd.io/etcd, built together from the k8s.io/kubernetes module. The
// folder also holds a link named kubectl to the image's kubectl (M-Lab runs
// kubectl v1.32 against v1.34 control planes too).
//
// k8s.io/kubernetes replaces its k8s.io/* staging modules with folders that
// its module download lacks, so the throwaway module requires it and points
// each staging module (v0.0.0 in its go.mod) at the published v0.X.Y of the
// same release.
func Kubernetes(version string) Spec {
	return Spec{
		Name:    "kubernetes",
		Version: version,
		Programs: map[string]string{
			"kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
			"kubeadm":        "k8s.io/kubernetes/cmd/kubeadm",
			"etcd":           "go.etcd.io/etcd/server/v3",
		},
		Expect:  7 * time.Minute,
		LDFlags: "-X k8s.io/component-base/version.gitVersion=" + version + " -X k8s.io/client-go/pkg/version.gitVersion=" + version,
		Module: func(ctx context.Context, work string) (string, error) {
			modfile, err := downloadGoMod(ctx, work, "k8s.io/kubernetes", version)
			if err != nil {
				return "", err
			}
			return kubernetesGoMod(modfile, version)
		},
		Finish: func(dir string) error {
			kubectl, err := Kubectl.Find()
			if err != nil {
				return err
			}
			return os.Symlink(kubectl, filepath.Join(dir, "kubectl"))
		},
	}
}

// staging matches a k8s.io staging module that k8s.io/kubernetes requires
// at v0.0.0 (and replaces with a local folder).
var staging = regexp.MustCompile(`(?m)^\s+(k8s\.io/[^ ]+) v0\.0\.0$`)

// etcdClient matches k8s.io/kubernetes's requirement of the etcd client.
var etcdClient = regexp.MustCompile(`(?m)^\s+go\.etcd\.io/etcd/client/v3 (v3\.[0-9.]+)\b`)

// goVersion matches the go directive.
var goVersion = regexp.MustCompile(`(?m)^go ([0-9.]+)$`)

// kubernetesGoMod returns the throwaway module's go.mod, given
// k8s.io/kubernetes's own.
func kubernetesGoMod(modfile []byte, version string) (string, error) {
	stagingVersion := "v0." + strings.TrimPrefix(version, "v1.")
	etcd := etcdClient.FindSubmatch(modfile)
	goV := goVersion.FindSubmatch(modfile)
	mods := staging.FindAllSubmatch(modfile, -1)
	if etcd == nil || goV == nil || len(mods) == 0 {
		return "", fmt.Errorf("k8s.io/kubernetes@%s: go.mod lacks the go version, the etcd client or the staging modules", version)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "module components/kubernetes\n\ngo %s\n\nrequire (\n\tk8s.io/kubernetes %s\n\tgo.etcd.io/etcd/server/v3 %s\n)\n\nreplace (\n",
		goV[1], version, etcd[1])
	for _, m := range mods {
		fmt.Fprintf(&b, "\t%s => %s %s\n", m[1], m[1], stagingVersion)
	}
	b.WriteString(")\n")
	return b.String(), nil
}

// downloadGoMod fetches module@version's go.mod through the module proxy.
func downloadGoMod(ctx context.Context, work, module, version string) ([]byte, error) {
	out, err := goCmd(ctx, work, "mod", "download", "-json", module+"@"+version)
	if err != nil {
		return nil, err
	}
	var info struct{ GoMod, Error string }
	if err := json.Unmarshal(out, &info); err != nil {
		return nil, fmt.Errorf("go mod download %s@%s: %w", module, version, err)
	}
	if info.Error != "" || info.GoMod == "" {
		return nil, fmt.Errorf("go mod download %s@%s: %s", module, version, info.Error)
	}
	return os.ReadFile(info.GoMod)
}
