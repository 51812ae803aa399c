# The two commands of README.md: `make run` (the server on a real local
# stack) and `make test` (every test). `make serve` is the production
# command line.
GO ?= go

# A count, not a duration: time-bounded fuzz runs can end in a spurious
# "context deadline exceeded" failure (golang/go#75804).
FUZZTIME ?= 50000x
# package:target pairs run by `make fuzz`.
FUZZ_TARGETS = handler:FuzzExtensionRequest hostname:FuzzValid handler:FuzzPassword \
	token/joincmd:FuzzParse identity:FuzzBearerToken

# Every package of every module. The server's module is the root: it lists
# only what the image builds (and its unit tests). The tests and tools that
# need more (the operations kit with its dashboard generator in deploy/, the
# end-to-end tests, the local stack and the storm chart in e2e/, the load
# generator in loadtest/) are modules of their own, which go.work ties to the
# root's code. In workspace mode ./... stops at a module's edge, so each
# module is named.
TOOL_MODULES = deploy e2e loadtest
PACKAGES = ./... $(TOOL_MODULES:%=./%/...)

.PHONY: build run dev serve test check prepare lint unit fuzz bootstorm ops dashboard

build:
	$(GO) build -o epoxy-extensions .

# The server on a local stack owned by one process, on 127.0.0.1:8800: etcd,
# kube-apiserver, the Datastore emulator, a DNS server for the sandbox BMC
# name, and this server with the real kubectl. It prints a curl
# line for every endpoint; Ctrl-C or SIGTERM stops it all. DEVFLAGS go to
# e2e/devstack, server flags after "--", e.g.
# DEVFLAGS='-listen-address 127.0.0.1:8801 -- -kube-backend api'.
# The second line is a plain command, so that make passes SIGTERM on to it.
run:
	@$(GO) build -o .cache/devstack ./e2e/devstack
	.cache/devstack $(DEVFLAGS)

dev: run

# The production command line, with the defaults spelled out: on a
# control-plane node kubectl is in /usr/bin, and the server finds
# /etc/kubernetes/admin.conf.
serve: build
	./epoxy-extensions -listen-address=:8800 -bin-dir=/usr/bin

# Every check CI runs: the image's programs, make lint (formatting, tidy
# go.mod files, vet, staticcheck), all tests of every module (unit
# and end-to-end against the real Datastore emulator, etcd, kube-apiserver,
# kubeadm, kubectl, ePoxy and Prometheus) under the race detector, and each
# fuzz target. The components are built from the Go module proxy (once, then
# cached) while vet and the compiler work on the tests (go list -export
# compiles every test package, race-built, without linking or running
# anything: warm, it takes seconds): the builds alone leave part of the
# CPUs idle. The fuzzing runs at the lowest priority beside
# the tests, which spend much of their time waiting; its output follows
# theirs. The end-to-end suite, named first, links and starts first: the
# go command runs packages in the order named, one per CPU at a time, and
# the unit tests finish beside it.
test: check
	@$(GO) run ./e2e/prepare $(COMPONENTS) >/dev/null & build=$$!; status=0; \
	$(MAKE) --no-print-directory lint VETFLAGS=-race && $(GO) list -race -test -export -deps -f '{{if false}}{{end}}' $(PACKAGES) || status=$$?; \
	wait $$build || status=$$?; exit $$status
	@mkdir -p .cache; nice -n 19 $(MAKE) --no-print-directory fuzz >.cache/fuzz.log 2>&1 & fuzz=$$!; status=0; \
	$(GO) test -race -count=1 -timeout 60m ./e2e/ $(PACKAGES) || status=$$?; \
	wait $$fuzz || { status=$$?; echo "make fuzz failed:"; }; cat .cache/fuzz.log; exit $$status

# The components the tests and `make run` need beyond the image.
COMPONENTS = kubernetes epoxy prometheus

# Checks, in a second, that the machine has what the image ships: one line
# per missing program, with its Debian package and path.
check:
	@$(GO) run ./e2e/prepare -race

# check, then builds the components into ~/.cache/epoxy-extensions, side by
# side, with one progress line each.
prepare:
	@$(GO) run ./e2e/prepare -race $(COMPONENTS) >/dev/null

# With the tag fuzzing, test files that import far more than their fuzz
# targets need are left out (handler/errors_test.go): fuzzing instruments
# every package of the test binary, and each input costs a scan of all
# their coverage counters.
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "fuzz $$t for $(FUZZTIME)"; \
		$(GO) test -tags fuzzing -run='^$$' -fuzz="^$${t#*:}$$" -fuzztime=$(FUZZTIME) ./$${t%%:*}/; \
	done

# gofmt, tidy go.mod files (so that the root's lists only what the server
# needs), go vet and staticcheck over every module. make test runs it with
# VETFLAGS=-race: vet then reads the packages the race build compiles, not a
# second build of every package without it. staticcheck (honnef.co/go/tools
# at StaticcheckVersion in e2e/components) is built from the Go module proxy
# once per Go release into the components cache, like the components.
lint:
	@out="$$(gofmt -l .)"; if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	@for m in . $(TOOL_MODULES); do (cd $$m && GOWORK=off $(GO) mod tidy -diff >/dev/null) || \
		{ echo "$$m/go.mod is not tidy: run (cd $$m && GOWORK=off go mod tidy)"; exit 1; }; done
	$(GO) vet $(VETFLAGS) $(PACKAGES)
	@dir="$$($(GO) run ./e2e/prepare -check=false staticcheck)" && \
	echo "staticcheck $(PACKAGES)" && "$$dir/staticcheck" $(PACKAGES)

# Unit tests alone: seconds, no external components.
unit:
	$(GO) test -race -short $(PACKAGES)

# exec vs api under a boot storm on a real control plane: a Markdown table of
# each backend at each machine count, e.g. BOOTSTORMFLAGS='-machines 100';
# with -via-epoxy every machine boots through M-Lab's ePoxy boot server.
bootstorm:
	$(GO) run ./e2e/bootstorm -chart docs/bootstorm.svg $(BOOTSTORMFLAGS)

# The operations kit alone: promtool checks and unit tests of
# deploy/prometheus, the check that every rule and dashboard query reads only
# what the server exposes, the dashboard, the systemd unit, then the
# Prometheus end-to-end test.
ops:
	@$(GO) run ./e2e/prepare prometheus >/dev/null
	$(GO) test -count=1 ./deploy/...
	$(GO) test -count=1 -run 'TestPrometheus' ./e2e/

# Regenerates deploy/grafana/epoxy-extension-server.json from
# deploy/grafana/dashboard.go.
dashboard:
	$(GO) run ./deploy/grafana/generate
