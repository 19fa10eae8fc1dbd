# The two commands:
#   make demo   set up .venv if needed, then run the main job on the embedded data
#   make test   set up .venv if needed, then run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# the suite runs in this many processes, one test file each at a time (most
# tests wait on single-threaded tool subprocesses, so 2 processes fill 2 cores)
TEST_WORKERS ?= 2
export VENV

.PHONY: setup demo test

setup:
	@bash tools/setup_env.sh

demo: setup
	@$(PY) tools/demo.py $(DEMO_ARGS)

test: setup
	@$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)
