#!/usr/bin/env bash
# Builds kube-apiserver, kubeadm and kubectl of one Kubernetes version from the
# k8s.io/kubernetes module on the Go module proxy, and caches them in a
# versioned folder so that later runs cost nothing. Prints the folder.
#
#   e2e/k8s-binaries.sh            # v1.34.4 into ~/.cache/epoxy-extensions/k8s/v1.34.4
#   K8S_VERSION=v1.34.4 K8S_CACHE=/some/dir e2e/k8s-binaries.sh
#
# k8s.io/kubernetes replaces its k8s.io/* staging modules with local folders that
# are not part of its module download, so the build happens in a throwaway
# module that requires k8s.io/kubernetes and points each staging module (listed
# as v0.0.0 in its go.mod) at the published v0.X.Y of the same release.
set -euo pipefail

version=${K8S_VERSION:-v1.34.4}
cache=${K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/epoxy-extensions/k8s}
dest="$cache/$version"
tools=(kube-apiserver kubeadm kubectl)

have_all() {
  for t in "${tools[@]}"; do [ -x "$dest/$t" ] || return 1; done
}
if have_all; then
  echo "$dest"
  exit 0
fi

staging=v0.${version#v1.}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0

modfile=$(go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/^\s*"GoMod": "\(.*\)",$/\1/p')
[ -f "$modfile" ] || { echo "k8s-binaries: cannot download k8s.io/kubernetes@$version" >&2; exit 1; }

{
  echo "module k8sbuild"
  echo
  echo "go $(sed -n 's/^go //p' "$modfile")"
  echo
  echo "require k8s.io/kubernetes $version"
  echo
  echo "replace ("
  grep -E '^\s+k8s\.io/[^ ]+ v0\.0\.0$' "$modfile" | awk -v v="$staging" '{print "\t" $1 " => " $1 " " v}'
  echo ")"
} > go.mod
printf 'package k8sbuild\n\nimport (\n\t_ "k8s.io/kubernetes/cmd/kube-apiserver/app"\n\t_ "k8s.io/kubernetes/cmd/kubeadm/app"\n\t_ "k8s.io/kubectl/pkg/cmd"\n)\n' > tools.go
go mod tidy >&2

mkdir -p "$dest.tmp"
for t in "${tools[@]}"; do
  echo "k8s-binaries: building $t $version" >&2
  go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$version -X k8s.io/client-go/pkg/version.gitVersion=$version" \
    -o "$dest.tmp/$t" "k8s.io/kubernetes/cmd/$t"
done
rm -rf "$dest"
mv "$dest.tmp" "$dest"
echo "$dest"
