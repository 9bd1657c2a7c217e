"""--rerun_state_machine drives megatron-core's RerunStateMachine (training/rerun.py): real
2-process bridge-train jobs (``--nproc-per-node 2``, gloo), the exit code being the job's.

Errors are injected by megatron-core's own RerunErrorInjector from the command line. With
``--rerun_state_machine.error_injection_rate=1`` its choice ``(randint(0, 0) + rank) % 1 == 0``
is certain: the first check of the first validated step (iteration 2; a process's first step is
not validated) is rejected on both ranks; a transient injection is rejected again at every later
step, a persistent or correct-result one only once.

    base        rerun_mode=disabled                                             the reference losses
    spike       validate_results, the spiky-loss check, transient injection     reruns, goes on
    nan_trans   validate_results, the NaN check, transient injection            checkpoint, exit 17
    nan_pers    validate_results, the NaN check, persistent injection           checkpoint, exit 16
    stats       report_stats                                                    determinism lines
  then, from nan_pers's checkpoint:
    again       validate_results (same node)                                    exit 16 again, no step
    disabled    rerun_mode=disabled                                             trains on

The first five run at the same time, then the two resumes; the assertions share them.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.integration.harness import ROOT, env, losses

CLI = ["--nproc-per-node", "2", "--model.num_layers=2", "--model.hidden_size=64", "--model.ffn_hidden_size=256",
       "--model.seq_length=64", "--train.global_batch_size=8", "--train.micro_batch_size=2", "--train.train_iters=4",
       "--train.eval_iters=0", "--logger.log_interval=1", "--dataset.num_workers=0"]
VALIDATE = ["--rerun_state_machine.rerun_mode=validate_results", "--rerun_state_machine.error_injection_rate=1"]
SPIKE_ONLY = ["--rerun_state_machine.check_for_spiky_loss=true", "--rerun_state_machine.check_for_nan_in_loss=false"]


def _start(argv: list[str], log) -> subprocess.Popen:
    f = open(log, "w")
    return subprocess.Popen(["timeout", "--kill-after=10", "240", sys.executable, "-m", "megatron_bridge_cli", *CLI,
                             *argv], cwd=ROOT, env=env(), stdout=f, stderr=subprocess.STDOUT, text=True)


def _wait(procs: dict, logs) -> dict:
    return {name: (p.wait(), (logs / name).read_text()) for name, p in procs.items()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """name -> (exit code, output); plus 'ckpt_trans' / 'ckpt_pers', the checkpoint folders."""
    logs = tmp_path_factory.mktemp("rerun")
    trans, pers = logs / "ckpt_trans", logs / "ckpt_pers"
    first = {
        "base": [],
        "spike": [*VALIDATE, *SPIKE_ONLY, "--rerun_state_machine.error_injection_type=transient_error"],
        "nan_trans": [*VALIDATE, "--rerun_state_machine.error_injection_type=transient_error",
                      f"--checkpoint.save={trans}"],
        "nan_pers": [*VALIDATE, "--rerun_state_machine.error_injection_type=persistent_error",
                     f"--checkpoint.save={pers}"],
        "stats": ["--rerun_state_machine.rerun_mode=report_stats", "--rerun_state_machine.check_for_spiky_loss=true"],
    }
    out = _wait({name: _start(argv, logs / name) for name, argv in first.items()}, logs)
    then = {
        "again": ["--rerun_state_machine.rerun_mode=validate_results", f"--checkpoint.load={pers}"],
        "disabled": [f"--checkpoint.load={pers}"],
    }
    out.update(_wait({name: _start(argv, logs / name) for name, argv in then.items()}, logs))
    out["ckpt_trans"], out["ckpt_pers"] = trans, pers
    return out


def _ok(runs, name) -> str:
    rc, out = runs[name]
    assert rc == 0, f"{name}: rc={rc}\n{out[-4000:]}"
    return out


def _tracker(folder) -> int:
    return int((folder / "latest_checkpointed_iteration.txt").read_text())


def test_a_transient_spike_is_rerun_and_training_goes_on_with_the_same_losses(runs):
    base, spike = _ok(runs, "base"), _ok(runs, "spike")
    assert losses(base).keys() == {1, 2, 3, 4}
    assert losses(spike) == losses(base)  # the rerun's result is the step's: bit-identical on CPU
    for k in (2, 3, 4):  # injected (and rerun) at every validated step, on each rank
        for rank in (0, 1):
            assert re.search(rf"Rank {rank}, node \S+, device \d+, iteration #{k}: Possible transient error", spike), spike
    assert "iteration #1:" not in spike  # the first step of a process is not validated
    assert "Continuing normal execution because failed validation was not fatal" in spike
    assert "rerun state machine:" not in spike  # no stop


def test_a_transient_nan_stops_with_exit_17_and_the_step_before_checkpointed(runs):
    rc, out = runs["nan_trans"]
    assert rc == 17, out[-4000:]
    assert losses(out) == {1: losses(_ok(runs, "base"))[1]}  # iteration 2 was never applied
    assert re.search(r"^rerun state machine: iteration 2, ranks 0, 1: the loss check failed \(found NaN in local "
                     r"forward loss calculation\); the rerun on the same data did not reproduce it.*saved a "
                     r"checkpoint at iteration 1 \(the step before it, now the latest\); exiting with code 17$",
                     out, re.M), out[-4000:]
    folder = runs["ckpt_trans"]
    assert _tracker(folder) == 1
    assert {"metadata.json", "common.pt", "run_config.yaml"} <= {p.name for p in (folder / "iter_0000001").iterdir()}


def test_a_persistent_nan_stops_with_exit_16_and_a_checkpoint_that_reruns_the_step(runs):
    rc, out = runs["nan_pers"]
    assert rc == 16, out[-4000:]
    assert losses(out).keys() == {1}
    assert re.search(r"^rerun state machine: iteration 2, ranks 0, 1: the loss check failed \(found NaN in local "
                     r"forward loss calculation\); the rerun on the same data reproduced it.*saved a checkpoint at "
                     r"iteration 1 \(the step before it, now the latest\); exiting with code 16$", out, re.M), out[-4000:]
    assert re.search(r"^bridge-train: worker rank [01] failed with exit code 16; the job stopped$", out, re.M)
    from megatron.core import dist_checkpointing
    from megatron.core.rerun_state_machine import RerunMode, RerunState

    folder = runs["ckpt_pers"]
    assert _tracker(folder) == 1
    common = dist_checkpointing.load_common_state_dict(str(folder / "iter_0000001"))
    state = common["rerun_state_machine"]  # megatron-core's state_dict: the step to rerun from here
    assert (state["mode"], state["state"], state["current_iteration"]) == (
        RerunMode.VALIDATE_RESULTS, RerunState.WILL_RERUN_FROM_CHECKPOINT, 2)


def test_resumed_on_the_same_node_the_step_is_not_trusted_and_the_job_exits_16_again(runs):
    rc, out = runs["again"]
    assert rc == 16, out[-4000:]
    assert "Got rescheduled on the same GPU" in out
    assert losses(out) == {}  # iteration 2 ran (the rerun) but was not applied
    assert re.search(r"^rerun state machine: iteration 2, .*the checkpoint this run resumed from stays the latest; "
                     r"exiting with code 16$", out, re.M), out[-4000:]


def test_resumed_with_reruns_disabled_the_checkpoint_trains_on_to_the_same_losses(runs):
    out = _ok(runs, "disabled")
    assert "rerun state machine: the checkpoint holds iteration 2 to rerun; " \
           "--rerun_state_machine.rerun_mode=disabled trains it normally" in out
    base = losses(_ok(runs, "base"))
    assert losses(out) == {k: base[k] for k in (2, 3, 4)}


def test_report_stats_reruns_every_step_and_reports_determinism(runs):
    out = _ok(runs, "stats")
    assert losses(out) == losses(_ok(runs, "base"))
    lines = re.findall(r"^determinism stats at iteration (\d+) \(2 ranks, each step run twice\) \| (.*)$", out, re.M)
    assert [int(k) for k, _ in lines] == [1, 2, 3, 4], out[-3000:]  # every --logger.log_interval (1)
    for _, text in lines:
        # 2 ranks x 2 micro-batches compared per check; CPU arithmetic repeats exactly
        assert "found NaN in local forward loss calculation: 4 samples, all identical" in text, text
        assert "Spiky loss: 4 samples, all identical" in text, text
