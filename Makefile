# The two quickstart commands: `make demo` and `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# torch first, pinned to the CPU wheel these machines carry; an unpinned torch would pull GBs of CUDA.
TORCH  ?= torch==2.13.0

.PHONY: setup demo finetune-demo test clean

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

# The finetuning demo: pretrain the demo model briefly on the stdlib text, then LoRA-finetune it
# on the instruction set shipped in scripts/data/sft_tasks.jsonl (--dataset=sft, packed rows,
# loss on the responses only); the validation loss is printed every 20 iterations.
FT_DIR := demo_run/finetune

finetune-demo: setup $(DEMO_DATA).bin
	$(PY) -m megatron_bridge_cli --nproc-per-node 2 --dataset.data_path=$(DEMO_DATA) --train.train_iters=60 \
		--train.eval_iters=0 --checkpoint.save=$(FT_DIR)/base
	$(PY) -m megatron_bridge_cli --nproc-per-node 2 --peft=lora --checkpoint.pretrained_checkpoint=$(FT_DIR)/base \
		--dataset=sft --dataset.data_path=scripts/data/sft_tasks.jsonl --dataset.split=90,10,0 --dataset.packed \
		--train.train_iters=60 --train.eval_interval=20 --train.eval_iters=2 --optimizer.lr=1e-2 \
		--scheduler.lr_warmup_iters=4 --checkpoint.save=$(FT_DIR)/lora

test: setup
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) demo_run .pytest_cache
