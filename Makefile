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

# The demo: 2 CPU processes train the default recipe (gpt_cpu_tiny) on real text that needs no
# download (4 MB of Python's own stdlib sources, byte-level tokens), print Megatron-LM log lines
# and validation losses, and save a checkpoint under demo_run/checkpoints.
DEMO_DATA := demo_run/data/stdlib_text_document

$(DEMO_DATA).bin: | setup
	$(PY) scripts/preprocess_data.py --python-stdlib-mb 4 --output-prefix $(DEMO_DATA)

demo: setup $(DEMO_DATA).bin
	$(PY) -m megatron_bridge_cli --nproc-per-node 2 \
		--dataset.data_path=$(DEMO_DATA) --train.train_iters=120 --checkpoint.save=demo_run/checkpoints

test: setup
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) demo_run .pytest_cache
