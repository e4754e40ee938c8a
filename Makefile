# The two commands a newcomer runs: `make demo` and `make test`. Both install what they need.
SHELL := /bin/bash
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' && { echo $$p; break; }; done)
VENV := .venv
STAMP := $(VENV)/.installed-stamp

LOCK := requirements/dev.lock

.PHONY: demo test faults lint unit bench venv lock kafka-up kafka-down clean

# Installs exactly the locked versions (hash-checked), then the project itself without resolving anything.
# Refuses, loudly, a lock made from other declarations than pyproject.toml's: run `make lock` and commit it.
$(STAMP): pyproject.toml $(LOCK) requirements/runtime.lock
	@test -n "$(PYTHON)" || { echo "Python 3.11 or newer is needed (e.g. 'apt-get install python3')."; exit 1; }
	$(PYTHON) scripts/lock_stamp.py --check $(LOCK) requirements/runtime.lock
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q --require-hashes -r $(LOCK)
	$(VENV)/bin/python -m pip install -q --no-deps -e .
	@touch $(STAMP)

venv: $(STAMP)

# Regenerate requirements/*.lock from pyproject.toml (uv, pinned in the script); commit the result.
lock:
	scripts/lock.sh

demo: venv
	$(VENV)/bin/sentinel demo

test: venv
	scripts/run-tests.sh

# The fault suite alone (kill -9, broker/database/SMTP down, full disk, two notify replicas); it prints its counts.
faults: venv
	scripts/run-tests.sh --faults-only

lint: venv
	$(VENV)/bin/ruff check shared services tests bench
	$(VENV)/bin/ruff format --check shared services tests bench
	$(VENV)/bin/mypy

unit: venv
	$(VENV)/bin/pytest tests/unit -q

bench: venv
	$(VENV)/bin/python -m bench

kafka-up: venv
	$(VENV)/bin/sentinel kafka up

kafka-down: venv
	$(VENV)/bin/sentinel kafka down

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
