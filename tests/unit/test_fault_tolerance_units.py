"""Fault tolerance's pieces without processes: ft_launcher's command line, --max-restarts in the
launcher's argv, the restart's resume folder, and the checks of --ft / --inprocess_restart."""

from __future__ import annotations

import pytest

from megatron_bridge_cli.cli.parser import parse_globals, worker_argv
from megatron_bridge_cli.config.range_checks import check_ranges
from megatron_bridge_cli.config.resilience import FaultToleranceConfig, InProcessRestartConfig
from megatron_bridge_cli.config.resilience_checks import INPROCESS_NEEDS, check_resilience
from megatron_bridge_cli.training import fault_tolerance as ft
from megatron_bridge_cli.training.ft_launch import ft_launcher_args
from tests.factories import tiny_container


def test_ft_launcher_gets_torchruns_arguments_the_restarts_and_the_ft_timeouts():
    cfg = FaultToleranceConfig(initial_heartbeat_timeout=90, heartbeat_timeout=30, check_interval=2, safety_factor=7)
    args = ft_launcher_args(cfg, nproc_per_node=2, max_restarts=3, argv=["--x=1"])
    assert args[:3] == ["--nproc-per-node=2", "--nnodes=1", "--node-rank=0"]
    for expected in ("--max-restarts=3", "--standalone", "--ft-initial-rank-heartbeat-timeout=90",
                     "--ft-rank-heartbeat-timeout=30", "--ft-workload-check-interval=2", "--ft-safety-factor=7"):
        assert expected in args
    assert args[-3:] == ["--module", "megatron_bridge_cli", "--x=1"]
    from nvidia_resiliency_ext.fault_tolerance import launcher

    parsed = launcher.parse_args(ft_launcher_args(cfg, nproc_per_node=2, max_restarts=3))
    assert parsed.max_restarts == 3 and parsed.ft_rank_heartbeat_timeout == 30.0 and parsed.module


def test_max_restarts_is_a_launcher_option_the_workers_do_not_see():
    argv = ["--nproc-per-node", "2", "--max-restarts", "3", "--train.train_iters=5", "--max_restarts=1"]
    assert parse_globals(argv).max_restarts == 1
    assert worker_argv(argv) == ["--train.train_iters=5"]


def test_a_restart_resumes_from_the_save_folder(tmp_path, monkeypatch):
    save = tmp_path / "ck"
    save.mkdir()
    cfg = tiny_container()
    cfg.checkpoint.save, cfg.checkpoint.load, cfg.checkpoint.finetune = str(save), "/pretrained", True
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    ft.resume_on_restart(cfg)  # nothing saved yet: the first attempt's load stands
    assert cfg.checkpoint.load == "/pretrained"
    (save / "latest_checkpointed_iteration.txt").write_text("4")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    ft.resume_on_restart(cfg)  # a first attempt loads what --checkpoint.load says
    assert cfg.checkpoint.load == "/pretrained"
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    ft.resume_on_restart(cfg)
    assert (cfg.checkpoint.load, cfg.checkpoint.finetune) == (str(save), False)


def test_ft_checks_name_the_flags():
    cfg = tiny_container()
    cfg.ft = FaultToleranceConfig(simulated_fault_rank=2, simulated_fault_iteration=0, heartbeat_timeout=1,
                                  check_interval=5)
    problems = "\n".join(check_resilience(cfg, world_size=2) + check_ranges(cfg))  # (ranges: range_checks)
    assert "--ft.simulated_fault_rank (2) is not a rank of this job (0..1)" in problems
    assert "--ft.simulated_fault_iteration (0) must be 1 or more" in problems
    assert "--ft.check_interval (5) must be shorter than --ft.heartbeat_timeout (1)" in problems
    cfg.ft = FaultToleranceConfig()
    assert check_resilience(cfg, world_size=2) == []


def test_inprocess_restart_is_refused_without_cuda():
    import torch

    cfg = tiny_container()
    cfg.inprocess_restart = InProcessRestartConfig()
    problems = check_resilience(cfg, world_size=2)
    if torch.cuda.is_available():
        pytest.skip("CUDA machine: in-process restart is allowed there")
    assert problems == [INPROCESS_NEEDS]


@pytest.mark.parametrize("granularity", ["node", "rank"])
def test_inprocess_rank_assignment_keeps_the_layout_divisible(granularity, monkeypatch):
    """The topology tree handed to nvidia-resiliency-ext's wrapper: an active world size capped
    by --inprocess_restart.active_world_size and rounded down to a multiple of TP x PP x CP;
    node granularity adds a per-host layer that needs all of the node's ranks."""
    from nvidia_resiliency_ext.inprocess.rank_assignment import Tree

    from megatron_bridge_cli.training.inprocess import rank_assignment

    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    tree = rank_assignment(InProcessRestartConfig(active_world_size=12, granularity=granularity), model_parallel=4)
    assert isinstance(tree, Tree)
    root = tree.layers[0]
    assert (root.min_ranks, root.max_ranks) == (4, 12)
    assert [tree.world_size_filter(n) for n in (15, 12, 7, 3)] == [12, 12, 4, 0]
    if granularity == "node":
        assert len(tree.layers) == 2 and tree.layers[1].min_ranks == tree.layers[1].max_ranks == 8
    else:
        assert len(tree.layers) == 1
    from megatron_bridge_cli.training.inprocess import _wrapper

    assert _wrapper(InProcessRestartConfig(granularity=granularity), True, 4).rank_assignment is not None
