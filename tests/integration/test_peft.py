"""--peft=lora|dora end to end, on the demo model (gpt_cpu_tiny: 4 layers, hidden 128), real
torchrun jobs over gloo.

One module fixture runs every job once: a short pretraining (the base checkpoint), LoRA at TP=1
(6 iterations, checkpoints at 3 and 6), the same resumed from 3, LoRA at TP=2, at PP=2 and with
the distributed optimizer at DP=2, DoRA at TP=1
and TP=2 (adapters drawn non-zero so the TP split of B is exercised from the first step), a
merge of each adapter run into a full checkpoint, and one process computing the logits of the
adapted and the merged models on the same tokens. The assertions share them.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.integration.harness import JOB_TIMEOUT, PYTHON, ROOT, assert_ok, close, env, losses

WORKER = Path(__file__).with_name("peft_worker.py")
MERGE = ROOT / "scripts" / "merge_lora.py"

DEMO = {  # gpt_cpu_tiny as shipped, a shorter sequence to keep the jobs quick
    "model.seq_length": 64,
    "model.use_cpu_initialization": True,  # full weights drawn, then split: TP=2 starts as TP=1
    "train.global_batch_size": 8,
    "train.micro_batch_size": 2,
    "train.eval_iters": 1,
    "train.eval_interval": 100,
    "logger.log_interval": 1,
    "dataset.num_workers": 0,
    "dataset.split": "90,5,5",
    "scheduler.lr_warmup_iters": 1,
}
TP2 = {"model.tensor_model_parallel_size": 2,
       "model.make_vocab_size_divisible_by": 64}  # 257 -> 384 rows at TP=2 as at TP=1 (128 x 1)
LORA = {"peft": "lora", "peft.dim": 4, "peft.exclude_modules": ["linear_fc1"], "train.train_iters": 6,
        "optimizer.lr": 5e-3, "optimizer.min_lr": 1e-4}
DORA = {**LORA, "peft": "dora", "peft.exclude_modules": [], "peft.lora_A_init_method": "kaiming",
        "peft.lora_B_init_method": "xavier"}


def job(args: list, nproc: int = 1) -> str:
    launch = [PYTHON] if nproc == 1 else [PYTHON, "-m", "torch.distributed.run", "--standalone",
                                          f"--nproc-per-node={nproc}"]
    proc = subprocess.run(["timeout", "--kill-after=10", str(JOB_TIMEOUT), *launch, *map(str, args)], cwd=ROOT,
                          env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return assert_ok(proc)


def train(overrides: dict, nproc: int = 1) -> str:
    return job([WORKER, "train", json.dumps({**DEMO, **overrides})], nproc)


def finetuning_data(prefix: Path) -> str:
    """20 short documents of one pattern: the finetuning set (a base trained on Python sources
    has not seen it, and its 16 training samples repeat, so the adapters' loss falls fast)."""
    from megatron_bridge_cli.data.preprocess import write_indexed_dataset
    from megatron_bridge_cli.data.tokenizers import ByteLevelTokenizer

    docs = [" ".join(f"Q: {a} plus {b}? A: {a + b}." for b in range(3)) for a in range(20)]
    write_indexed_dataset(docs, ByteLevelTokenizer(), prefix)
    return str(prefix)


@pytest.fixture(scope="module")
def runs(stdlib_data, tmp_path_factory):
    d = tmp_path_factory.mktemp("peft")
    out = {"dir": d}
    out["base"] = train({"dataset.data_path": [stdlib_data], "train.train_iters": 8, "optimizer.lr": 3e-3,
                         "checkpoint.save": str(d / "base"), "checkpoint.save_interval": 8})
    base = {"dataset.data_path": [finetuning_data(d / "sft")], "dataset.split": "80,10,10",
            "checkpoint.pretrained_checkpoint": str(d / "base")}
    out["lora"] = train({**base, **LORA, "checkpoint.save": str(d / "lora"), "checkpoint.save_interval": 3})
    out["resumed"] = train({**base, **LORA, "checkpoint.load": str(d / "lora"), "checkpoint.ckpt_step": 3})
    out["lora_tp2"] = train({**base, **LORA, **TP2}, nproc=2)
    out["lora_pp2"] = train({**base, **LORA, "model.pipeline_model_parallel_size": 2}, nproc=2)
    out["lora_vp2"] = train({**base, **LORA, "model.pipeline_model_parallel_size": 2,
                             "model.virtual_pipeline_model_parallel_size": 2}, nproc=2)  # interleaved 1F1B
    out["lora_distopt"] = train({**base, **LORA, "optimizer.use_distributed_optimizer": True,
                                 "ddp.use_distributed_optimizer": True}, nproc=2)  # DP=2
    out["dora"] = train({**base, **DORA})
    out["dora_tp2"] = train({**base, **DORA, **TP2, "checkpoint.save": str(d / "dora_tp2"),
                             "checkpoint.save_interval": 6}, nproc=2)
    out["merge_lora"] = job([MERGE, d / "lora", d / "lora_merged"])
    out["merge_dora"] = job([MERGE, d / "dora_tp2", d / "dora_merged"])  # TP=2 adapters merged at TP=1
    plain = {**DEMO, "checkpoint.pretrained_checkpoint": str(d / "base")}
    job([WORKER, "logits",
         d / "lora.pt", json.dumps({**plain, **LORA, "checkpoint.load": str(d / "lora")}),
         d / "lora_merged.pt", json.dumps({**DEMO, "checkpoint.pretrained_checkpoint": str(d / "lora_merged")}),
         d / "dora.pt", json.dumps({**plain, **DORA, "checkpoint.load": str(d / "dora_tp2")}),
         d / "dora_merged.pt", json.dumps({**DEMO, "checkpoint.pretrained_checkpoint": str(d / "dora_merged")}),
         d / "base.pt", json.dumps(plain)])
    return out


def test_lora_trains_only_the_adapters(runs):
    out = runs["lora"]
    assert "loaded checkpoint" in out and "(base weights)" in out
    # every base tensor bitwise as loaded; every adapter tensor moved
    assert "rank 0: frozen unchanged: 26/26; adapters changed: 24/24 ['lora_A', 'lora_B']" in out
    # dim 4: 4 layers x (qkv 4x128 + 384x4, proj 4x128 + 128x4, fc2 4x512 + 128x4); fc1 excluded
    assert "(22528 trainable: --peft)" in out
    loss = losses(out)
    assert sorted(loss) == list(range(1, 7))
    assert loss[6] == min(loss.values()) and loss[6] < loss[1] - 0.1, loss


def test_dora_trains_magnitudes_too(runs):
    out = runs["dora"]
    assert "frozen unchanged: 26/26; adapters changed: 48/48 ['lora_A', 'lora_B', 'magnitude']" in out
    loss = losses(out)
    assert loss[6] < loss[1], loss


@pytest.mark.parametrize("kind", ["lora", "dora"])
def test_tp2_matches_tp1(runs, kind):
    one, two = losses(runs[kind]), losses(runs[kind + "_tp2"])
    assert sorted(two) == list(range(1, 7))
    assert close(two, one, rel=2e-6), (one, two)
    for rank in (0, 1):
        assert f"rank {rank}: frozen unchanged:" in runs[kind + "_tp2"]


@pytest.mark.parametrize("layout", ["pp2", "vp2", "distopt"])
def test_pipeline_and_distributed_optimizer_match_one_process(runs, layout):
    out = runs["lora_" + layout]
    assert close(losses(out), losses(runs["lora"]), rel=2e-6), (losses(runs["lora"]), losses(out))
    if layout == "vp2":  # virtual stages: two model chunks per rank, each with its own adapters
        assert all(f"rank {rank}: frozen unchanged:" in out for rank in (0, 1)), out[-2000:]
        return
    # PP: each stage's own base tensors (embedding + 2 layers; 2 layers + final norm + tied output)
    frozen = {"pp2": ("13/13", "14/14"), "distopt": ("26/26", "26/26")}[layout]
    trained = "12/12" if layout == "pp2" else "24/24"
    for rank in (0, 1):
        assert f"rank {rank}: frozen unchanged: {frozen[rank]}; adapters changed: {trained}" in out


def test_resume_matches_uninterrupted(runs):
    out = runs["resumed"]
    assert "iter_0000003 (iteration 3)" in out
    assert losses(out) == {i: losses(runs["lora"])[i] for i in (4, 5, 6)}


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_adapter_checkpoint_holds_only_adapters(runs):
    from torch.distributed.checkpoint import FileSystemReader

    d = runs["dir"]
    keys = set(FileSystemReader(str(d / "lora" / "iter_0000006")).read_metadata().state_dict_metadata)
    model = {k for k in keys if not k.startswith(("optimizer.", "rng_state"))}
    assert model and all(k.rsplit(".", 1)[-1] in ("lora_A", "lora_B") for k in model), sorted(model)
    assert not any("linear_fc1" in k for k in model)  # --peft.exclude_modules
    assert {f"optimizer.state.exp_avg.{k}" for k in model} <= keys
    full, adapters = _size(d / "base" / "iter_0000008"), _size(d / "lora" / "iter_0000006")
    print(f"full checkpoint {full} bytes, LoRA (dim 4, no fc1) checkpoint {adapters} bytes: {full / adapters:.1f}x")
    assert full >= 20 * adapters, (full, adapters)


@pytest.mark.parametrize("kind", ["lora", "dora"])
def test_merged_model_equals_adapted_model(runs, kind):
    import torch

    d = runs["dir"]
    assert f"merged {12 if kind == 'lora' else 16} adapters" in runs[f"merge_{kind}"]
    adapted, merged, base = (torch.load(d / f"{name}.pt") for name in (kind, f"{kind}_merged", "base"))
    assert adapted.dtype == torch.float32 and adapted.shape == (2, 64, 384)
    assert (adapted - base).abs().max() > 1e-2  # the adapters do change the outputs
    torch.testing.assert_close(merged, adapted, rtol=1e-5, atol=1e-5)


def test_adapter_checkpoint_is_not_taken_for_a_model(runs):
    d = runs["dir"]
    proc = subprocess.run(
        ["timeout", "--kill-after=10", str(JOB_TIMEOUT), PYTHON, WORKER, "logits", d / "x.pt",
         json.dumps({**DEMO, "checkpoint.pretrained_checkpoint": str(d / "lora")})],
        cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.returncode == 2, proc.stdout[-3000:]
    assert "holds only LoRA adapters (saved by a --peft run), not a model" in proc.stdout
    assert "scripts/merge_lora.py" in proc.stdout and "Traceback" not in proc.stdout


def test_targets_that_name_no_layer_are_refused(runs):
    d = runs["dir"]
    overrides = {**DEMO, **LORA, "peft.target_modules": ["linear_qvk"],
                 "checkpoint.pretrained_checkpoint": str(d / "base")}
    proc = subprocess.run(
        ["timeout", "--kill-after=10", str(JOB_TIMEOUT), PYTHON, WORKER, "logits", d / "y.pt", json.dumps(overrides)],
        cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.returncode == 2, proc.stdout[-3000:]
    assert "--peft.target_modules=['linear_qvk'] (minus --peft.exclude_modules=['linear_fc1']) names no linear " \
           "layer of this model" in proc.stdout
    assert "(did you mean linear_qkv?)" in proc.stdout and "Traceback" not in proc.stdout
