"""--profiling: record a window of training iterations with the PyTorch profiler or mark it for
Nsight Systems, and optionally snapshot the CUDA allocator's history.

The window is ``[profile_step_start, profile_step_end)`` in the iteration numbers the log
prints (1 = the first step of the run). The loop calls ``step(n)`` before iteration ``n`` and
``close()`` when it leaves; only ranks in ``profile_ranks`` do anything, and nothing here
communicates, so profiling one rank cannot change what another computes, nor the losses.

- PyTorch profiler: one trace per profiled rank, ``<trace_dir>/rank<R>.<ns>.pt.trace.json``
  (torch.profiler.tensorboard_trace_handler: TensorBoard's profiler plugin reads the folder,
  Perfetto / chrome://tracing open the file), with a ``ProfilerStep#N`` span per iteration N.
- nsys: ``cudaProfilerStart`` before the first iteration of the window, ``cudaProfilerStop``
  after the last, and an NVTX range ``iteration N`` around each one; run the job under
  ``nsys profile --capture-range=cudaProfilerApi`` (CUDA only; validation refuses it elsewhere).
- record_memory_history: torch.cuda.memory._record_memory_history over the window, then
  ``_dump_snapshot`` to memory_snapshot_path (drag it onto https://pytorch.org/memory_viz).
"""

from __future__ import annotations

import os
from typing import Optional

import torch

__all__ = ["StepProfiler", "trace_folder", "snapshot_file"]

MEMORY_HISTORY_ENTRIES = 100_000
"""Allocator events kept for the snapshot (the figure PyTorch's memory docs use)."""


def trace_folder(cfg) -> str:
    """Where traces go: --profiling.trace_dir, else --logger.tensorboard_dir (so TensorBoard's
    profiler tab finds them next to the scalars), else ./profile."""
    p = cfg.profiling
    return p.trace_dir or cfg.logger.tensorboard_dir or "profile"


def snapshot_file(cfg, rank: int) -> str:
    """--profiling.memory_snapshot_path, with ``.rank<R>`` before the suffix when several ranks profile."""
    p = cfg.profiling
    if len(set(p.profile_ranks)) <= 1:
        return p.memory_snapshot_path
    stem, suffix = os.path.splitext(p.memory_snapshot_path)
    return f"{stem}.rank{rank}{suffix}"


class StepProfiler:
    """Starts, steps and stops the configured profilers at iteration boundaries."""

    def __init__(self, cfg, rank: int):
        p = cfg.profiling
        self.on = p is not None and rank in p.profile_ranks
        if not self.on:
            return
        self.rank = rank
        self.start, self.end = p.profile_step_start, p.profile_step_end
        self.use_torch, self.use_nsys = p.use_pytorch_profiler, p.use_nsys_profiler
        self.record_shapes, self.memory = p.record_shapes, p.record_memory_history
        self.folder, self.snapshot = trace_folder(cfg), snapshot_file(cfg, rank)
        self._prof: Optional[torch.profiler.profile] = None
        self._nvtx_open = False
        self._active = False

    def step(self, iteration: int) -> None:
        """Called before iteration ``iteration`` (1-based) runs."""
        if not self.on:
            return
        if self._active and iteration >= self.end:
            self.close()
            return
        if not self._active and self.start <= iteration < self.end:
            self._begin(iteration)
        elif self._active:
            self._next(iteration)

    def _begin(self, iteration: int) -> None:
        self._active = True
        if self.memory:
            torch.cuda.memory._record_memory_history(max_entries=MEMORY_HISTORY_ENTRIES)
        if self.use_torch:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self._prof = torch.profiler.profile(
                activities=activities,
                # a schedule makes the profiler mark steps (ProfilerStep#N); recording throughout
                schedule=lambda _: torch.profiler.ProfilerAction.RECORD,
                on_trace_ready=torch.profiler.tensorboard_trace_handler(self.folder, worker_name=f"rank{self.rank}"),
                record_shapes=self.record_shapes,
                profile_memory=self.memory,
            )
            self._prof.step_num = iteration  # the span names carry the log's iteration numbers
            self._prof.start()
        if self.use_nsys:
            torch.cuda.cudart().cudaProfilerStart()
            self._push(iteration)

    def _next(self, iteration: int) -> None:
        if self._prof is not None:
            self._prof.step_num = iteration - 1  # step() counts on by one: ProfilerStep#<iteration>
            self._prof.step()
        if self.use_nsys:
            self._pop()
            self._push(iteration)

    def _push(self, iteration: int) -> None:
        torch.cuda.nvtx.range_push(f"iteration {iteration}")
        self._nvtx_open = True

    def _pop(self) -> None:
        if self._nvtx_open:
            torch.cuda.nvtx.range_pop()
            self._nvtx_open = False

    def close(self) -> None:
        """End the window (at its end, or when the loop stops inside it): write what was recorded."""
        if not self.on or not self._active:
            return
        self._active = False
        if self.use_nsys:
            self._pop()
            torch.cuda.cudart().cudaProfilerStop()
        if self._prof is not None:
            self._prof.stop()  # writes the trace (on_trace_ready)
            self._prof = None
        if self.memory:
            folder = os.path.dirname(self.snapshot)
            if folder:
                os.makedirs(folder, exist_ok=True)
            torch.cuda.memory._dump_snapshot(self.snapshot)
            torch.cuda.memory._record_memory_history(enabled=None)
        if self.use_torch:
            print(f"[Rank {self.rank}] profiler trace of iterations [{self.start}, {self.end}) written to "
                  f"{self.folder}", flush=True)
