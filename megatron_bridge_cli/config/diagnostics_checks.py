"""Checks of the diagnostics sections: --profiling, --straggler, --nvrx_straggler.

What needs a GPU says so here, before any process starts: Nsight Systems' capture range
(cudaProfilerStart/Stop), the CUDA allocator's memory history, and nvidia-resiliency-ext's
straggler detector (it times kernels through CUPTI). Value ranges (report intervals, the
straggler threshold) are in range_checks.RANGES.
"""

from __future__ import annotations

import torch

__all__ = ["check_diagnostics"]


def _cuda() -> bool:
    return torch.cuda.is_available()


def check_profiling(cfg, world_size: int) -> list[str]:
    p = cfg.profiling
    problems: list[str] = []
    if p is None:
        return problems
    if not (p.use_pytorch_profiler or p.use_nsys_profiler or p.record_memory_history):
        problems.append("--profiling is on but records nothing: set --profiling.use_pytorch_profiler "
                        "(or --profiling=pytorch), --profiling.use_nsys_profiler (--profiling=nsys) or "
                        "--profiling.record_memory_history")
    if p.use_nsys_profiler and p.use_pytorch_profiler:
        problems.append("--profiling.use_nsys_profiler and --profiling.use_pytorch_profiler are both on; choose one")
    if p.profile_step_start > p.profile_step_end:
        problems.append(f"--profiling.profile_step_start ({p.profile_step_start}) is after "
                        f"--profiling.profile_step_end ({p.profile_step_end})")
    if p.profile_step_start < 1:
        problems.append(f"--profiling.profile_step_start ({p.profile_step_start}) must be at least 1 "
                        "(iterations are numbered from 1, as the log prints them)")
    elif p.profile_step_start == p.profile_step_end:
        problems.append(f"--profiling.profile_step_start and --profiling.profile_step_end are both "
                        f"{p.profile_step_start}: the window [start, end) is empty; set end > start")
    iters = cfg.train.train_iters
    if iters is not None and p.profile_step_start > iters:
        problems.append(f"--profiling.profile_step_start ({p.profile_step_start}) is after the run's last iteration "
                        f"(--train.train_iters={iters}): nothing would be profiled; choose a window inside the run")
    outside = [r for r in p.profile_ranks if not 0 <= r < world_size]
    if outside:
        problems.append(f"--profiling.profile_ranks names rank(s) {', '.join(map(str, outside))}, which this job "
                        f"does not have (world size {world_size}: ranks 0-{world_size - 1})")
    if not _cuda():
        if p.use_nsys_profiler:
            problems.append("--profiling.use_nsys_profiler (--profiling=nsys) needs a CUDA GPU: it marks the window "
                            "with cudaProfilerStart/Stop and NVTX ranges for `nsys profile "
                            "--capture-range=cudaProfilerApi`; on this machine use --profiling=pytorch")
        if p.record_memory_history:
            problems.append("--profiling.record_memory_history needs a CUDA GPU (it records the CUDA allocator's "
                            "history); leave it false on this machine")
    return problems


def check_stragglers(cfg) -> list[str]:
    n = cfg.nvrx_straggler
    problems: list[str] = []
    if n is not None:
        if not _cuda():
            problems.append("--nvrx_straggler needs a CUDA GPU: nvidia-resiliency-ext's detector times GPU kernels "
                            "through CUPTI (and needs pip install '.[resilience]'); on this machine use "
                            "--straggler, which compares wall-clock step times")
        if not (n.calc_relative_gpu_perf or n.calc_individual_gpu_perf):
            problems.append("--nvrx_straggler computes no score: turn on --nvrx_straggler.calc_relative_gpu_perf "
                            "or --nvrx_straggler.calc_individual_gpu_perf")
    return problems


def check_diagnostics(cfg, world_size: int) -> list[str]:
    return check_profiling(cfg, world_size) + check_stragglers(cfg)
