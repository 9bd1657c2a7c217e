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
    """Mark the window for Nsight Systems (run under `nsys profile --capture-range=cudaProfilerApi`)."""

    use_pytorch_profiler: bool = False
    """Record the window with torch.profiler and write a trace."""

    profile_step_start: int = 10
    """First profiled iteration."""

    profile_step_end: int = 12
    """Last profiled iteration."""

    profile_ranks: list[int] = field(default_factory=lambda: [0])
    """Global ranks that profile."""

    record_shapes: bool = False
    """Record operator input shapes (PyTorch profiler)."""

    record_memory_history: bool = False
    """Record CUDA allocator history for a memory snapshot."""

    memory_snapshot_path: str = "snapshot.pickle"
    """Where the memory snapshot is written."""

    trace_dir: Optional[str] = None
    """Folder for PyTorch profiler traces. None uses logger.tensorboard_dir, else ./profile."""


def _pytorch() -> ProfilingConfig:
    return ProfilingConfig(use_pytorch_profiler=True)


def _nsys() -> ProfilingConfig:
    return ProfilingConfig(use_nsys_profiler=True)


PROFILING_KINDS = {"pytorch": _pytorch, "nsys": _nsys}
"""Names that switch profiling on, e.g. ``--profiling=pytorch``."""
