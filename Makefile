# Everything a fresh machine needs comes from these targets: `make run`, `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run logs test lint bench clean redis-server

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

install: $(STAMP)

## Start the function (functions-framework on :8080) behind the local mTLS gateway (:8443).
run: $(STAMP)
	$(BIN)/python -m devtools.local

## The audit lines of `make run`, readable and filtered: make logs ARGS="--reason no_client_certificate -v"
logs: $(STAMP)
	$(BIN)/python -m devtools.logs $(ARGS)

## Lint and run the whole test suite.
test: $(STAMP) lint redis-server
	$(BIN)/python -m pytest

## The tests of the shared state (REDIS_URL) start their own real redis-server (Debian's package).
redis-server:
	@command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server; }

lint: $(STAMP)
	$(BIN)/ruff check .

## Benchmark (throughput, latency, cold start, memory) as ratios measured in one run; fails if a
## stated target does (docs/performance.md).
bench: $(STAMP) redis-server
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
	@command -v openssl >/dev/null || { apt-get update -qq && apt-get install -y -qq openssl; }
	$(BIN)/python -m bench.run --check $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .local .pytest_cache .ruff_cache
