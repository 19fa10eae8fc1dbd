# The two commands:
#   make demo   set up .venv if needed, then run the main job on the embedded data
#   make test   set up .venv if needed, then run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
# two processes, each test file in one of them (its module fixtures built
# once); PYTEST_ARGS= runs in one process
PYTEST_ARGS ?= -n 2 --dist loadfile
export VENV

.PHONY: setup demo test

setup:
	@bash tools/setup_env.sh

demo: setup
	@$(PY) tools/demo.py $(DEMO_ARGS)

test: setup
	@$(PY) -m pytest $(PYTEST_ARGS)
