"""Quiet logs: a notice appears once, from rank 0, however many ranks or dataset splits say it.

Real `bridge-train --nproc-per-node 2` jobs on mock GPT data, with forked (the CPU default) and
exec'd workers: megatron-core's dataset builder warns "Unable to save MockGPTDataset indexes"
once per split on each process that builds data, and finalize's interleaved-pipeline notice
(`batch_p2p_comm=false`) was printed by the launcher and again by every worker. Pipeline
parallel with virtual stages makes both happen; evaluation and checkpoint saves add their own
lines, which must not repeat either. The torchrun path (no bridge-train launcher: rank 0 says
it) is checked in test_training_parallel.py on the jobs it already runs.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.integration.harness import (
    JOB_TIMEOUT,
    PYTHON,
    ROOT,
    assert_ok,
    env,
    losses,
    repeated_lines,
    val_losses,
)

MOCK_NOTICE = "Unable to save MockGPTDataset indexes because path_to_cache is None"
FINALIZE_NOTICE = "setting --model.batch_p2p_comm=false: interleaved pipeline parallel on gloo needs it"
FLAGS = ["--model.num_layers=4", "--model.hidden_size=64", "--model.ffn_hidden_size=256", "--model.seq_length=64",
         "--model.pipeline_model_parallel_size=2", "--model.virtual_pipeline_model_parallel_size=2",
         "--train.global_batch_size=8", "--train.micro_batch_size=2", "--train.train_iters=4",
         "--train.eval_interval=2", "--train.eval_iters=1", "--scheduler.lr_warmup_iters=1",
         "--logger.log_interval=1", "--dataset.num_workers=0", "--checkpoint.save_interval=2"]


def clean_env(**extra: str) -> dict:
    """The harness environment without a launcher's mark (an in-process launch_workers in an
    earlier test of the session leaves BRIDGE_TRAIN_LAUNCHER_PID behind)."""
    e = {**env(), **extra}
    e.pop("BRIDGE_TRAIN_LAUNCHER_PID", None)
    return e


@pytest.fixture(scope="module", params=["fork", "exec"])
def job(request, tmp_path_factory):
    save = tmp_path_factory.mktemp(f"quiet_{request.param}")
    proc = subprocess.run(
        ["timeout", "--kill-after=10", str(JOB_TIMEOUT), PYTHON, "-m", "megatron_bridge_cli", "--nproc-per-node", "2",
         *FLAGS, f"--checkpoint.save={save}"],
        cwd=ROOT, env=clean_env(BRIDGE_TRAIN_START_METHOD=request.param),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    return assert_ok(proc)


def test_repeated_notices_appear_once(job):
    assert sorted(losses(job)) == [1, 2, 3, 4] and len(val_losses(job)) == 4, job[-3000:]  # the job did its work
    assert job.count(MOCK_NOTICE) <= 1, job[-3000:]
    assert job.count(FINALIZE_NOTICE) == 1, job[-3000:]  # once: folded, not hidden


def test_no_line_repeats_but_the_per_iteration_and_per_evaluation_lines(job):
    assert repeated_lines(job) == {}, job[-3000:]


PROBE = """
import logging, sys, warnings
from megatron_bridge_cli.training.notices import show_notices_once
show_notices_once(int(sys.argv[1]))
for _ in range(2):
    warnings.warn("a library hint", UserWarning)  # same line twice: Python shows it once anyway
    logging.getLogger("megatron_bridge_cli.config.finalize").warning("a finalize notice")
    logging.getLogger("megatron.core.datasets.gpt_dataset").warning("a dataset notice")
    logging.getLogger("megatron.core.rerun_state_machine").warning("Rank %s: Unexpected result (Spiky loss)", sys.argv[1])
    logging.getLogger("megatron.core.x").error("an error")
"""


@pytest.mark.parametrize("rank", [0, 1])
def test_what_each_rank_shows(rank):
    """Symmetric notices (Python warnings, finalize's) come from rank 0 only, once; megatron-core's
    per-rank warnings (a spiky loss on the rank that saw it) and every error pass on every rank;
    a repeat of the same notice is dropped, a repeat of an error is not."""
    proc = subprocess.run([PYTHON, "-c", PROBE, str(rank)], cwd=ROOT, env=clean_env(), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    symmetric = 1 if rank == 0 else 0
    assert sum("UserWarning: a library hint" in line for line in lines) == symmetric, lines
    assert lines.count("bridge-train: WARNING: a finalize notice") == symmetric, lines
    assert lines.count("bridge-train: WARNING: a dataset notice") == 1, lines
    assert lines.count(f"bridge-train: WARNING: Rank {rank}: Unexpected result (Spiky loss)") == 1, lines
    assert lines.count("bridge-train: ERROR: an error") == 2, lines
