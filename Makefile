# Membrane. `make demo` and `make test` are the two commands of the README;
# both install what they need on a fresh Debian machine (run as root).

# Go from the official tarball lives in /usr/local/go/bin, often not on
# root's PATH; the tests run `go build` and `go tool cnitool` themselves.
export PATH := $(PATH):/usr/local/go/bin
GO      ?= go
BIN     := bin
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/membrane-net/membrane/cells/status.Version=$(VERSION)
PKGS    := ./...
# Debian packages the tests and the demo use: ip/ping for netns work, the
# reference CNI plugins as the benchmark baseline, iperf3 and sockperf for
# the datapath benchmark, clang/llvm/libbpf-dev to check the committed BPF
# object against its sources, podman and containerd (+ runc) for the
# runtime suites, etcd-server for the Kubernetes-mode tests' API server
# (internal/kubetest runs its own etcd on free loopback ports; the
# package's system service, if systemd starts it, is left alone),
# prometheus (and its promtool) for the metrics test, which runs its own
# server on a loopback port (the package's service is left alone too).
# graphviz renders the cell graph of docs/architecture.md (make docs).
APT_PKGS := graphviz iproute2 iputils-ping socat containernetworking-plugins iperf3 sockperf clang llvm libbpf-dev podman runc catatonit busybox-static containerd etcd-server prometheus
# The containerd CRI suite is a module of its own (test/containerd), so the
# main module does not carry the CRI API and gRPC.
CRI_SUITE := test/containerd

# make install: where things go. DESTDIR stages an install (packaging).
PREFIX           ?= /usr/local
BINDIR           ?= $(PREFIX)/bin
CNI_BIN_DIR      ?= /opt/cni/bin
CNI_CONF         ?= /etc/cni/net.d/05-membrane.conflist
SYSTEMD_UNIT_DIR ?= /etc/systemd/system
DESTDIR          ?=

.PHONY: all build deps test-deps test check bpf bpf-check deepcopy deepcopy-check docs unit bench bench-chart bench-chart-only soak demo clean install uninstall

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/membrane-agent ./cmd/membrane-agent
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/membrane-cni ./plugins/membrane-cni
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/membrane ./cmd/membrane

# deps installs the Debian packages that are missing (needs root) and
# downloads the Go modules.
deps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	$(GO) mod download
	cd $(CRI_SUITE) && $(GO) mod download

# test-deps: deps, and kube-apiserver (module test/kube-apiserver) built
# into a cache outside the repository when it is not there yet: minutes
# once, then nothing (MEMBRANE_KUBE_BIN_DIR moves the cache; see
# scripts/kube-apiserver.sh). The tests and benchmarks need it, not the demo.
test-deps: deps
	GO=$(GO) ./scripts/kube-apiserver.sh

# check: formatting and vet.
check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	cd $(CRI_SUITE) && $(GO) vet ./...

# bpf regenerates the datapath object from bpf/*.c (needs clang).
bpf:
	$(GO) generate ./bpf/

# bpf-check fails if the committed object is not what the sources compile to.
bpf-check: bpf
	@git diff --exit-code --stat -- bpf/ || { echo "bpf/: generated files are stale: run make bpf and commit"; exit 1; }

# deepcopy regenerates the DeepCopy methods of the Kubernetes types in
# k8s/apis (deepcopy-gen, the version go.mod pins).
deepcopy:
	$(GO) generate ./k8s/...

# deepcopy-check fails if a zz_generated.deepcopy.go under k8s/ is not what
# the generator makes of the types, or is not committed.
deepcopy-check: deepcopy
	@stale=$$(git status --porcelain -- ':(glob)k8s/**/zz_generated.deepcopy.go'); \
	if [ -n "$$stale" ]; then echo "$$stale"; echo "k8s/: generated DeepCopy code is stale: run make deepcopy and commit"; exit 1; fi

# docs regenerates the cell graph of docs/architecture.md from the
# default agent: docs/cell-graph.dot (TestCellGraphIsCurrent in
# cmd/membrane-agent fails when it is stale) and its rendering
# docs/cell-graph.svg (needs graphviz: make deps).
docs:
	$(GO) run ./cmd/membrane-agent hive --dot > docs/cell-graph.dot
	dot -Tsvg docs/cell-graph.dot -o docs/cell-graph.svg

# Host routing (--host-routing): the suites run in the default mode (auto:
# eBPF host routing on the kernels CI runs); these run a second time with
# legacy host routing, where the stack forwards pod-to-pod packets and
# to_container judges them (about two minutes).
HOST_ROUTING_E2E := ^(TestPolicyTC|TestPolicyIPv6|TestFragmentsTC|TestRestartKeepsPolicyTC|TestDualStack)$$

# test: everything, privileged suites included (run as root).
test: test-deps check bpf-check deepcopy-check
	$(GO) test -count=1 -timeout 20m $(PKGS)
	cd test/e2e && MEMBRANE_E2E_HOST_ROUTING=legacy $(GO) test -count=1 -timeout 10m -run '$(HOST_ROUTING_E2E)' .
	cd $(CRI_SUITE) && $(GO) test -count=1 -timeout 15m ./...

# unit: the fast tests only.
unit:
	$(GO) test -short -count=1 $(PKGS)
	cd $(CRI_SUITE) && $(GO) test -short -count=1 ./...

bench: test-deps build
	$(GO) test -count=1 -run '^$$' -bench . ./bpf/
	$(GO) test -count=1 -run '^$$' -bench . -benchtime 1x -timeout 45m ./test/bench/...
	cd $(CRI_SUITE) && $(GO) test -count=1 -run '^$$' -bench . -benchtime 1x -timeout 10m ./...

# bench-chart: the datapath benchmark alone (MEMBRANE_BENCH_RUNS rounds,
# default 5), its results into docs/benchmarks-datapath.json and their
# chart into docs/benchmarks-datapath.svg (docs/benchmarks.md). Chart the
# committed JSON again without measuring: make bench-chart-only.
BENCH_JSON := docs/benchmarks-datapath.json
BENCH_SVG  := docs/benchmarks-datapath.svg
bench-chart: test-deps build
	cd test/bench && MEMBRANE_BENCH_OUT=$(CURDIR)/$(BENCH_JSON) $(GO) test -count=1 -run '^$$' -bench '^BenchmarkDatapath$$' -benchtime 1x -timeout 20m .
	$(MAKE) bench-chart-only

bench-chart-only:
	$(GO) run ./scripts/benchchart -in $(BENCH_JSON) -out $(BENCH_SVG)

# soak: the churn test, longer (MEMBRANE_SOAK_CYCLES=300 make soak).
soak: test-deps
	cd test/e2e && MEMBRANE_SOAK_CYCLES=$${MEMBRANE_SOAK_CYCLES:-300} $(GO) test -count=1 -run '^TestChurnSoak$$' -v -timeout 60m .

demo: deps build
	./scripts/demo.sh

# install: the three binaries into BINDIR, membrane-cni into CNI_BIN_DIR
# (by the agent's install-cni: atomic, and checked to run), the systemd
# unit into SYSTEMD_UNIT_DIR. The conflist is the agent's to write once it
# serves (the unit passes --write-cni-conf-when-ready CNI_CONF).
install: build
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SYSTEMD_UNIT_DIR)
	install -m 0755 $(BIN)/membrane-agent $(BIN)/membrane-cni $(BIN)/membrane $(DESTDIR)$(BINDIR)/
	$(DESTDIR)$(BINDIR)/membrane-agent install-cni --cni-bin-dir $(DESTDIR)$(CNI_BIN_DIR)
	sed -e 's|/usr/local/bin/|$(BINDIR)/|g' -e 's|/etc/cni/net.d/05-membrane.conflist|$(CNI_CONF)|g' \
		contrib/systemd/membrane-agent.service > $(DESTDIR)$(SYSTEMD_UNIT_DIR)/membrane-agent.service
	chmod 0644 $(DESTDIR)$(SYSTEMD_UNIT_DIR)/membrane-agent.service
	@echo "installed; start it with: systemctl daemon-reload && systemctl enable --now membrane-agent"

# uninstall reverses install, and removes the conflist the agent wrote (the
# node has no Membrane network any more). Remove the pods first; the
# agent's state (/var/lib/membrane, /sys/fs/bpf/membrane) is left: see
# docs/install.md.
uninstall:
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then \
		systemctl disable --now membrane-agent 2>/dev/null || true; \
	fi
	rm -f $(DESTDIR)$(CNI_CONF)
	rm -f $(DESTDIR)$(SYSTEMD_UNIT_DIR)/membrane-agent.service
	rm -f $(DESTDIR)$(CNI_BIN_DIR)/membrane-cni
	rm -f $(DESTDIR)$(BINDIR)/membrane-agent $(DESTDIR)$(BINDIR)/membrane-cni $(DESTDIR)$(BINDIR)/membrane
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi

clean:
	rm -rf $(BIN)
