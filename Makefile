# The two quickstart commands: `make demo` and `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# torch first, pinned to the CPU wheel these machines carry; an unpinned torch would pull GBs of CUDA.
TORCH  ?= torch==2.13.0

.PHONY: setup demo test clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(PY) -m megatron_bridge_cli --dry-run --world-size 2

test: setup
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) demo_run .pytest_cache
