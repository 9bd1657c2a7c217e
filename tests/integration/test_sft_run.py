"""A real bridge-train run of --dataset=sft on the shipped instruction set
(scripts/data/sft_tasks.jsonl, byte-level tokens, packed rows): the SFT validation loss falls."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "scripts" / "data" / "sft_tasks.jsonl"
VAL_RE = re.compile(r"^validation loss at iteration (\d+) \| lm loss value: ([0-9.E+-]+)", re.M)


@pytest.fixture(scope="module")
def sft_run():
    """One short single-process run, evaluated every 8 of its 24 steps."""
    cmd = [sys.executable, "-m", "megatron_bridge_cli", "--dataset=sft", f"--dataset.data_path={SHIPPED}",
           "--dataset.split=90,10,0", "--dataset.packed", "--dataset.num_workers=0",
           "--tokenizer.tokenizer_type=ByteLevelTokenizer", "--model.num_layers=2", "--model.seq_length=64",
           "--train.train_iters=24", "--train.eval_interval=8", "--train.eval_iters=2",
           "--train.global_batch_size=8", "--train.micro_batch_size=4", "--scheduler.lr_warmup_iters=2",
           "--logger.log_interval=8"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return subprocess.run(["timeout", "240"] + cmd, cwd=ROOT, capture_output=True, text=True, env=env)


def test_sft_run_on_the_shipped_instruction_set_lowers_the_validation_loss(sft_run):
    assert sft_run.returncode == 0, sft_run.stdout[-2000:] + sft_run.stderr[-3000:]
    losses = [(int(i), float(v)) for i, v in VAL_RE.findall(sft_run.stdout)]
    assert [i for i, _ in losses][:3] == [8, 16, 24], sft_run.stdout[-2000:]
    assert losses[2][1] < losses[0][1] - 0.3, losses  # the SFT validation loss falls


_EPOCHS = """
import collections, json, sys
from megatron_bridge_cli.config.data import FinetuningDatasetConfig
from megatron_bridge_cli.recipes import RECIPES
from megatron_bridge_cli.training import pretrain
from megatron_bridge_cli.training.loop import forward_step

cfg = RECIPES["gpt_cpu_tiny"](seq_length=32, train_iters=1000, global_batch_size=4, micro_batch_size=2)
cfg.dataset = FinetuningDatasetConfig(train_data_path=[sys.argv[1]], num_workers=0, num_epochs=2)
cfg.train.eval_iters = 0
cfg.tokenizer.tokenizer_type = "ByteLevelTokenizer"
cfg.logger.log_interval = 1
seen = []

def recording(data_iterator, model):
    def rows():
        for batch in data_iterator:
            for row in batch["tokens"].tolist():  # "<i>:" then the response: sample i
                seen.append(int(bytes(t for t in row if t < 256).decode().split(":")[0]))
            yield batch
    return forward_step(rows(), model)

assert pretrain(cfg, recording) == 0
print(json.dumps({"seen": seen}))
"""


def test_num_epochs_trains_each_training_sample_once_per_epoch(tmp_path):
    """--dataset.num_epochs=2 on 10 samples, global batch 4: ceil(2 x 10 / 4) = 5 iterations of
    2 micro-batches of 2, through the Python API with a forward step that records the rows."""
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{i}:", "response": f" r{i}"}) + "\n" for i in range(10)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(["timeout", "240", sys.executable, "-c", _EPOCHS, str(data)], cwd=tmp_path,
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])["seen"]
    assert len(seen) == 5 * 4  # exactly 5 iterations x global batch 4
    assert sorted(seen) == sorted(list(range(10)) * 2), seen  # every training sample twice
    assert sorted(seen[:10]) == list(range(10)), seen  # the first epoch holds each once
