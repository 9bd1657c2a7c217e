"""Stopping: SIGTERM saves and exits 0, a killed, hung or departed rank ends the whole job
non-zero (within --dist.distributed_timeout_minutes) leaving no process behind, a failing
worker's exit code is the job's, exit_duration saves. The bridge-train --nproc-per-node tests go
through launch_workers (forked workers on CPU; BRIDGE_TRAIN_START_METHOD=exec: fresh interpreters)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.integration.harness import (
    PYTHON, ROOT, WORKER, assert_ok, env, job_processes, losses, run_job, start_cli_job, start_job, still_running, wait_for,
    worker_pids,
)

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
        everything = job_processes(proc.pid)  # launcher, workers and what they started
        os.kill(workers[0], signal.SIGKILL)
        rc = proc.wait(timeout=120)  # torchrun stops the other rank: no hang
        assert not still_running(everything, timeout=10)
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


@pytest.fixture(scope="module")
def four_layer_checkpoint(tmp_path_factory):
    """A checkpoint of the harness's 4-layer model (CLI_TINY builds 2 layers)."""
    save = tmp_path_factory.mktemp("four_layers") / "ckpt"
    assert_ok(run_job({**MOCK, "train.train_iters": 2, "checkpoint.save": str(save)}, nproc=1))
    return save


@pytest.mark.parametrize("start_method", ["fork", "exec"])
def test_failing_worker_gives_its_exit_code_and_one_line(four_layer_checkpoint, start_method):
    """A mistake only the workers see (a checkpoint of another model: the launcher's pre-flight
    reads files, not tensors) ends the job with the worker's exit code (2), the message once
    (rank 0) and one line naming the rank; the launcher adds no traceback."""
    cmd = [sys.executable, "-m", "megatron_bridge_cli", "--nproc-per-node", "2", *CLI_TINY,
           f"--checkpoint.load={four_layer_checkpoint}"]
    proc = subprocess.run(["timeout", "--kill-after=10", "180"] + cmd, cwd=ROOT, capture_output=True, text=True,
                          env={**env(), "BRIDGE_TRAIN_START_METHOD": start_method})
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr[-3000:]
    assert proc.stderr.count("bridge-train: error: --checkpoint.load") == 1, proc.stderr[-3000:]
    assert "this model does not fit the checkpoint" in proc.stderr
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
            everything = job_processes(launcher.pid)  # the workers and whatever they started
            launcher.kill()
            gone, alive = psutil.wait_procs(workers, timeout=30)
            assert not alive, f"{method}: workers outlived their SIGKILLed launcher: {alive}"
            assert not still_running(everything, timeout=10), method
    finally:
        for proc, _ in jobs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)


def test_distributed_optimizer_resumes_exactly_without_fused_adam(tmp_path):
    """megatron-core 0.16.1 restores torch Adam's state wrongly under the distributed optimizer
    (no Apex/TE; training/torch_adam_state.py repairs it): through bridge-train, DP=2, a run
    resumed from iteration 4 logs the uninterrupted run's losses at 5-8 exactly (before the
    repair: an AssertionError, and past that, drift from iteration 6 on)."""
    save = tmp_path / "ckpt"
    base = [sys.executable, "-m", "megatron_bridge_cli", "--nproc-per-node", "2",
            *[a for a in CLI_TINY if not a.startswith("--train.train_iters")], "--train.train_iters=8",
            "--optimizer.use_distributed_optimizer", "--ddp.use_distributed_optimizer", f"--checkpoint.save={save}",
            "--checkpoint.save_interval=4", "--train.eval_interval=null", "--train.eval_iters=0",
            "--scheduler.lr_warmup_iters=1"]

    def bridge_train(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(base + list(extra), cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)

    full = bridge_train()
    assert full.returncode == 0, full.stderr[-3000:]
    resumed = bridge_train(f"--checkpoint.load={save}", "--checkpoint.ckpt_step=4", f"--checkpoint.save={tmp_path / 'b'}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "loaded checkpoint" in resumed.stdout and "(iteration 4)" in resumed.stdout
    assert sorted(losses(resumed.stdout)) == [5, 6, 7, 8]
    assert losses(resumed.stdout) == {i: losses(full.stdout)[i] for i in range(5, 9)}


@pytest.mark.parametrize("fault", ["hang", "exit0"])
def test_a_rank_that_hangs_or_leaves_ends_the_job_within_the_timeout(tmp_path, fault):
    """Rank 1 stops at iteration 3: it hangs outside any collective, or exits 0 (torchrun counts
    that as success and keeps waiting for rank 0). Rank 0 waits in the gradient all-reduce:
    gloo gives up after --dist.distributed_timeout_minutes (0.1 = 6 s; the peer's closed socket
    ends it sooner when rank 1 exits), the job ends non-zero, and no process is left."""
    timeout_s = 6
    log = tmp_path / "log"
    with open(log, "w") as f:
        proc = subprocess.Popen(
            ["timeout", "--kill-after=10", "240", PYTHON, str(WORKER), "--cli", "--nproc-per-node", "2", *CLI_TINY,
             f"--dist.distributed_timeout_minutes={timeout_s / 60}", "--train.eval_interval=null",
             "--train.eval_iters=0"],
            cwd=ROOT, env={**env(), "BRIDGE_TRAIN_TEST_FAULT": f"{fault}:1:3"}, stdout=f, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        wait_for(log, r"^fault: rank 1", proc)
        faulted, everything = time.time(), job_processes(proc.pid)
        rc = proc.wait(timeout=timeout_s + 60)
        took = time.time() - faulted
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    out = log.read_text()
    assert rc not in (0, 124, 137), out[-3000:]
    assert re.search(r"^bridge-train: worker rank 0 failed with exit code 1; the job stopped$", out, re.M), out[-3000:]
    # rank 0 says what happened in one paragraph, naming the timeout flag, not gloo's traceback
    assert re.search(r"^bridge-train: error: rank 0: a collective with the other ranks failed \(.*\); another rank "
                     r"has died or hangs .*--dist\.distributed_timeout_minutes=0\.1$", out, re.M), out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    if fault == "hang":
        assert "Timed out waiting 6000ms" in out, out[-3000:]
        assert timeout_s * 0.9 <= took <= timeout_s + 30, took
    else:
        assert took <= timeout_s + 30, took
    assert not still_running(everything, timeout=10)
