# Two entry points a new user needs: `make demo` (main job) and `make test` (test suite).
# Both create .venv idempotently (re-run only when pyproject.toml changes).
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export MUJOCO_GL ?= egl

.PHONY: demo test test-learning venv lint clean

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(BIN)/spaars-robot demo

# two test processes on a 2-core machine, each file's tests on one of them (module fixtures are built once): one
# process took 28:37 in CI (stop 24, set-up included); timings of this form in README "Set up"
test: venv
	$(BIN)/python -m pytest -q -n 2 --dist loadfile tests

# the minutes-long learning checks (marker `learning`), kept out of `make test`; the last -m wins over addopts
test-learning: venv
	$(BIN)/python -m pytest -q -m learning tests

# ruff (pyflakes, import order, modern syntax) and the layer contracts in pyproject.toml (import-linter)
lint: venv
	$(BIN)/ruff check spaars_robot tests benchmarks
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) build *.egg-info
