# The README's commands. Each target installs what it needs by itself.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
DURATION ?= 80

.PHONY: install redis-server chromium demo dashboard test unit lint bench bench-wide constraints clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server (Debian package)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq redis-server >/dev/null; }

## Headless Chromium for the dashboard's browser test (driven by playwright, never `playwright install`).
chromium:
	@[ -x /usr/bin/chromium ] || { \
	  echo "installing chromium and chromium-driver (Debian packages)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

install: $(VENV)/.installed redis-server

## Demo: local broker + redis-server + simulator with faults + worker; prints alerts.
demo: install
	$(PY) -m stream_guard demo --duration $(DURATION)

## Dashboard of CONFIG's models on http://127.0.0.1:8050/ (reads Redis and the alerts topic).
CONFIG ?= config.toml
dashboard: install
	$(VENV)/bin/stream-guard dashboard -c $(CONFIG)

## The whole test suite (unit + integration on the embedded broker and a real redis-server,
## the dashboard in headless Chromium).
test: install chromium
	$(PY) -m pytest

unit: install
	$(PY) -m pytest tests/unit

lint: install
	$(VENV)/bin/ruff check stream_guard tests bench
	$(VENV)/bin/mypy

bench: install
	$(PY) bench/throughput.py

## Pin the image's runtime dependencies to the versions installed here.
constraints: install
	$(PY) scripts/constraints.py
## The wide model with labels against a bare decode-only consumer (EVENTS=1000000 for the full run).
bench-wide: install
	$(PY) bench/wide.py --events $(or $(EVENTS),200000)

clean:
	rm -rf $(VENV) build dist *.egg-info
