# Two commands on a fresh machine:
#   make demo   - install into .venv and run the agent on the embedded defaults (one question per route)
#   make test   - install the test extras into .venv and run the default test suite (unit + integration)
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

$(BIN)/domainroute: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0          # the CPU wheel; any other spec pulls GBs of CUDA
	$(BIN)/pip install -q -c constraints.txt -e '.[test,weaviate,bench,slack,api,studio]'
	touch $@

install: $(BIN)/domainroute

demo: install
	$(BIN)/domainroute ingest
	$(BIN)/domainroute ask "someone backed into my parked car, is that collision or comprehensive?" --json
	$(BIN)/domainroute ask "a pipe burst under my kitchen sink and soaked the floor" --json
	$(BIN)/domainroute ask "do I need prior authorization for an MRI?" --json
	$(BIN)/domainroute ask "why was I charged a late fee on my bill?" --json
	$(BIN)/domainroute ask "what's a good recipe for banana bread?" --json
	$(BIN)/domainroute ask "my lawyer says you denied my claim unfairly" --claim '{"line": "auto", "amount": 8000, "policy_age_days": 400, "prior_claims_12m": 0, "contacts_on_claim": 2}' --json

test: install
	$(BIN)/pytest -m "not live and not slow" -q

test-live: install
	$(BIN)/pytest -m live -q

bench: install      # the agent's latency and cold start; every other benchmark, with its command: docs/benchmarks.md
	$(BIN)/python benchmarks/agent_bench.py

.PHONY: install demo test test-live bench
