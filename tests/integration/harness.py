"""Helpers of the training integration tests: launch real torchrun jobs, read what they wrote.

Every job runs under a wall-clock ``timeout`` so that a hang fails the test instead of
blocking CI. Jobs use a tiny GPT (hidden 64, seq 64) so a run costs seconds on 2 CPU cores.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("train_worker.py")
PYTHON = sys.executable
JOB_TIMEOUT = 240

TINY = {
    "model.num_layers": 4,
    "model.hidden_size": 64,
    "model.ffn_hidden_size": 256,
    "model.seq_length": 64,
    # Full weights are drawn on CPU and then split, so TP=2 starts from TP=1's exact weights.
    "model.use_cpu_initialization": True,
    "train.global_batch_size": 8,
    "train.micro_batch_size": 2,
    "train.eval_iters": 1,
    "logger.log_interval": 1,
    "dataset.num_workers": 0,
    "dataset.split": "90,5,5",
    "scheduler.lr_warmup_iters": 1,
}

LOSS_RE = re.compile(r"^iteration\s+(\d+)/\s*(\d+) \|.*\| lm loss: ([0-9.E+-]+) \|", re.M)
VAL_RE = re.compile(r"^validation loss at iteration (\d+)( on (validation|test) set)? \| lm loss value: ([0-9.E+-]+) \|", re.M)
STEP_VALUES_RE = re.compile(r"^iteration\s+(\d+)/\s*\d+ \|.*\| learning rate: (\S+) \|.*\| lm loss: (\S+) \|"
                            r".*\| grad norm: (\S+) \|", re.M)
"""An iteration line's number, learning rate, loss and grad norm, as printed (compared exactly)."""


def resumable_cli_args(iters: int) -> list[str]:
    """A 2-rank ``bridge-train`` job of the tiny GPT whose resumed iterations log bit-identical
    values (the crash and restart tests compare them with an uninterrupted run): no evaluation,
    and the plain optimizer, whose state resumes exactly (the distributed one's only with Apex/TE)."""
    return ["--nproc-per-node", "2", "--model.num_layers=2", "--model.hidden_size=64", "--model.ffn_hidden_size=256",
            "--model.seq_length=64", "--train.global_batch_size=8", "--train.micro_batch_size=2",
            f"--train.train_iters={iters}", "--logger.log_interval=1", "--dataset.num_workers=0",
            "--train.eval_interval=null", "--train.eval_iters=0", "--scheduler.lr_warmup_iters=1",
            "--optimizer.use_distributed_optimizer=false", "--ddp.use_distributed_optimizer=false"]


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    e["OMP_NUM_THREADS"] = "1"
    e.pop("RANK", None)
    e.pop("WORLD_SIZE", None)
    return e


def command(overrides: dict, nproc: int) -> list[str]:
    cfg = {**TINY, **overrides}
    if nproc == 1:
        return [PYTHON, str(WORKER), json.dumps(cfg)]
    return [PYTHON, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", str(WORKER),
            json.dumps(cfg)]


def run_job(overrides: dict, nproc: int, timeout: float = JOB_TIMEOUT) -> subprocess.CompletedProcess:
    """Run a job to completion; the result has .stdout (stdout+stderr) and .returncode."""
    proc = subprocess.run(
        ["timeout", "--kill-after=10", str(int(timeout))] + command(overrides, nproc),
        cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    return proc


def start_job(overrides: dict, nproc: int, log: Path, timeout: float = JOB_TIMEOUT) -> subprocess.Popen:
    """Start a job in the background, its output going to ``log``."""
    f = open(log, "w")
    return subprocess.Popen(
        ["timeout", "--kill-after=10", str(int(timeout))] + command(overrides, nproc),
        cwd=ROOT, env=env(), stdout=f, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )


def wait_for(log: Path, pattern: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if re.search(pattern, log.read_text(), re.M):
            return
        if proc.poll() is not None:
            raise AssertionError(f"job ended (rc={proc.returncode}) before {pattern!r}:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    raise AssertionError(f"{pattern!r} did not appear within {timeout}s:\n{log.read_text()[-3000:]}")


def start_cli_job(argv: list[str], log: Path, timeout: float = JOB_TIMEOUT) -> subprocess.Popen:
    """Start ``python -m megatron_bridge_cli ARGV`` (bridge-train) in the background, output to ``log``."""
    f = open(log, "w")
    return subprocess.Popen(
        ["timeout", "--kill-after=10", str(int(timeout)), PYTHON, "-m", "megatron_bridge_cli", *argv],
        cwd=ROOT, env=env(), stdout=f, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )


def _is_launcher(proc, cmd: str) -> bool:
    """torchrun, or bridge-train --nproc-per-node; not the `timeout` wrapped around it."""
    import psutil

    try:
        python = "python" in Path(proc.exe()).name
    except psutil.Error:
        return False
    return python and ("torch.distributed.run" in cmd or "--nproc-per-node" in cmd)


def worker_pids(root_pid: int) -> list[int]:
    """The training processes below a launcher (python processes running the worker).

    Under a launcher they are its direct children: torchrun's fresh interpreters, or
    bridge-train's forked workers, whose command line is the launcher's own.
    """
    import psutil

    def cmdline(proc) -> Optional[str]:
        try:
            return " ".join(proc.cmdline())
        except psutil.Error:
            return None

    tree, launcher = [psutil.Process(root_pid)], None
    for proc in tree:  # breadth first: the outermost launcher
        cmd = cmdline(proc)
        if cmd is not None and _is_launcher(proc, cmd):
            launcher = proc
            break
        try:
            tree += proc.children()
        except psutil.Error:
            pass
    candidates = launcher.children() if launcher is not None else psutil.Process(root_pid).children(recursive=True)
    out = []
    for child in candidates:
        cmd = cmdline(child)
        if cmd is None or "multiprocessing" in cmd:
            continue  # gone, or a helper process (resource tracker, spawn/forkserver child)
        if str(WORKER) in cmd or "megatron_bridge_cli" in cmd:
            out.append(child.pid)
    return sorted(out)


def losses(output: str) -> dict[int, float]:
    """{iteration: lm loss} from the console log lines."""
    return {int(m.group(1)): float(m.group(3)) for m in LOSS_RE.finditer(output)}


def val_losses(output: str) -> list[tuple[int, Optional[str], float]]:
    return [(int(m.group(1)), m.group(3), float(m.group(4))) for m in VAL_RE.finditer(output)]


_PER_STEP_RE = re.compile(r"^(iteration\s+\d+/\s*\d+ \||validation loss at iteration \d+|-{100}$)")
_TORCH_LOG_PREFIX_RE = re.compile(r"^[DIWE]\d{4} [\d:.]+ \d+ \S+:\d+\] ")


def repeated_lines(output: str) -> dict[str, int]:
    """{line: count} of the lines a job printed more than once, leaving out its per-iteration
    and per-evaluation lines and lines with no words (torchrun's banner of asterisks)."""
    from collections import Counter

    counts = Counter(
        line.rstrip() for line in output.splitlines()
        if re.search(r"[A-Za-z]", _TORCH_LOG_PREFIX_RE.sub("", line)) and not _PER_STEP_RE.match(line)
    )
    return {line: n for line, n in counts.items() if n > 1}


def tb_scalars(logdir: Path) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} of every scalar in the TensorBoard event files under logdir."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def assert_ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, f"job failed (rc={proc.returncode}):\n{proc.stdout[-4000:]}"
    return proc.stdout


def close(a: dict[int, float], b: dict[int, float], rel: float) -> bool:
    return a.keys() == b.keys() and all(abs(a[k] - b[k]) <= rel * abs(b[k]) for k in a)


def job_processes(root_pid: int) -> list:
    """Every process below ``root_pid`` right now (psutil.Process objects)."""
    import psutil

    try:
        return psutil.Process(root_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def still_running(procs: list, timeout: float) -> list:
    """Those of ``procs`` still running (zombies count as gone) after waiting up to ``timeout``."""
    import psutil

    def running(p) -> bool:
        try:
            return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.time() + timeout
    left = [p for p in procs if running(p)]
    while left and time.time() < deadline:
        time.sleep(0.02)
        left = [p for p in left if running(p)]
    return left
