"""Checks of the fault-tolerance and in-process restart sections (--ft, --inprocess_restart).

Value ranges (timeouts positive, the fault's iteration 1 or more, ...) are in range_checks.RANGES."""

from __future__ import annotations

import os

__all__ = ["check_resilience", "INPROCESS_NEEDS"]

INPROCESS_NEEDS = (
    "--inprocess_restart needs CUDA GPUs with NCCL: nvidia-resiliency-ext 0.4.1's in-process restart "
    "aborts only NCCL collectives, and over gloo (CPU) a rank left waiting on the faulted one is not "
    "released (probed: it hangs until --inprocess_restart.hard_timeout kills it). On CPU use "
    "--max-restarts K (a failed worker restarts the job from the latest checkpoint) or --ft with "
    "--max-restarts (hung ranks too), and --inprocess_restart=null"
)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def check_resilience(cfg, world_size: int) -> list[str]:
    problems: list[str] = []
    ft = cfg.ft
    if ft is not None:
        if 0 < ft.heartbeat_timeout <= ft.check_interval:
            problems.append(f"--ft.check_interval ({ft.check_interval}) must be shorter than --ft.heartbeat_timeout "
                            f"({ft.heartbeat_timeout}), or a hang is found only a check later")
        if ft.simulated_fault_rank is not None and not 0 <= ft.simulated_fault_rank < world_size:
            problems.append(f"--ft.simulated_fault_rank ({ft.simulated_fault_rank}) is not a rank of this job "
                            f"(0..{world_size - 1})")
    ip = cfg.inprocess_restart
    if ip is not None:
        backend = cfg.dist.distributed_backend
        if (backend == "gloo" or not _cuda()) and not os.environ.get("BRIDGE_TRAIN_PROBE_INPROCESS"):
            problems.append(INPROCESS_NEEDS)
        if ft is not None and ft.enable_ft_package:
            problems.append("--inprocess_restart and --ft (its heartbeats) are both on; choose one "
                            "(or --ft.enable_ft_package=false to keep only --ft.simulate_fault)")
    return problems
