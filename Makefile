# Everything a developer or CI runs. Each target prepares what it needs first
# (scripts/bootstrap.sh is idempotent), so a fresh clone only needs `make test`.
#
# Dependencies: add or change them in requirements.in (runtime, deployed) or
# requirements-dev.in (tests and tools), then run `make lock`, which
# regenerates the hash-locked requirements*.txt files. Never edit a .txt by hand.
SHELL := /bin/bash
PY := .venv/bin/python

.PHONY: bootstrap test unit unit-pythons lint typecheck demo bench emulator local-up local-down fault-matrix \
	lock lock-upgrade clean e2e-consumers

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

## The unit suite on every supported Python (3.11, 3.12, 3.13), each in its own .venv-py3XX.
unit-pythons:
	@bash scripts/unit-pythons.sh

## Regenerate the hash-locked requirements*.txt from requirements*.in (keeps pins that still fit).
lock:
	@bash scripts/lock.sh

## Same, moving every package to its newest allowed release.
lock-upgrade:
	@bash scripts/lock.sh --upgrade

## Rotate jwt-signing-key end to end in a local emulator and print what changed.
demo: bootstrap
	$(PY) -m scripts.demo

## Benchmarks against the floor (not part of the tests).
bench: bootstrap
	$(PY) -m bench

## A standalone Key Vault emulator seeded with the standard inventory, for `func start` (foreground).
emulator: bootstrap
	$(PY) -m kvemulator --port 8443 --seed standard --state-dir .emulator

## The Key Vault emulator and Azurite in the background, for `func start`; `make local-down` stops them.
local-up: bootstrap
	@bash scripts/local-services.sh start

local-down:
	@bash scripts/local-services.sh stop

clean:
	-@bash scripts/local-services.sh stop
	rm -rf .venv .venv-* .tools .pytest_cache .mypy_cache .ruff_cache .emulator .azurite

## The consumer kits end to end: 3 replicas of the bridge and the backend behind nginx, under load while
## the four secrets rotate 3 times each, with and without the replica fan-out (a few minutes).
e2e-consumers: bootstrap
	bash scripts/e2e-consumers.sh

## Regenerate docs/fault-matrix.md: every rotator x a real SIGKILL / SIGSTOP past the lease after every step (~5 min).
fault-matrix: bootstrap
	FAULT_MATRIX_OUT=docs/fault-matrix.md $(PY) -m pytest tests/integration/test_process_fault_matrix.py -q
