# chkpt: the two commands are `make demo` and `make test`; both set up
# everything they need on a fresh machine (Debian packages, one virtualenv
# per supported CPython found through pyenv, the extension built in place).
#
#   make PYTHON=/path/to/python   build the extension in place for that python
#   make test                     every test, on every supported python present
#   make demo                     a real numpy/pandas script under chkpt

SHELL := /bin/bash
PYENV_ROOT ?= $(shell pyenv root 2>/dev/null || echo $(HOME)/.pyenv)
# Every supported interpreter present (3.11, 3.12, 3.13), newest patch of each.
SUPPORTED := 3.11 3.12 3.13
FOUND_PYTHONS := $(foreach m,$(SUPPORTED),$(lastword $(sort $(wildcard $(PYENV_ROOT)/versions/$(m).*/bin/python$(m)))))
ifeq ($(strip $(FOUND_PYTHONS)),)
FOUND_PYTHONS := $(shell command -v python3)
endif
VENV_DIR ?= .venv
PIP_PACKAGES := setuptools wheel numpy pandas pytest pytest-xdist pytest-timeout hypothesis cloudpickle ipython
# CI builds with warnings as errors.
export CHKPT_WERROR ?= 1

venv_of = $(VENV_DIR)/$(shell $(1) -c 'import sys; print("%d.%d" % sys.version_info[:2])')

.PHONY: all build deps venvs test test-python test-c test-asan test-fuzz check-layers demo bench bench-sklearn clean

all: build

ifdef PYTHON
build: deps
	$(PYTHON) setup.py -q build_ext --inplace
else
build: venvs
	@for py in $(FOUND_PYTHONS); do \
	  v=$$($$py -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	  $(VENV_DIR)/$$v/bin/python setup.py -q build_ext --inplace || exit 1; \
	done
endif

# C libraries from Debian (root here; say what to install elsewhere).
deps:
	@if [ ! -f /usr/include/xxhash.h ] || [ ! -f /usr/include/zstd.h ] || ! command -v clang >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      libxxhash-dev libzstd-dev clang libclang-rt-14-dev valgrind >/dev/null; \
	  else \
	    echo "chkpt: install libxxhash-dev and libzstd-dev (and clang, valgrind for the tests)"; exit 1; \
	  fi; \
	fi

venvs: deps
	@for py in $(FOUND_PYTHONS); do \
	  v=$$($$py -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	  if [ ! -f $(VENV_DIR)/$$v/.ready ]; then \
	    echo "setting up $(VENV_DIR)/$$v"; \
	    $$py -m venv $(VENV_DIR)/$$v && \
	    $(VENV_DIR)/$$v/bin/pip install -q -U --disable-pip-version-check $(PIP_PACKAGES) && \
	    touch $(VENV_DIR)/$$v/.ready || exit 1; \
	  fi; \
	done

# pytest last, so its summary closes the output; -rs lists every skipped
# test with its reason, so a green run says what it did not test; worksteal
# keeps both workers busy to the end (a few tests wait in real time, for
# up to a minute), --durations names the slowest for whoever watches CI's time.
# The test files of version-independent C (tests/conftest.py's
# VERSION_INDEPENDENT, marked version_independent) run on the newest python
# only: the others deselect them by name (-m), and say so.
test: build check-layers test-c test-fuzz test-asan test-python

NEWEST_PYTHON := $(lastword $(FOUND_PYTHONS))

test-python: build
	@status=0; for py in $(FOUND_PYTHONS); do \
	  v=$$($$py -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	  if [ "$$py" = "$(NEWEST_PYTHON)" ]; then \
	    echo "=== pytest on python $$v (all tests) ==="; sel=(); \
	  else \
	    echo "=== pytest on python $$v (not the version_independent tests: those run on the newest python) ==="; \
	    sel=(-m "not version_independent"); \
	  fi; \
	  CHKPT_TEST_VENVS=$(abspath $(VENV_DIR)) \
	    $(VENV_DIR)/$$v/bin/python -m pytest -q -rs -n 2 --dist worksteal --durations=30 -p no:cacheprovider "$${sel[@]}" tests || status=1; \
	done; exit $$status

# the calls between src/'s files go the way src/chkpt.h's map says
check-layers: build
	$(VENV_DIR)/$$($(NEWEST_PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')/bin/python tools/check_layers.py

# the C unit tests under valgrind, then under ASan+UBSan
test-c: deps
	$(MAKE) -C tests/c run asan

test-asan: build
	./tests/asan.sh $(VENV_DIR)

test-fuzz: deps
	$(MAKE) -C tests/fuzz run

demo: build
	@py=$(VENV_DIR)/$$($(lastword $(FOUND_PYTHONS)) -c 'import sys; print("%d.%d" % sys.version_info[:2])')/bin/python; \
	rm -rf demo-checkpoints; \
	echo "\$$ python -m chkpt -f 500 -o demo-checkpoints examples/pipeline.py --days 180"; \
	$$py -m chkpt -f 500 -o demo-checkpoints examples/pipeline.py --days 180 && \
	echo && echo "\$$ python -m chkpt ls demo-checkpoints" && \
	$$py -m chkpt ls demo-checkpoints && \
	last=$$(ls demo-checkpoints/snapshots/*.ckpt | tail -1) && \
	echo && echo "\$$ python -m chkpt show $$last" && \
	$$py -m chkpt show $$last

bench: build
	@py=$(VENV_DIR)/$$($(lastword $(FOUND_PYTHONS)) -c 'import sys; print("%d.%d" % sys.version_info[:2])')/bin/python; \
	for b in bench/bench_*.py; do [ $$b = bench/bench_sklearn.py ] || $$py $$b || exit 1; done
	$(MAKE) bench-sklearn

# scikit-learn's examples (Debian's python-sklearn-doc) under chkpt, on
# SKLEARN_PYTHONS (minor versions; default 3.12). scikit-learn and
# matplotlib go into venvs of their own ($(VENV_DIR)/sklearn-3.X), so that
# `make test` never installs them.
SKLEARN_PYTHONS ?= 3.12
SKLEARN_PACKAGES := $(PIP_PACKAGES) scikit-learn matplotlib
BENCH_ARGS ?=
bench-sklearn: deps
	@if [ ! -d /usr/share/doc/python-sklearn-doc/examples ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      python-sklearn-doc >/dev/null; \
	  else \
	    echo "chkpt: install python-sklearn-doc (Debian) for scikit-learn's examples"; exit 1; \
	  fi; \
	fi
	@for v in $(SKLEARN_PYTHONS); do \
	  py=$$(ls -d $(PYENV_ROOT)/versions/$$v.*/bin/python$$v 2>/dev/null | sort -V | tail -1); \
	  [ -n "$$py" ] || { echo "chkpt: no python $$v found under $(PYENV_ROOT)"; exit 1; }; \
	  venv=$(VENV_DIR)/sklearn-$$v; \
	  if [ ! -f $$venv/.ready ]; then \
	    echo "setting up $$venv"; \
	    $$py -m venv $$venv && \
	    $$venv/bin/pip install -q -U --disable-pip-version-check $(SKLEARN_PACKAGES) && \
	    touch $$venv/.ready || exit 1; \
	  fi; \
	  $$venv/bin/python setup.py -q build_ext --inplace && \
	  $$venv/bin/python bench/bench_sklearn.py $(BENCH_ARGS) || exit 1; \
	done

clean:
	rm -rf build chkpt/*.so demo-checkpoints
	$(MAKE) -C tests/c clean
	$(MAKE) -C tests/fuzz clean
