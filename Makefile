# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
VENV_PYTHON := $(VENV)/bin/python

.PHONY: run test test-fast test-e2e e2e-tools venv dev-venv screenshots clean

$(VENV_PYTHON):
	$(PYTHON) -m venv $(VENV)

# Stamps record which requirements were installed, so an edit to a requirements file re-installs.
$(VENV)/.runtime-installed: requirements.txt | $(VENV_PYTHON)
	$(VENV_PYTHON) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev-installed: requirements.txt requirements-dev.txt | $(VENV_PYTHON)
	$(VENV_PYTHON) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

venv: $(VENV)/.runtime-installed
dev-venv: $(VENV)/.dev-installed

## Start the mock Rocket.Chat and the relay wired to it; Ctrl-C stops both.
run: venv
	VENV_PYTHON=$(VENV_PYTHON) bash scripts/run-demo.sh

## Install the real Alertmanager, Prometheus, docker-compose and systemd-analyze the end-to-end and deploy-file
## tests run (Debian packages, only those missing, only as root; otherwise those tests skip and say how).
e2e-tools:
	bash tests/e2e/install-tools.sh

## Install everything the tests need and run the whole suite.
test: dev-venv e2e-tools
	$(VENV_PYTHON) -m pytest

## The end-to-end tests alone: real Alertmanager and Prometheus, the relay under gunicorn, the mock Rocket.Chat.
test-e2e: dev-venv e2e-tools
	$(VENV_PYTHON) -m pytest -m e2e

## The fast tests only (no slow or end-to-end ones).
test-fast: dev-venv
	$(VENV_PYTHON) -m pytest -m "not slow and not e2e"

## The README's screenshots (docs/screenshots/*.png): the status page and the mock Rocket.Chat in headless Chromium.
screenshots: dev-venv e2e-tools
	$(VENV_PYTHON) scripts/screenshots.py

clean:
	rm -rf $(VENV) .pytest_cache
