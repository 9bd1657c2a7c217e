"""The fields issue 11 found accepted and ignored now change the run (real training jobs).

Five short jobs of the harness's tiny GPT, started together and shared by the assertions:

    base      1 process, fp32, --logger.log_params_norm, --logger.timing_log_level=2
    autocast  1 process, fp32 weights, --mixed_precision.autocast_enabled with bf16, timing level 1
    tp2       2 processes, TP=2 (same initial weights as base), params norm and timing level 1
    nan       1 process, a learning rate of 1e30: the loss goes NaN and the check stops the run
    nan_off   the same with --rerun_state_machine.check_for_nan_in_loss=false: it trains on

The params norm printed is compared with one computed by the worker from the parameters
themselves (field_worker.py), not with bridge-train's own arithmetic.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.integration.harness import LOSS_RE, PYTHON, ROOT, TINY, env

FIELD_WORKER = ROOT / "tests" / "integration" / "field_worker.py"
SHORT = {**TINY, "model.num_layers": 2, "train.train_iters": 3, "train.eval_iters": 0, "train.eval_interval": None,
         "scheduler.lr_warmup_iters": 0}
NAN = {**SHORT, "train.train_iters": 6, "optimizer.lr": 1e30, "optimizer.clip_grad": 0.0,
       "scheduler.lr_decay_style": "constant"}
JOBS = {
    "base": (1, {**SHORT, "logger.log_params_norm": True, "logger.timing_log_level": 2}),
    "autocast": (1, {**SHORT, "mixed_precision": "fp32", "mixed_precision.autocast_enabled": True,
                     "mixed_precision.autocast_dtype": "bfloat16", "logger.timing_log_level": 1}),
    # Vocabulary padded to 384 rows as at TP=1 (its default would pad to a multiple of 256): same model.
    "tp2": (2, {**SHORT, "model.tensor_model_parallel_size": 2, "model.make_vocab_size_divisible_by": 64,
                "logger.log_params_norm": True, "logger.timing_log_level": 1}),
    "nan": (1, NAN),
    "nan_off": (1, {**NAN, "rerun_state_machine.check_for_nan_in_loss": False}),
}
PARAMS_NORM_RE = re.compile(r"^iteration\s+(\d+)/.*\| params norm: ([0-9.]+) \|", re.M)
ITER_RE = re.compile(r"^iteration\s+(\d+)/", re.M)


def _command(nproc: int, overrides: dict) -> list[str]:
    args = [str(FIELD_WORKER), json.dumps(overrides)]
    if nproc == 1:
        return [PYTHON, *args]
    return [PYTHON, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """name -> (exit code, output) of every job; they run at the same time."""
    logs = tmp_path_factory.mktemp("field_effects")
    procs = {}
    for name, (nproc, overrides) in JOBS.items():
        with open(logs / name, "w") as f:
            procs[name] = subprocess.Popen(["timeout", "--kill-after=10", "240", *_command(nproc, overrides)],
                                           cwd=ROOT, env=env(), stdout=f, stderr=subprocess.STDOUT, text=True)
    return {name: (p.wait(), (logs / name).read_text()) for name, p in procs.items()}


def _ok(runs, name) -> str:
    rc, out = runs[name]
    assert rc == 0, out[-3000:]
    return out


def _observed(out: str, what: str) -> str:
    return re.search(rf"^observed {what}: (\S+)$", out, re.M).group(1)


def test_params_norm_is_logged_and_is_the_norm_of_the_parameters(runs):
    out = _ok(runs, "base")
    norms = {int(i): float(n) for i, n in PARAMS_NORM_RE.findall(out)}
    assert sorted(norms) == [1, 2, 3], out[-3000:]
    assert len(set(norms.values())) > 1  # it follows training
    assert norms[3] == pytest.approx(float(_observed(out, "params norm")), abs=1.5e-3)
    assert "| params norm:" not in _ok(runs, "autocast")  # off by default


def test_params_norm_counts_tensor_parallel_shards_once(runs):
    """TP=2 starts from TP=1's weights and trains the same steps: the same norm, so replicated
    parameters (norms) were counted once and the shards summed over both ranks."""
    base = {int(i): float(n) for i, n in PARAMS_NORM_RE.findall(_ok(runs, "base"))}
    tp2 = {int(i): float(n) for i, n in PARAMS_NORM_RE.findall(_ok(runs, "tp2"))}
    assert tp2.keys() == base.keys()
    for i in base:
        assert tp2[i] == pytest.approx(base[i], abs=1.5e-3), (i, base, tp2)


def _timer_names(out: str) -> set:
    blocks = re.findall(r"^\(min, max\) time across ranks \(ms\):\n((?:    .*\n)+)", out, re.M)
    return {re.match(r"\s+(\S+) \.", line).group(1) for block in blocks for line in block.splitlines()}


def test_timing_log_level_chooses_the_timers_printed(runs):
    level2, level1 = _timer_names(_ok(runs, "base")), _timer_names(_ok(runs, "autocast"))
    assert {"forward-backward", "optimizer", "forward-compute", "backward-compute", "batch-generator"} <= level2
    assert {"forward-backward", "optimizer"} <= level1
    assert not {"forward-compute", "backward-compute", "batch-generator"} & level1
    assert {"forward-backward", "optimizer"} <= _timer_names(_ok(runs, "tp2"))  # min/max gathered over gloo
    assert not _timer_names(_ok(runs, "nan_off"))  # level 0: the log line's iteration time only


def test_autocast_runs_the_forward_in_bf16_on_fp32_weights(runs):
    base, autocast = _ok(runs, "base"), _ok(runs, "autocast")
    assert _observed(base, "linear output dtype") == "torch.float32"
    assert _observed(autocast, "linear output dtype") == "torch.bfloat16"
    first = {name: float(LOSS_RE.search(out).group(3)) for name, out in (("base", base), ("autocast", autocast))}
    # same weights and data: bf16 arithmetic moves the first loss a little, not a lot
    assert first["base"] != first["autocast"] and first["autocast"] == pytest.approx(first["base"], abs=0.05)


def test_nan_loss_stops_the_run_naming_rank_and_iteration(runs):
    rc, out = runs["nan"]
    assert rc == 1, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    m = re.search(r"bridge-train: error: rank 0, iteration (\d+): the loss is (NaN|Inf) \(checked by "
                  r"--rerun_state_machine\.check_for_nan_in_loss\)", out)
    assert m, out[-3000:]
    stopped = int(m.group(1))
    assert max(int(i) for i in ITER_RE.findall(out)) == stopped - 1  # no step past the bad one
    # without the check the same run trains on, and that iteration is its first non-finite loss
    off = _ok(runs, "nan_off")
    nan_counts = {int(i): int(n) for i, n in re.findall(r"^iteration\s+(\d+)/.*number of nan iterations:\s+(\d+) \|",
                                                       off, re.M)}
    assert sorted(nan_counts) == list(range(1, 7))
    assert min(i for i, n in nan_counts.items() if n > 0) == stopped
