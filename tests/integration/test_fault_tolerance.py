"""Fault tolerance and restarts with real processes: ft_launcher's hang detection, torchrun's
--max-restarts, and the refusals (ft without its launcher, in-process restart on CPU).

Three 2-rank bridge-train jobs of 12 iterations on the same tiny GPT, run once for the module:
- baseline: uninterrupted.
- hung: ``--ft`` (bridge-train runs it under nvidia-resiliency-ext's ft_launcher) with learned
  timeouts; rank 1 stops (SIGSTOP) as iteration 7 begins. Nothing but the heartbeat timeout can
  find it: the process is alive, its peer waits in a collective.
- killed: plain launcher with ``--max-restarts 1``; rank 0 is SIGKILLed as iteration 6 begins.
Both must restart, resume from the latest checkpoint in --checkpoint.save by themselves and log
exactly the baseline's loss, learning rate and grad norm at every iteration (as printed: on CPU
a resumed step is bit-identical, see test_crash_safety). Every process a job started (workers,
rank monitors, checkpoint writers) must be gone when it ends.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.harness import (
    PYTHON, ROOT, STEP_VALUES_RE, env, job_processes, resumable_cli_args, start_cli_job, still_running,
)

pytest.importorskip("nvidia_resiliency_ext")

ITERS = 12
ARGS = resumable_cli_args(ITERS)
LINE_RE = STEP_VALUES_RE
SET_RE = re.compile(r"ft: heartbeat timeouts set from observed intervals: initial ([\d.]+)s, subsequent ([\d.]+)s")
WAITED_RE = re.compile(r"Did not get subsequent heartbeat\. Waited ([\d.]+) seconds")


def _run(argv: list[str], log: Path, timeout: float = 200) -> dict:
    """Run a bridge-train job to its end; its log, exit code, and every process it ever had."""
    proc = start_cli_job(argv, log, timeout=timeout)
    seen: dict[int, object] = {}
    while proc.poll() is None:
        for p in job_processes(proc.pid):
            seen.setdefault(p.pid, p)
        time.sleep(0.1)
    return {"rc": proc.returncode, "log": log.read_text(), "procs": list(seen.values())}


def _lines(text: str) -> list[tuple[int, tuple[str, str, str]]]:
    """Every iteration line in log order: (iteration, (loss, lr, grad norm))."""
    return [(int(m.group(1)), (m.group(3), m.group(2), m.group(4))) for m in LINE_RE.finditer(text)]


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    base = tmp_path_factory.mktemp("ft")
    out = {"base": base, "baseline": _run(ARGS, base / "baseline.log")}
    out["hung"] = _run([
        *ARGS, "--max-restarts", "1", f"--checkpoint.save={base / 'ck_hung'}", "--checkpoint.save_interval=2",
        "--ft", "--ft.calc_ft_timeouts", "--ft.safety_factor=15", "--ft.check_interval=0.5",
        "--ft.initial_heartbeat_timeout=120", "--ft.heartbeat_timeout=60",
        "--ft.simulate_fault", "--ft.simulated_fault_type=rank_hung", "--ft.simulated_fault_rank=1",
        "--ft.simulated_fault_iteration=7",
    ], base / "hung.log")
    out["killed"] = _run([
        *ARGS, "--max-restarts", "1", f"--checkpoint.save={base / 'ck_killed'}", "--checkpoint.save_interval=2",
        "--ft.enable_ft_package=false", "--ft.simulate_fault", "--ft.simulated_fault_type=rank_killed",
        "--ft.simulated_fault_rank=0", "--ft.simulated_fault_iteration=6",
    ], base / "killed.log")
    return out


def _assert_resumed_exactly(job: dict, baseline: dict, resumed_from: int, fault_at: int) -> None:
    assert job["rc"] == 0, job["log"][-4000:]
    reference = dict(_lines(baseline["log"]))
    assert sorted(reference) == list(range(1, ITERS + 1))
    text = job["log"]
    restart = text.index(f"restart 1: resuming from the latest checkpoint in --checkpoint.save=")
    assert f"(iteration {resumed_from})" in text[restart:].splitlines()[0]
    assert re.search(rf"loaded checkpoint \S+iter_{resumed_from:07d} \(iteration {resumed_from}\)", text[restart:])
    before, after = _lines(text[:restart]), _lines(text[restart:])
    # the first attempt trained up to the fault, the restart from the checkpoint to the end
    assert [it for it, _ in before] == list(range(1, fault_at))
    assert [it for it, _ in after] == list(range(resumed_from + 1, ITERS + 1))
    for it, values in before + after:  # retrained iterations too: from the checkpoint's state, not a stale one
        assert values == reference[it], f"iteration {it}: {values} != uninterrupted {reference[it]}"


def _assert_nothing_left(job: dict) -> None:
    assert job["procs"], "no process of the job was ever seen"
    alive = still_running(job["procs"], timeout=15)
    assert not alive, f"left behind: {[(p.pid, p.name()) for p in alive]}"


def test_hung_rank_is_found_by_the_heartbeat_timeout_and_the_job_resumes(jobs):
    job = jobs["hung"]
    _assert_resumed_exactly(job, jobs["baseline"], resumed_from=6, fault_at=7)
    text = job["log"]
    fault = text.index("ft.simulate_fault: rank 1 hangs (SIGSTOP) as iteration 7 begins")
    # found by the learned timeout in force when it hung (the last one set before the fault)
    learned = [float(m.group(2)) for m in SET_RE.finditer(text[:text.index("restart 1:")])]
    waited = [float(m.group(1)) for m in WAITED_RE.finditer(text[fault:])]
    assert learned and waited, text[-4000:]
    assert abs(waited[0] - learned[-1]) < 0.05, (waited, learned)
    assert learned[-1] < 60  # learned from the iterations, not the configured --ft.heartbeat_timeout
    # the learned timeouts were saved and the restarted ranks loaded them
    state = json.loads((jobs["base"] / "ck_hung" / "ft_state.json").read_text())
    assert state["current_timeouts"]["heartbeat"]["were_calculated"] is True
    assert "ft: reusing the calculated heartbeat timeouts of" in text[text.index("restart 1:"):]
    _assert_nothing_left(job)


def test_killed_rank_restarts_under_max_restarts_and_the_job_resumes(jobs):
    job = jobs["killed"]
    assert "ft.simulate_fault: rank 0 dies (SIGKILL) as iteration 6 begins" in job["log"]
    _assert_resumed_exactly(job, jobs["baseline"], resumed_from=4, fault_at=6)
    _assert_nothing_left(job)


def test_baseline_leaves_nothing_behind(jobs):
    assert jobs["baseline"]["rc"] == 0, jobs["baseline"]["log"][-3000:]
    _assert_nothing_left(jobs["baseline"])


def _cli(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "megatron_bridge_cli", *argv], cwd=ROOT, env=env(), text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=180)


def test_ft_without_ft_launcher_is_refused_in_one_paragraph():
    r = _cli(["--ft", "--model.num_layers=2", "--model.hidden_size=64", "--model.ffn_hidden_size=256",
              "--train.train_iters=2"])
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert "--ft: this process was not started by nvidia-resiliency-ext's ft_launcher" in r.stderr
    assert "bridge-train --nproc-per-node N --ft" in r.stderr


def test_inprocess_restart_is_refused_on_cpu_naming_what_it_needs():
    r = _cli(["--inprocess_restart", "--dry-run"])
    assert r.returncode == 2, (r.stdout[-1000:], r.stderr[-2000:])
    assert "--inprocess_restart needs CUDA GPUs with NCCL" in r.stderr
    assert "--max-restarts" in r.stderr and "Traceback" not in r.stderr
