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

.PHONY: test
test: ## Install missing test dependencies (tools/deps.sh), then run every test with -race
	bash tools/deps.sh
	$(GO) test $(TESTFLAGS) ./...

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
bench: ## Run the benchmark harness and write bench/results/<date>-<sha>.md
	$(call not_yet,the benchmark harness arrives with the benchmark issue)

.PHONY: clean
clean: ## Remove build and coverage artefacts
	rm -rf $(BIN)/ coverage.out coverage.html

##@ Docker (needs a Docker engine)
.PHONY: docker-build docker-up docker-down docker-destroy docker-restart docker-logs docker-logs-proxy docker-logs-sql docker-ps
docker-build: ## docker compose build
	$(call not_yet,deployments/docker-compose.yml arrives with the deployments issue)
docker-up: ## docker compose up -d
	$(call not_yet,deployments/docker-compose.yml arrives with the deployments issue)
docker-down: ## docker compose down
	$(call not_yet,deployments/docker-compose.yml arrives with the deployments issue)
docker-destroy: ## docker compose down -v
	$(call not_yet,deployments/docker-compose.yml arrives with the deployments issue)
docker-restart: ## docker compose restart
	$(call not_yet,deployments/docker-compose.yml arrives with the deployments issue)
docker-logs: ## docker compose logs -f
	$(call not_yet,deployments/docker-compose.yml arrives with the deployments issue)
docker-logs-proxy: ## docker compose logs -f proxy-1 proxy-2 proxy-3
	$(call not_yet,deployments/docker-compose.yml arrives with the deployments issue)
docker-logs-sql: ## docker compose logs -f sqlserver-bucket-*
	$(call not_yet,deployments/docker-compose.yml arrives with the deployments issue)
docker-ps: ## docker compose ps
	$(call not_yet,deployments/docker-compose.yml arrives with the deployments issue)

##@ Operations
.PHONY: health
health: ## Health of the three proxies (ports 18081-18083)
	$(call not_yet,the /health endpoint arrives with the observability issue)

.PHONY: redis-ping
redis-ping: ## redis-cli ping
	$(REDIS_CLI) ping

.PHONY: redis-info
redis-info: ## redis-cli info
	$(REDIS_CLI) info

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^##@/ {printf "\n%s\n", substr($$0, 5)} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-20s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
