# tdsgate Makefile. `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

GO        ?= go
BIN       := bin
COMPOSE   := docker compose -f deployments/docker-compose.yml
REDIS_CLI ?= redis-cli -p 6379
HEALTH_PORTS := 18081 18082 18083
# Go test flags; CI keeps the race detector on.
TESTFLAGS ?= -race -count=1 -timeout 20m

define not_yet
	@echo "make $@: not yet available: $(1)" >&2; exit 2
endef

##@ Build and run
.PHONY: build
build: ## Build the proxy binary into bin/proxy
	$(GO) build -o $(BIN)/proxy ./cmd/proxy/

.PHONY: run
run: build ## Build and run the proxy locally (CONFIG=path/to/config.yaml)
	./$(BIN)/proxy $(if $(CONFIG),-config $(CONFIG),)

.PHONY: demo
demo: build ## Start the proxy on 127.0.0.1:1433 in front of three stand-in buckets (no Redis)
	$(GO) build -o $(BIN)/demo ./tools/demo/
	./$(BIN)/demo

##@ Test and quality
.PHONY: deps
deps: ## Download Go modules and tidy go.mod
	$(GO) mod download
	$(GO) mod tidy

.PHONY: sqlcmd
sqlcmd: ## Build go-sqlcmd (the runbook's sqlcmd, exact version) into bin/sqlcmd, with the other test deps (tools/deps.sh)
	bash tools/deps.sh

.PHONY: test
test: ## Install missing test dependencies (tools/deps.sh), then run every test with -race
	bash tools/deps.sh
	$(GO) test $(TESTFLAGS) ./...

NEMESIS_DURATION   ?= 10m
NEMESIS_LEASE_LOSS ?= close
NEMESIS_INSTANCES  ?= 4
.PHONY: nemesis
nemesis: ## Fault-injection soak (tools/cluster/nemesis): NEMESIS_DURATION (10m), NEMESIS_SEED (random, printed), NEMESIS_LEASE_LOSS (close|keep), NEMESIS_INSTANCES (4); report in bench/results/
	@seed=$${NEMESIS_SEED:-$$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}; echo "nemesis seed $$seed"; \
	$(GO) test -count=1 -timeout 90m -run '^TestNemesis$$' -v ./tools/cluster/nemesis/ -args -nemesis.seed=$$seed \
	  -nemesis.duration=$(NEMESIS_DURATION) -nemesis.lease-loss=$(NEMESIS_LEASE_LOSS) -nemesis.instances=$(NEMESIS_INSTANCES) -nemesis.faults=all -nemesis.slack=0 \
	  -nemesis.report=$(CURDIR)/bench/results/$$(date -u +%F)-nemesis-$$seed-$(NEMESIS_LEASE_LOSS).md

.PHONY: test-coverage
test-coverage: ## Run the tests with coverage; writes coverage.out and coverage.html
	bash tools/deps.sh
	$(GO) test -count=1 -timeout 20m -coverprofile=coverage.out ./...
	$(GO) tool cover -html=coverage.out -o coverage.html

.PHONY: fuzz
fuzz: ## Run every fuzz target of pkg/tds for FUZZTIME each (default 30s)
	@for t in FuzzHeader FuzzPrelogin FuzzLogin7 FuzzTokens FuzzRequests; do \
	  echo "== $$t"; $(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $${FUZZTIME:-30s} ./pkg/tds/ || exit 1; done

.PHONY: lint
lint: ## Run golangci-lint if installed, else go vet and gofmt
	@if command -v golangci-lint >/dev/null; then golangci-lint run ./...; \
	else echo "golangci-lint not installed; running vet and gofmt checks"; $(MAKE) --no-print-directory vet; \
	  out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi; fi

.PHONY: fmt
fmt: ## Format the code (gofmt -s -w)
	gofmt -s -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## Static analysis (go vet)
	$(GO) vet ./...

.PHONY: generate
generate: ## Regenerate generated code: the eBPF tracker (bpf2go; needs clang, llvm-strip, libbpf-dev)
	$(GO) generate ./pkg/ebpf

.PHONY: bench
bench: ## Run the benchmark harness and write bench/results/<date>-<sha>.md (BENCH_QUICK=1: the 1-minute CI mode); installs linux-perf if missing (root)
	@command -v perf >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null; } || \
	  echo "bench: perf is not installed and could not be (apt-get install linux-perf, as root): the report will have no whole-machine profiles"
	$(GO) build -o $(BIN)/proxy ./cmd/proxy/
	$(GO) build -o $(BIN)/standin ./tools/standin/
	$(GO) run ./bench/cmd/benchrun -proxy $(BIN)/proxy -standin $(BIN)/standin -out bench/results

.PHONY: bench-multiplex
bench-multiplex: ## Multiplexing at scale (issue 14): 1,000 real client sessions (go-mssqldb, pytds, tedious, jTDS) for 60 s over one bucket of max 20; report in bench/results/<date>-multiplex.md
	BENCH_MULTIPLEX=1 $(GO) test -count=1 -timeout 15m -run '^TestMultiplexAtScale$$' -v ./bench/

.PHONY: clean
clean: ## Remove build and coverage artefacts
	rm -rf $(BIN)/ coverage.out coverage.html

##@ Docker (needs a Docker engine; deployments/README.md)
.PHONY: docker-build docker-up docker-down docker-destroy docker-restart docker-logs docker-logs-proxy docker-logs-sql docker-ps
docker-build: ## docker compose build (the proxy image, deployments/Dockerfile)
	$(COMPOSE) build
docker-up: ## docker compose up -d --build: the runbook's eleven containers
	$(COMPOSE) up -d --build
docker-down: ## docker compose down (keeps the volumes)
	$(COMPOSE) down
docker-destroy: ## docker compose down -v (removes the volumes too)
	$(COMPOSE) down -v
docker-restart: ## docker compose restart
	$(COMPOSE) restart
docker-logs: ## docker compose logs -f
	$(COMPOSE) logs -f
docker-logs-proxy: ## docker compose logs -f proxy-1 proxy-2 proxy-3
	$(COMPOSE) logs -f proxy-1 proxy-2 proxy-3
docker-logs-sql: ## docker compose logs -f sqlserver-bucket-1..3
	$(COMPOSE) logs -f sqlserver-bucket-1 sqlserver-bucket-2 sqlserver-bucket-3
docker-ps: ## docker compose ps
	$(COMPOSE) ps

##@ Local stack without Docker (same ports; deployments/README.md)
LOCAL_STACK := bash deployments/local/stack.sh
.PHONY: stack-up stack-down stack-status stack-logs standin
standin: ## Build the SQL Server stand-in into bin/standin
	$(GO) build -o $(BIN)/standin ./tools/standin/

stack-up: build standin ## Start 3 stand-ins, redis, 3 proxies, HAProxy (1433), Prometheus; wait until healthy
	$(LOCAL_STACK) up

stack-down: ## Stop the local stack: no process, no proxy:* key left
	$(LOCAL_STACK) down

stack-status: ## What the local stack runs (pids, health, ports)
	$(LOCAL_STACK) status

stack-logs: ## Follow the local proxies' log files
	$(LOCAL_STACK) logs

##@ Runbook scenarios (bench/scenario; against a running stack)
SCENARIOS := runbook-sqlcmd phase4 queue-timeout circuit-breaker cb-direct errors kill-proxy kill-redis kill-bucket rolling-restart logs
# For the compose stack: make scenario-all SCENARIO_FLAGS='-stack compose'
SCENARIO_FLAGS ?=
.PHONY: scenario-all $(addprefix scenario-,$(SCENARIOS))
scenario-all: ## Every scenario in turn (one: make scenario-NAME; NAME in runbook-sqlcmd phase4 queue-timeout circuit-breaker cb-direct errors kill-proxy kill-redis kill-bucket rolling-restart logs)
	$(GO) run ./bench/scenario $(SCENARIO_FLAGS) all

$(addprefix scenario-,$(SCENARIOS)): scenario-%:
	$(GO) run ./bench/scenario $(SCENARIO_FLAGS) $*

##@ Operations
.PHONY: health
health: ## Health of the three proxies (ports 18081-18083)
	@for port in $(HEALTH_PORTS); do \
	  echo "=== Proxy (porta $$port) ==="; \
	  if command -v jq >/dev/null; then curl -s http://localhost:$$port/health | jq '.status, .instance_id'; \
	  else curl -s http://localhost:$$port/health; echo; fi; \
	  echo ""; done

.PHONY: redis-ping
redis-ping: ## redis-cli ping
	$(REDIS_CLI) ping

.PHONY: redis-info
redis-info: ## redis-cli info
	$(REDIS_CLI) info

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^##@/ {printf "\n%s\n", substr($$0, 5)} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-20s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
