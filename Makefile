# herald's front door. `make help` lists the targets.

CONSUL_VERSION := v1.13.9
CONSUL         := bin/consul
CENTRIFUGO_VERSION := v6.9.1
CENTRIFUGO     := bin/centrifugo
HERALD         := bin/herald
GO             ?= go
VERSION        ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

.DEFAULT_GOAL := help
.PHONY: help deps consul centrifugo redis build test bench lint tidy run fuzz chaos chaos-cluster images clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-13s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

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

test: deps build ## go vet, herald.js tests, every Go test with -race (unit, integration, browser), a chaos run, the short Compose fault suite
	$(GO) vet ./...
	node --test web/
	$(GO) test -race -count=1 ./...
	$(HERALD) chaos --start-cluster --duration 60s --users 200 --rate 100 --fault-every 6s --min-ring-changes 2 --collapse-every 4 -v
	deploy/compose/fault-suite.sh short

chaos-cluster: ## the full Compose fault suite on a real cluster (needs Docker): NATS, Consul, gateway and dispatcher faults
	deploy/compose/fault-suite.sh full --rounds 2

# bin/centrifugo is the peer herald bench measures herald against, built
# from the version deploy/bench pins (about 2 minutes the first time).
centrifugo:
	@if $(CENTRIFUGO) version 2>/dev/null | grep -q "^Centrifugo $(CENTRIFUGO_VERSION:v%=%) "; then \
		echo "$(CENTRIFUGO) is Centrifugo $(CENTRIFUGO_VERSION)"; \
	else \
		echo "building Centrifugo $(CENTRIFUGO_VERSION) from Go modules into $(CENTRIFUGO)"; \
		mkdir -p bin && cd deploy/bench && \
		CGO_ENABLED=0 $(GO) build -ldflags "-X github.com/centrifugal/centrifugo/v6/internal/build.Version=$(CENTRIFUGO_VERSION:v%=%)" \
			-o ../../$(CENTRIFUGO) github.com/centrifugal/centrifugo/v6; \
	fi

# Redis is what Centrifugo's Redis engine runs on in herald bench
# (--peer-engine redis): Debian's redis-server, started by the bench itself.
redis:
	@if command -v redis-server >/dev/null 2>&1; then \
		echo "redis-server is installed"; \
	else \
		echo "installing redis-server for the bench's Centrifugo + Redis column (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; \
	fi

bench: consul build centrifugo redis ## herald bench's scenarios, herald beside Centrifugo, against a fresh herald dev (reports in data/bench/), then the ring's micro-benchmarks
	deploy/bench/run.sh
	$(GO) test -run '^$$' -bench . -benchmem ./ring/...

lint: ## go vet and staticcheck
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

tidy: ## go mod tidy, failing if it changes go.mod or go.sum
	$(GO) mod tidy
	cd deploy/consul && $(GO) mod tidy
	cd deploy/bench && $(GO) mod tidy
	git diff --exit-code -- go.mod go.sum deploy/consul/go.mod deploy/consul/go.sum deploy/bench/go.mod deploy/bench/go.sum

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

# The images' build contexts: one directory per image, holding its
# Dockerfile and exactly the files it copies in, so the engine is sent
# nothing else (see .dockerignore for the repository root).
IMAGES       := build/images
# nats-server is built from herald's own module, at the version go.mod
# requires, with the dependencies herald's tests run it with.
NATS_VERSION  = $(shell $(GO) list -m -f '{{.Version}}' github.com/nats-io/nats-server/v2)

images: consul ## build the images herald, herald-nats and herald-consul FROM scratch (needs Docker)
	@docker version --format 'Docker engine {{.Server.Version}} (API {{.Server.APIVersion}}), client {{.Client.Version}}'
	@echo "docker-compose $$(docker-compose version --short 2>/dev/null || echo 'not found')"
	@test -f /etc/ssl/certs/ca-certificates.crt || { echo "no /etc/ssl/certs/ca-certificates.crt to copy into the images (apt-get install ca-certificates)"; exit 1; }
	@mkdir -p $(IMAGES)/herald/secrets $(IMAGES)/nats/data $(IMAGES)/consul/data
	CGO_ENABLED=0 $(GO) build -ldflags "-X main.version=$(VERSION)" -o $(IMAGES)/herald/herald ./cmd/herald
	CGO_ENABLED=0 $(GO) build -o $(IMAGES)/nats/nats-server github.com/nats-io/nats-server/v2
	@v="$$($(IMAGES)/nats/nats-server --version)"; test "$$v" = "nats-server: $(NATS_VERSION)" || \
		{ echo "$(IMAGES)/nats/nats-server says $$v, but go.mod requires $(NATS_VERSION)"; exit 1; }
	@for d in herald nats consul; do \
		cp -f /etc/ssl/certs/ca-certificates.crt $(IMAGES)/$$d/ca-certificates.crt && \
		cp -f deploy/images/$$d.Dockerfile $(IMAGES)/$$d/Dockerfile || exit 1; \
	done
	cp -f $(IMAGES)/herald/herald $(IMAGES)/nats/herald
	cp -f $(IMAGES)/herald/herald $(IMAGES)/consul/herald
	cp -f deploy/images/nats-server.conf $(IMAGES)/nats/
	cp -fL $(CONSUL) $(IMAGES)/consul/consul
	deploy/images/build.sh $(IMAGES)/herald herald:$(VERSION) herald:latest
	deploy/images/build.sh $(IMAGES)/nats herald-nats:$(NATS_VERSION:v%=%) herald-nats:latest
	deploy/images/build.sh $(IMAGES)/consul herald-consul:$(CONSUL_VERSION:v%=%) herald-consul:latest
	@docker images --filter reference=herald --filter reference=herald-nats --filter reference=herald-consul

clean: ## remove bin/ and build/ (the images' build contexts)
	rm -rf bin build
