"""Stopping: SIGTERM saves and exits 0, a killed rank ends the whole job, a failing worker's exit
code is the job's, exit_duration saves. The bridge-train --nproc-per-node tests go through
launch_workers (forked workers on CPU; BRIDGE_TRAIN_START_METHOD=exec: fresh interpreters)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

from tests.integration.harness import ROOT, assert_ok, env, run_job, start_cli_job, start_job, wait_for, worker_pids

MOCK = {"dataset.data_path": None, "train.train_iters": 100000, "train.eval_interval": None, "train.eval_iters": 0}


def test_sigterm_finishes_iteration_saves_and_exits_zero(tmp_path):
    save, log = tmp_path / "ckpt", tmp_path / "log"
    proc = start_job({**MOCK, "train.exit_signal_handler": True, "checkpoint.save": str(save)}, nproc=2, log=log)
    try:
        wait_for(log, r"^iteration\s+3/", proc)
        workers = worker_pids(proc.pid)
        assert len(workers) == 2, workers
        os.kill(workers[1], signal.SIGTERM)  # one rank gets it; all ranks stop together
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    out = log.read_text()
    assert rc == 0, out[-3000:]
    assert "(signal)" in out
    it = int((save / "latest_checkpointed_iteration.txt").read_text())
    assert it >= 3 and f"exiting after iteration {it} (signal)" in out
    assert (save / f"iter_{it:07d}" / "run_config.yaml").is_file()


CLI_TINY = ["--model.num_layers=2", "--model.hidden_size=64", "--model.ffn_hidden_size=256",
            "--model.seq_length=64", "--train.global_batch_size=8", "--train.micro_batch_size=2",
            "--train.train_iters=100000", "--logger.log_interval=1", "--dataset.num_workers=0"]


def test_killed_rank_ends_the_job_nonzero(tmp_path):
    """Through the CLI's --nproc-per-node path (launch_workers -> torch's elastic launcher)."""
    log = tmp_path / "log"
    proc = start_cli_job(["--nproc-per-node", "2", *CLI_TINY], log, timeout=180)
    try:
        wait_for(log, r"^iteration\s+2/", proc)
        workers = worker_pids(proc.pid)
        assert len(workers) == 2, workers
        os.kill(workers[0], signal.SIGKILL)
        rc = proc.wait(timeout=120)  # torchrun stops the other rank: no hang
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    out = log.read_text()
    assert rc not in (0, 124, 137), out[-3000:]
    assert re.search(r"^bridge-train: worker rank [01] was killed by SIGKILL; the job stopped$", out, re.M), out[-3000:]


def test_sigterm_through_the_cli_launcher_saves_and_exits_zero(tmp_path):
    """A forked worker gets SIGTERM as a fresh interpreter would: the loop's handler saves."""
    save, log = tmp_path / "ckpt", tmp_path / "log"
    proc = start_cli_job(["--nproc-per-node", "2", *CLI_TINY, "--train.exit_signal_handler=true",
                          f"--checkpoint.save={save}", "--train.eval_interval=null", "--train.eval_iters=0"], log)
    try:
        wait_for(log, r"^iteration\s+3/", proc)
        workers = worker_pids(proc.pid)
        assert len(workers) == 2, workers
        os.kill(workers[1], signal.SIGTERM)
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    out = log.read_text()
    assert rc == 0, out[-3000:]
    it = int((save / "latest_checkpointed_iteration.txt").read_text())
    assert it >= 3 and f"exiting after iteration {it} (signal)" in out


@pytest.mark.parametrize("start_method", ["fork", "exec"])
def test_failing_worker_gives_its_exit_code_and_one_line(tmp_path, start_method):
    """A mistake only the workers see (a missing data file: validate() does not touch the file
    system) ends the job with the worker's exit code (2) and one line naming the rank; the
    launcher adds no traceback."""
    cmd = [sys.executable, "-m", "megatron_bridge_cli", "--nproc-per-node", "2", *CLI_TINY,
           f"--dataset.data_path={tmp_path / 'missing'}"]
    proc = subprocess.run(["timeout", "--kill-after=10", "180"] + cmd, cwd=ROOT, capture_output=True, text=True,
                          env={**env(), "BRIDGE_TRAIN_START_METHOD": start_method})
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr[-3000:]
    assert proc.stderr.count("bridge-train: error: --dataset.data_path") == 1, proc.stderr[-3000:]
    ours = [line for line in proc.stderr.splitlines() if line.startswith("bridge-train: worker")]
    assert len(ours) == 1 and re.fullmatch(r"bridge-train: worker rank [01] failed with exit code 2; the job stopped",
                                           ours[0]), proc.stderr[-3000:]


def test_exit_duration_saves_and_exits_zero(tmp_path):
    save = tmp_path / "ckpt"
    out = assert_ok(run_job({**MOCK, "train.exit_duration_in_mins": 0.02, "checkpoint.save": str(save)}, nproc=1))
    it = int((save / "latest_checkpointed_iteration.txt").read_text())
    assert f"exiting after iteration {it} (exit duration)" in out


def test_workers_die_with_a_sigkilled_launcher(tmp_path, monkeypatch):
    """No orphans: SIGKILL to the bridge-train launcher ends its workers too (parent-death
    signal), forked (the CPU default) and exec'd alike; both jobs run at once."""
    import psutil

    jobs = {}
    for method in ("fork", "exec"):
        monkeypatch.setenv("BRIDGE_TRAIN_START_METHOD", method)
        log = tmp_path / f"{method}.log"
        jobs[method] = (start_cli_job(["--nproc-per-node", "2", *CLI_TINY], log, timeout=240), log)
    try:
        for method, (proc, log) in jobs.items():
            wait_for(log, r"^iteration\s+2/", proc)
            workers = [psutil.Process(pid) for pid in worker_pids(proc.pid)]
            assert len(workers) == 2, (method, workers)
            launcher = workers[0].parent()
            launcher.kill()
            gone, alive = psutil.wait_procs(workers, timeout=30)
            assert not alive, f"{method}: workers outlived their SIGKILLed launcher: {alive}"
    finally:
        for proc, _ in jobs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)


def test_distributed_optimizer_resume_without_fused_adam_is_refused(tmp_path):
    """megatron-core 0.16.1 restores torch Adam's state wrongly under the distributed optimizer
    (no Apex/TE): through bridge-train the load stops with exit 2 and one message naming the
    flags, instead of an AssertionError traceback or a resume whose losses drift."""
    from megatron.core.optimizer import distrib_optimizer

    if getattr(distrib_optimizer, "HAVE_APEX_OR_TE", False):
        pytest.skip("fused Adam present: the distributed optimizer resumes")
    save = tmp_path / "ckpt"
    base = [sys.executable, "-m", "megatron_bridge_cli", "--nproc-per-node", "2",
            *[a for a in CLI_TINY if not a.startswith("--train.train_iters")],
            "--optimizer.use_distributed_optimizer", "--ddp.use_distributed_optimizer", f"--checkpoint.save={save}",
            "--train.eval_interval=null", "--train.eval_iters=0", "--scheduler.lr_warmup_iters=1"]

    def bridge_train(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(base + list(extra), cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)

    first = bridge_train("--train.train_iters=3")
    assert first.returncode == 0, first.stderr[-3000:]
    refused = bridge_train("--train.train_iters=6", f"--checkpoint.load={save}")
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert refused.stderr.count("bridge-train: error: resuming the distributed optimizer's state") == 1
    assert "--checkpoint.load_optim=false" in refused.stderr and "AssertionError" not in refused.stderr
    weights = bridge_train("--train.train_iters=6", f"--checkpoint.load={save}", "--checkpoint.load_optim=false")
    assert weights.returncode == 0 and "loaded checkpoint" in weights.stdout, weights.stderr[-3000:]
