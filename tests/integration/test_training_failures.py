"""Stopping: SIGTERM saves and exits 0, a killed rank ends the whole job, exit_duration saves."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from tests.integration.harness import ROOT, assert_ok, env, run_job, start_job, wait_for, worker_pids

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


def test_killed_rank_ends_the_job_nonzero(tmp_path):
    """Through the CLI's --nproc-per-node path (launch_workers -> torch.distributed.run)."""
    log = tmp_path / "log"
    cmd = [sys.executable, "-m", "megatron_bridge_cli", "--nproc-per-node", "2",
           "--model.num_layers=2", "--model.hidden_size=64", "--model.ffn_hidden_size=256",
           "--model.seq_length=64", "--train.global_batch_size=8", "--train.micro_batch_size=2",
           "--train.train_iters=100000", "--logger.log_interval=1", "--dataset.num_workers=0"]
    with open(log, "w") as f:
        proc = subprocess.Popen(["timeout", "--kill-after=10", "180"] + cmd, cwd=ROOT, env=env(), stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(log, r"^iteration\s+2/", proc)
        workers = worker_pids(proc.pid)
        assert len(workers) == 2, workers
        os.kill(workers[0], signal.SIGKILL)
        rc = proc.wait(timeout=120)  # torchrun stops the other rank: no hang
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert rc not in (0, 124, 137), log.read_text()[-3000:]


def test_exit_duration_saves_and_exits_zero(tmp_path):
    save = tmp_path / "ckpt"
    out = assert_ok(run_job({**MOCK, "train.exit_duration_in_mins": 0.02, "checkpoint.save": str(save)}, nproc=1))
    it = int((save / "latest_checkpointed_iteration.txt").read_text())
    assert f"exiting after iteration {it} (exit duration)" in out
