# herald's front door. `make help` lists the targets.

CONSUL_VERSION := v1.13.9
CONSUL         := bin/consul
HERALD         := bin/herald
GO             ?= go
VERSION        ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

.DEFAULT_GOAL := help
.PHONY: help deps consul build test bench lint tidy run fuzz chaos clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z]+:.*## / {printf "  %-8s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

deps: consul ## build or install what the tests need: a static Consul agent in bin/consul (from deploy/consul), Chromium, Node
	@if command -v chromium >/dev/null 2>&1; then \
		echo "Chromium is installed"; \
	else \
		echo "installing Chromium for the browser tests (apt-get, about a minute)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	fi
	@command -v node >/dev/null 2>&1 || { echo "Node.js is needed for the herald.js tests: apt-get install nodejs"; exit 1; }

# bin/consul is static (CGO_ENABLED=0), so that one binary serves the tests
# and the herald-consul image, which is FROM scratch. It is rebuilt when it
# is missing, another version, or dynamically linked (an older `make deps`
# built it with cgo; `go version -m` reads how a binary was built). The new
# one is written beside it and renamed over it, so a bin/consul that is a
# symlink (a worktree's, to the main checkout's) is replaced rather than
# written through, and an agent running from it is never truncated.
consul:
	@if $(CONSUL) version 2>/dev/null | grep -q "^Consul $(CONSUL_VERSION)$$" && \
	    $(GO) version -m $(CONSUL) 2>/dev/null | grep -q "CGO_ENABLED=0"; then \
		echo "$(CONSUL) is Consul $(CONSUL_VERSION), static"; \
	else \
		echo "building Consul $(CONSUL_VERSION), static, from Go modules into $(CONSUL): this takes about 3 minutes with a warm module cache, 7 the first time"; \
		mkdir -p bin && cd deploy/consul && \
		CGO_ENABLED=0 $(GO) build -o ../../$(CONSUL).new github.com/hashicorp/consul && \
		mv -f ../../$(CONSUL).new ../../$(CONSUL); \
	fi

build: ## build bin/herald
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(HERALD) ./cmd/herald

test: deps build ## go vet, herald.js tests, every Go test with -race (unit, integration, browser), then a chaos run
	$(GO) vet ./...
	node --test web/
	$(GO) test -race -count=1 ./...
	$(HERALD) chaos --start-cluster --duration 60s --users 200 --rate 100 --fault-every 6s --min-ring-changes 2 -v

bench: ## run the benchmarks
	$(GO) test -run '^$$' -bench . -benchmem ./ring/...

lint: ## go vet and staticcheck
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

tidy: ## go mod tidy, failing if it changes go.mod or go.sum
	$(GO) mod tidy
	cd deploy/consul && $(GO) mod tidy
	git diff --exit-code -- go.mod go.sum deploy/consul/go.mod deploy/consul/go.sum

FUZZ_TARGETS := ./ring:FuzzOwner ./gateway/wire:FuzzDecodeClientFrame ./gateway/wire:FuzzDecodeServerFrame \
	./gateway/wire:FuzzDecodeDoorbell ./dispatcher:FuzzDecodeNotify ./gateway:FuzzEndToEnd

# Each new interesting input is minimized for at most 500 runs: FuzzEndToEnd's
# runs are round trips through a real cluster, and go test's default of 60 s
# per input stalls a short run on the offspring of its 64 KiB seeds.
fuzz: ## run every fuzzer for a while each (FUZZTIME, default 30s)
	@for t in $(FUZZ_TARGETS); do \
		echo "fuzzing $${t#*:} in $${t%%:*}"; \
		$(GO) test -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $(or $(FUZZTIME),30s) -fuzzminimizetime 500x "$${t%%:*}" || exit 1; \
	done

run: deps build ## the whole system locally: Consul, NATS, 3 gateways, 2 dispatchers (Ctrl-C stops)
	$(HERALD) dev

chaos: build ## a chaos run against the running `make run` cluster (CHAOS_ARGS to change it)
	$(HERALD) chaos --control 127.0.0.1:8079 $(CHAOS_ARGS)

clean: ## remove bin/
	rm -rf bin
