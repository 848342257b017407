# The two commands of the README: `make run` and `make test`. Both create .venv when it is missing
# and install the pinned requirements (again whenever a requirements file changes).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
REQS := requirements.txt requirements-dev.txt

.PHONY: run test lint format bench clean-var

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) $(REQS)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

run: $(STAMP)
	$(PY) manage.py serve

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# mypy's Django plugin loads the settings: the two URLs keep them from starting the embedded
# servers (nothing connects to them).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	DATABASE_URL=postgres://localhost/typecheck REDIS_URL=redis://localhost:6379/0 $(VENV)/bin/mypy .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(STAMP)
	$(PY) bench/templates.py
	$(PY) bench/notifications.py
	$(PY) bench/messaging.py
	$(PY) bench/console.py
	$(PY) bench/analytics.py

clean-var:
	rm -rf var
