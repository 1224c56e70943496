# Everything a developer or CI runs. Each target prepares what it needs first
# (scripts/bootstrap.sh is idempotent), so a fresh clone only needs `make test`.
SHELL := /bin/bash
PY := .venv/bin/python

.PHONY: bootstrap test unit lint typecheck demo bench emulator fault-matrix clean e2e-consumers

bootstrap:
	@bash scripts/bootstrap.sh

lint: bootstrap
	$(PY) -m ruff check .

typecheck: bootstrap
	$(PY) -m mypy

## The README's test command: lint, types, then the whole suite on real components.
test: bootstrap
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest

unit: bootstrap
	$(PY) -m pytest tests/unit

## Rotate jwt-signing-key end to end in a local emulator and print what changed.
demo: bootstrap
	$(PY) -m scripts.demo

## Benchmarks against the floor (not part of the tests).
bench: bootstrap
	$(PY) -m bench

## A standalone Key Vault emulator seeded with the standard inventory, for `func start`.
emulator: bootstrap
	$(PY) -m kvemulator --port 8443 --seed standard --state-dir .emulator

clean:
	rm -rf .venv .venv-checkov .tools .pytest_cache .mypy_cache .ruff_cache .emulator

## The consumer kits end to end: 3 replicas of the bridge and the backend behind nginx, under load while
## the four secrets rotate 3 times each, with and without the replica fan-out (a few minutes).
e2e-consumers: bootstrap
	bash scripts/e2e-consumers.sh

## Regenerate docs/fault-matrix.md from the fault-matrix suite.
fault-matrix: bootstrap
	FAULT_MATRIX_OUT=docs/fault-matrix.md $(PY) -m pytest tests/integration/test_fault_matrix.py -q
