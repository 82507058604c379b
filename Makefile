# resplat: `make run` trains the quickstart job, `make test` runs the test suite.
# Both set up what they need first: Debian packages for FFCV, a venv in .venv, the project.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.resplat-installed
APT_PACKAGES := pkg-config libopencv-dev libturbojpeg0-dev
# Servers and a browser the tests start themselves (PostgreSQL, Prometheus, headless Chromium).
TEST_APT_PACKAGES := postgresql prometheus chromium chromium-driver
JOB ?= jobs/cifar10-resnet20.yaml

.PHONY: setup system-deps test-deps data run test test-fast bench clean

setup: $(INSTALLED)

system-deps:
	@$(MAKE) --no-print-directory apt-install PACKAGES="$(APT_PACKAGES)" WHY="FFCV compiles against them"

test-deps:
	@$(MAKE) --no-print-directory apt-install PACKAGES="$(TEST_APT_PACKAGES)" WHY="the tests start them"

apt-install:
	@missing=$$(for p in $(PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages ($(WHY)): $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "resplat needs the Debian packages: $$missing ($(WHY))."; \
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

# Tests run two at a time: much of a test's time is serial process start-ups that leave a core
# idle. Each module stays on one worker, its fixtures set up once. TEST_WORKERS=0: one at a time.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope

test: setup test-deps
	$(PYTEST)

# The inner loop: every test that starts no Ray and trains nothing (a minute or two).
test-fast: setup
	$(PYTEST) -m "not slow"

# The benchmark suite (tens of minutes on a 2-core CPU); each appends its record under bench/results/.
bench: data
	$(BIN)/python bench/loader.py
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/first_step.py
	$(BIN)/python bench/sweep_startup.py
	$(BIN)/python bench/time_to_accuracy.py
	$(BIN)/python bench/gpu.py
	$(BIN)/python bench/summary.py

clean:
	rm -rf .resplat/ray_results .resplat/tune .resplat/betons .pytest_cache
