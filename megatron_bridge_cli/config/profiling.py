"""Profiling a window of training steps with Nsight Systems or the PyTorch profiler."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from megatron_bridge_cli.config.strict import StrictFields

__all__ = ["ProfilingConfig", "PROFILING_KINDS"]


@dataclass
class ProfilingConfig(StrictFields):
    """Which profiler runs, over which steps, on which ranks."""

    use_nsys_profiler: bool = False
    """Mark the window for Nsight Systems: cudaProfilerStart/Stop around it and an NVTX range per
    iteration (run the job under `nsys profile --capture-range=cudaProfilerApi`). CUDA only."""

    use_pytorch_profiler: bool = False
    """Record the window with torch.profiler and write one trace per profiled rank
    (`rank<R>.<time>.pt.trace.json` in trace_dir), for TensorBoard's profiler plugin or Perfetto."""

    profile_step_start: int = 10
    """First profiled iteration, numbered as the log prints them (the first step is 1)."""

    profile_step_end: int = 12
    """The window ends before this iteration: iterations [profile_step_start, profile_step_end) are profiled."""

    profile_ranks: list[int] = field(default_factory=lambda: [0])
    """Global ranks that profile."""

    record_shapes: bool = False
    """Record operator input shapes (PyTorch profiler)."""

    record_memory_history: bool = False
    """Record the CUDA allocator's history over the window and dump a snapshot to memory_snapshot_path
    (open it at pytorch.org/memory_viz); the PyTorch profiler then also records memory. CUDA only."""

    memory_snapshot_path: str = "snapshot.pickle"
    """Where the memory snapshot is written (`.rank<R>` goes before the suffix when several ranks profile)."""

    trace_dir: Optional[str] = None
    """Folder for PyTorch profiler traces. None uses logger.tensorboard_dir (TensorBoard's profiler
    tab shows them next to the scalars), else ./profile."""


def _pytorch() -> ProfilingConfig:
    return ProfilingConfig(use_pytorch_profiler=True)


def _nsys() -> ProfilingConfig:
    return ProfilingConfig(use_nsys_profiler=True)


PROFILING_KINDS = {"pytorch": _pytorch, "nsys": _nsys}
"""Names that switch profiling on, e.g. ``--profiling=pytorch``."""
