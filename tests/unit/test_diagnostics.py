"""Straggler report line and SIGUSR2 toggle, --comm_overlap's derivation from the layout (fast, in-process).

The jobs that profile, report stragglers and overlap communication for real are in
tests/integration/test_diagnostics.py; the refusals on machines without CUDA are rows of
tests/unit/test_bad_inputs.py.
"""

from __future__ import annotations

import logging

from megatron_bridge_cli.config import CommOverlapConfig, finalize
from megatron_bridge_cli.training.straggler import straggler_line
from tests.factories import tiny_container


def test_straggler_line_names_every_rank_the_extremes_and_the_stragglers():
    line = straggler_line(40, [0.100, 0.102, 0.350, 0.099], threshold=1.5)
    assert line.startswith("straggler report at iteration 40 | step time (ms) per rank: "
                           "0: 100.0, 1: 102.0, 2: 350.0, 3: 99.0 |")
    assert "slowest: rank 2 (350.0 ms)" in line and "fastest: rank 3 (99.0 ms)" in line
    assert "median: 101.0 ms" in line and line.endswith("stragglers (> 1.5 x median): 2")
    assert straggler_line(1, [0.1, 0.11], threshold=1.5).endswith("stragglers (> 1.5 x median): none")


def _overlap(world_size=2, explicit=(), **model):
    cfg = tiny_container()
    cfg.comm_overlap = CommOverlapConfig()
    for name, value in model.items():
        setattr(cfg.model, name, value)
    for path, value in explicit:
        section, name = path.split(".")
        setattr(getattr(cfg, section), name, value)
        cfg.explicit_paths.add(path)
    return finalize(cfg, world_size)


def test_comm_overlap_turns_on_data_parallel_overlap_when_there_is_data_parallelism():
    run = _overlap(world_size=2)
    assert run.ddp.overlap_grad_reduce is True
    assert run.ddp.overlap_param_gather is False  # no distributed optimizer: nothing to all-gather
    assert run.model.overlap_p2p_comm is False
    single = _overlap(world_size=1)
    assert single.ddp.overlap_grad_reduce is False  # DP = 1: nothing to reduce


def test_comm_overlap_overlaps_the_param_gather_of_the_distributed_optimizer():
    run = _overlap(world_size=2, explicit=[("optimizer.use_distributed_optimizer", True),
                                           ("ddp.use_distributed_optimizer", True)])
    assert run.ddp.overlap_grad_reduce is True and run.ddp.overlap_param_gather is True


def test_comm_overlap_overlaps_pipeline_p2p_under_the_interleaved_schedule():
    run = _overlap(world_size=2, num_layers=4, pipeline_model_parallel_size=2, virtual_pipeline_model_parallel_size=2)
    assert run.model.overlap_p2p_comm is True and run.model.batch_p2p_comm is False
    plain = _overlap(world_size=2, num_layers=4, pipeline_model_parallel_size=2)
    assert plain.model.overlap_p2p_comm is False


def test_explicit_values_win_over_comm_overlap_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="megatron_bridge_cli.config.finalize"):
        run = _overlap(world_size=2, explicit=[("ddp.overlap_grad_reduce", False)])
    assert run.ddp.overlap_grad_reduce is False
    assert "--ddp.overlap_grad_reduce=False (explicit) overrides --comm_overlap.overlap_grad_reduce" in caplog.text
    cfg = tiny_container()
    cfg.comm_overlap = CommOverlapConfig(overlap_grad_reduce=False, bucket_size=12345)  # the section's own values
    run = finalize(cfg, 2)
    assert run.ddp.overlap_grad_reduce is False and run.ddp.bucket_size == 12345


def test_sigusr2_switches_straggler_reports_on_and_off(capsys):
    """--straggler.disable_on_start: silent until SIGUSR2, silent again after the second one
    (one real process group of one gloo rank; the signal is sent to this process)."""
    import os
    import signal

    import torch

    from megatron_bridge_cli.config import StragglerDetectionConfig
    from megatron_bridge_cli.training.straggler import TOGGLE_SIGNAL, StragglerReporter

    cfg = tiny_container()
    cfg.straggler = StragglerDetectionConfig(report_interval=1, disable_on_start=True)
    torch.distributed.init_process_group("gloo", store=torch.distributed.HashStore(), rank=0, world_size=1)
    before = signal.getsignal(TOGGLE_SIGNAL)
    try:
        reporter = StragglerReporter(cfg, rank=0, world_size=1)
        printed = []
        for iteration, toggle in ((1, False), (2, True), (3, False), (4, True), (5, False)):
            if toggle:
                os.kill(os.getpid(), TOGGLE_SIGNAL)
            reporter.begin()
            reporter.end(iteration)
            printed.append("straggler report at iteration" in capsys.readouterr().out)
        reporter.close()
    finally:
        torch.distributed.destroy_process_group()
    assert printed == [False, True, True, False, False]
    assert signal.getsignal(TOGGLE_SIGNAL) == before  # the handler is put back
