# One command runs the server, one runs every test. See README.md.
GO ?= go
K8S_VERSION ?= v1.34.4

.PHONY: build run test lint unit e2e k8s-binaries dev

build:
	$(GO) build -o epoxy-extensions .

# The production command line, with the defaults spelled out.
run: build
	./epoxy-extensions -listen-address=:8800 -bin-dir=/usr/bin

# Every check CI runs: formatting, vet, and all tests (unit and end-to-end
# against a real Datastore emulator, etcd, kube-apiserver, kubeadm, kubectl)
# under the race detector.
test: lint
	K8S_BIN_DIR="$$(K8S_VERSION=$(K8S_VERSION) e2e/k8s-binaries.sh)" \
		$(GO) test -race -count=1 -timeout 60m ./...

lint:
	@out="$$(gofmt -l .)"; if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Unit tests alone: seconds, no external components.
unit:
	$(GO) test -race -short ./...

k8s-binaries:
	K8S_VERSION=$(K8S_VERSION) e2e/k8s-binaries.sh
