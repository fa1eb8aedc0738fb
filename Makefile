# reroute: the retry and failover engine an LLM gateway embeds.
GO        ?= go
PKGS      ?= ./...
FUZZTIME  ?= 10s
BENCHTIME ?= 1s
COUNT     ?= 5

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*##"} /^[a-z-]+:.*##/ {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: test
test: fmt-check vet ## gofmt check, go vet, and every test under the race detector
	$(GO) test -race -count=1 $(PKGS)

.PHONY: fmt-check
fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

.PHONY: vet
vet:
	$(GO) vet $(PKGS)

.PHONY: lint
lint: fmt-check vet ## staticcheck (pinned in go.mod as a tool), gofmt and go vet
	$(GO) tool staticcheck $(PKGS)

.PHONY: cover
cover: ## tests with coverage; writes cover.out and prints the total
	$(GO) test -count=1 -coverprofile=cover.out $(PKGS)
	$(GO) tool cover -func=cover.out | tail -n 1

.PHONY: bench
bench: ## hot-path benchmarks, -benchmem -count $(COUNT), then a table
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) -count $(COUNT) $(PKGS) | tee bench.out
	@echo; echo "medians of $(COUNT) runs:"; $(GO) run ./bench/cmd/benchtable < bench.out

.PHONY: bench-peers
bench-peers: ## reroute and failsafe-go on the same workloads, with ratios (nested module bench/peers)
	cd bench/peers && $(GO) run ./cmd/peertable

.PHONY: fuzz
fuzz: ## every fuzz target for FUZZTIME (default 10s) each
	@set -e; for pkg in $$($(GO) list $(PKGS)); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

LOADGEN_ARGS ?= -baseline naive,naive-failover -report loadgen-report.html

.PHONY: loadgen
loadgen: ## the load generator on its built-in scenario, beside the naive and naive-failover baselines; writes loadgen-report.html
	$(GO) run ./cmd/loadgen $(LOADGEN_ARGS) $(ARGS)
