# resplat: `make run` trains the quickstart job, `make test` runs the test suite.
# Both set up what they need first: Debian packages for FFCV, a venv in .venv, the project.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.resplat-installed
APT_PACKAGES := pkg-config libopencv-dev libturbojpeg0-dev
JOB ?= jobs/cifar10-resnet20.yaml

.PHONY: setup system-deps data run test bench clean

setup: $(INSTALLED)

system-deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages FFCV compiles against: $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "resplat needs the Debian packages: $$missing (FFCV compiles against them)."; \
	    echo "Install them with: sudo apt-get install $$missing   then run make again."; exit 1; \
	  fi; \
	fi

$(INSTALLED): pyproject.toml
	@$(MAKE) --no-print-directory system-deps
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

data: setup
	$(BIN)/resplat data cifar10

run: data
	$(BIN)/resplat submit $(JOB)

test: setup
	$(BIN)/python -m pytest

bench: data
	$(BIN)/python bench/loader.py

clean:
	rm -rf .resplat/ray_results .resplat/betons .pytest_cache
