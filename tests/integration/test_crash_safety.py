"""Crash safety: kill -9 a 2-process training job at random moments, resume, kill again, ...

One chain of bridge-train --nproc-per-node 2 jobs on one checkpoint folder (save every
iteration, keep the last 2, resume with --checkpoint.load from the same folder). Each job is
SIGKILLed at a seeded random moment: 20% of the kills at a random time after the job starts
(startup, checkpoint load, the first save), the rest at a random time after its first save,
when saves (~75% of the wall time here) and training steps alternate. What is killed is drawn
too: the launcher and both workers at once (a node or the scheduler gone), one worker (the
launcher stops the other), or the launcher alone (its workers die with it). Timing is real;
nothing widens the save window.

After every kill: no process of the job is left; the tracker names a complete, readable
checkpoint; every ``iter_NNNNNNN`` folder is complete (a half-written or half-deleted one never
carries a checkpoint's name); the next job loads exactly the tracker's iteration. After the
last kill the chain runs to the end, and every iteration logged by any job of the chain logs
the uninterrupted run's loss, learning rate and gradient norm exactly (as printed: 7
significant digits for the loss). Exact, not a tolerance: on CPU, with the same layout, a
resumed step runs the same float32 operations in the same order on the same restored state
(test_training_resume shows it bit for bit), so any difference is a restore bug, not noise.

BRIDGE_TRAIN_CRASH_SEED and BRIDGE_TRAIN_CRASH_KILLS change the seed and the number of kills.
"""

from __future__ import annotations

import os
import random
import re
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from tests.integration.harness import (
    STEP_VALUES_RE, job_processes, resumable_cli_args, start_cli_job, still_running, worker_pids,
)

SEED = int(os.environ.get("BRIDGE_TRAIN_CRASH_SEED", "20240611"))
KILLS = int(os.environ.get("BRIDGE_TRAIN_CRASH_KILLS", "20"))
ITERS = 120  # more than 20 kills' worth of progress (~3 iterations each), so the chain never ends early
ARGS = resumable_cli_args(ITERS)
LINE_RE = STEP_VALUES_RE
SAVED_RE = re.compile(r"successfully saved checkpoint at iteration\s+(\d+)")
LOADED_RE = re.compile(r"loaded checkpoint (\S+) \(iteration (\d+)\)")


def _lines(text: str) -> dict[int, tuple[str, str, str]]:
    return {int(m.group(1)): (m.group(3), m.group(2), m.group(4)) for m in LINE_RE.finditer(text)}


def _state(save: Path) -> dict:
    """The checkpoint folder as a resumed job will find it, checked against the invariants."""
    from megatron_bridge_cli.training.checkpoint_files import defect, read_tracker, resolve, saved_iterations

    names = sorted(os.listdir(save)) if save.is_dir() else []
    text, tracked = read_tracker(str(save))
    assert text is None or tracked is not None, f"garbled tracker {text!r}: {names}"
    if tracked is not None:
        latest = save / f"iter_{tracked:07d}"
        assert latest.is_dir(), f"the tracker names {latest.name}, which is missing: {names}"
    for it in saved_iterations(str(save)):
        why = defect(str(save / f"iter_{it:07d}"))
        assert why is None, f"iter_{it:07d} carries a checkpoint's name but {why}: {names}"
    choice = resolve("checkpoint.load", str(save))
    assert choice.problem is None, choice.problem
    return {"tracked": tracked or 0, "names": names}


def _landing(log: str, after: dict) -> str:
    """Where the kill landed, from what the job printed and what it left on disk."""
    logged, saved = _lines(log), [int(i) for i in SAVED_RE.findall(log)]
    if not logged:
        return "startup or checkpoint load"
    last = max(logged)
    if saved and max(saved) == last:
        return "training step"
    if f"iter_{last:07d}.tmp" in after["names"]:
        return "save: writing shards"
    if after["tracked"] < last:
        return "save: renamed, tracker not yet moved"  # iter_N is in place; the tracker still says N-1
    return "save: after the tracker (pruning, last barrier)"


def _kill(proc, mode: str, rng: random.Random) -> list[psutil.Process]:
    """SIGKILL what ``mode`` says; returns every process of the job as it was just before."""
    everything = job_processes(proc.pid)
    workers = [psutil.Process(pid) for pid in worker_pids(proc.pid)]
    launcher = workers[0].parent() if workers else None
    targets = {"job": [launcher, *workers], "rank": [rng.choice(workers)] if workers else [],
               "launcher": [launcher]}[mode]
    for p in targets:
        if p is not None:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
    if launcher is None or not workers:  # still starting: no workers yet, take the whole job
        for p in everything:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
    return everything


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    base = tmp_path_factory.mktemp("crash")
    save, rng = base / "ckpt", random.Random(SEED)
    ref_log = base / "reference.log"
    ref = start_cli_job(ARGS, ref_log, timeout=300)
    assert ref.wait(timeout=300) == 0, ref_log.read_text()[-3000:]
    reference = _lines(ref_log.read_text())
    assert sorted(reference) == list(range(1, ITERS + 1))

    resume = [f"--checkpoint.save={save}", f"--checkpoint.load={save}", "--checkpoint.most_recent_k=2"]
    jobs, kills, state = [], [], {"tracked": 0, "names": []}
    t0 = time.time()
    while len(kills) < KILLS:
        log = base / f"job{len(jobs):02d}.log"
        proc = start_cli_job([*ARGS, *resume, "--checkpoint.save_interval=1"], log, timeout=300)
        early = rng.random() < 0.2
        delay = rng.uniform(0, 4.0) if early else rng.uniform(0, 0.5)
        mode = rng.choices(["job", "rank", "launcher"], weights=[2, 1, 1])[0]
        start = time.time()
        while proc.poll() is None:  # wait for the moment: `delay` after the start, or after the first save
            text = log.read_text()
            if early and time.time() - start >= delay or not early and SAVED_RE.search(text):
                break
            time.sleep(0.02)
        if not early:
            time.sleep(delay)
        if proc.poll() is not None:
            raise AssertionError(f"job {len(jobs)} ended (rc={proc.returncode}) before its kill; the chain "
                                 f"reached the end too soon:\n{log.read_text()[-3000:]}")
        killed_at = time.time()
        everything = _kill(proc, mode, rng)
        alive = still_running(everything, timeout=30)
        assert not alive, f"processes outlived the kill ({mode}): {[(p.pid, p.name()) for p in alive]}"
        proc.wait(timeout=30)
        gone_at = time.time()
        text = log.read_text()
        before, state = state, _state(save)
        loaded = LOADED_RE.search(text)
        kills.append({"mode": mode, "early": early, "landing": _landing(text, state),
                      "resumed_from": int(loaded.group(2)) if loaded else None, "expected_from": before["tracked"],
                      "tracked_after": state["tracked"], "run_s": killed_at - start, "gone_s": gone_at - killed_at,
                      "check_s": time.time() - gone_at})
        jobs.append(text)
    # Finally, run to the end (saving rarely: no more kills to survive).
    log = base / "final.log"
    proc = start_cli_job([*ARGS, *resume, "--checkpoint.save_interval=1000"], log, timeout=300)
    assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    final = log.read_text()
    return {"reference": reference, "jobs": jobs, "final": final, "kills": kills, "resumed_at": state["tracked"],
            "seconds": time.time() - t0}


def test_every_kill_leaves_a_complete_checkpoint_and_resumes_from_it(chain):
    kills = chain["kills"]
    assert len(kills) >= KILLS
    for i, k in enumerate(kills):
        if k["resumed_from"] is not None:  # the job got as far as loading: the tracker's iteration
            assert k["resumed_from"] == k["expected_from"], (i, k)
        assert k["tracked_after"] >= k["expected_from"], (i, k)  # a kill never moves the tracker back
    assert chain["resumed_at"] > 0
    assert LOADED_RE.search(chain["final"]).group(2) == str(chain["resumed_at"])
    landings = Counter(k["landing"] for k in kills)
    in_save = sum(n for where, n in landings.items() if where.startswith("save"))
    print(f"\ncrash chain: {len(kills)} kills in {chain['seconds']:.0f}s, seed {SEED}; "
          f"modes {dict(Counter(k['mode'] for k in kills))}; landings {dict(landings)}; "
          f"resumed at {[k['tracked_after'] for k in kills]}; seconds (run, teardown, check) "
          f"{[(round(k['run_s'], 1), round(k['gone_s'], 1), round(k['check_s'], 1)) for k in kills]}")
    assert in_save >= 3, landings  # real timing, but saves are most of the wall time: many land there


def test_resumed_losses_match_the_uninterrupted_run(chain):
    reference = chain["reference"]
    seen = set()
    for i, text in enumerate([*chain["jobs"], chain["final"]]):
        for it, values in _lines(text).items():
            assert values == reference[it], f"job {i}, iteration {it}: {values} != uninterrupted {reference[it]}"
            seen.add(it)
    assert seen == set(range(1, ITERS + 1))
