# One command runs the server, one runs every test. See README.md.
GO ?= go
K8S_VERSION ?= v1.34.4

# A count, not a duration: time-bounded fuzz runs can end in a spurious
# "context deadline exceeded" failure (golang/go#75804).
FUZZTIME ?= 50000x
# package:target pairs run by `make fuzz`.
FUZZ_TARGETS = handler:FuzzExtensionRequest handler:FuzzValidHostname handler:FuzzPassword \
	token:FuzzParseJoinCommand

.PHONY: build run test lint unit fuzz k8s-binaries dev bootstorm

build:
	$(GO) build -o epoxy-extensions .

# The production command line, with the defaults spelled out.
run: build
	./epoxy-extensions -listen-address=:8800 -bin-dir=/usr/bin

# Every check CI runs: formatting, vet, and all tests (unit and end-to-end
# against a real Datastore emulator, etcd, kube-apiserver, kubeadm, kubectl)
# under the race detector, then each fuzz target for FUZZTIME.
test: lint
	K8S_BIN_DIR="$$(K8S_VERSION=$(K8S_VERSION) e2e/k8s-binaries.sh)" \
		$(GO) test -race -count=1 -timeout 60m ./...
	$(MAKE) fuzz

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "fuzz $$t for $(FUZZTIME)"; \
		$(GO) test -run='^$$' -fuzz="^$${t#*:}$$" -fuzztime=$(FUZZTIME) ./$${t%%:*}/; \
	done

lint:
	@out="$$(gofmt -l .)"; if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Unit tests alone: seconds, no external components.
unit:
	$(GO) test -race -short ./...

k8s-binaries:
	K8S_VERSION=$(K8S_VERSION) e2e/k8s-binaries.sh

# The whole stack on loopback (etcd, kube-apiserver, the Datastore emulator,
# this server against them on 127.0.0.1:8800), with a curl line printed for
# every endpoint; Ctrl-C stops it all. DEVFLAGS go to devstack, e.g.
# DEVFLAGS='-listen-address 127.0.0.1:8801 -- -max-tokens-per-host 0'.
dev:
	$(GO) run ./e2e/devstack $(DEVFLAGS)

# exec vs api under a boot storm on a real control plane: a Markdown table of
# each backend at each machine count, e.g. BOOTSTORMFLAGS='-machines 100'.
bootstorm:
	$(GO) run ./e2e/bootstorm $(BOOTSTORMFLAGS)
