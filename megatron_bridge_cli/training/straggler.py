"""--straggler: every report_interval iterations, one line on rank 0 with every rank's mean step
time over the interval, the slowest and the fastest rank named, and the ranks slower than
``threshold`` x the median flagged.

Step times are wall clock (time.perf_counter around the optimizer step, after a CUDA
synchronize where CUDA runs), on CPU and GPU alike. megatron-core's StragglerDetector is not
used: it times GEMMs with CUDA events that the model code must be instrumented for, runs an
HTTP control server on rank 0, and turns itself off without CUDA. A wall-clock step time is what
a straggler costs the job (every rank waits for the slowest at the gradient all-reduce), it
needs nothing but one all-gather of a few floats per report, and it works the same everywhere.

--straggler.disable_on_start starts with reports off; SIGUSR2 sent to the training processes
(``kill -USR2 <pid>``, or ``scancel --signal=USR2`` under Slurm) switches them on, and again
off. Ranks agree at each report: reports are on when any rank has them on.
"""

from __future__ import annotations

import signal
import statistics
import time

import torch

__all__ = ["StragglerReporter", "TOGGLE_SIGNAL"]

TOGGLE_SIGNAL = signal.SIGUSR2
"""The signal that switches --straggler reports on and off."""


class StragglerReporter:
    """Times steps on every rank and prints the per-rank comparison every report_interval steps."""

    def __init__(self, cfg, rank: int, world_size: int):
        s = cfg.straggler
        self.on = s is not None
        if not self.on:
            return
        self.interval, self.threshold = s.report_interval, s.threshold
        self.enabled = not s.disable_on_start
        self.rank, self.world = rank, world_size
        self.cuda = torch.cuda.is_available()
        self._total, self._count, self._t0 = 0.0, 0, 0.0
        try:
            self._previous = signal.signal(TOGGLE_SIGNAL, self._toggle)
        except ValueError:  # not the main thread (a wrapper runs training): no toggling
            self._previous = None

    def _toggle(self, signum, frame) -> None:
        self.enabled = not self.enabled

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def begin(self) -> None:
        """Before a training step."""
        if self.on:
            self._t0 = self._now()

    def end(self, iteration: int) -> None:
        """After training step ``iteration`` (1-based); every rank calls it at the same iterations."""
        if not self.on:
            return
        self._total += self._now() - self._t0
        self._count += 1
        if iteration % self.interval == 0:
            self._report(iteration)

    def _report(self, iteration: int) -> None:
        mine = torch.tensor([self._total / max(self._count, 1), 1.0 if self.enabled else 0.0], dtype=torch.float64,
                            device="cuda" if self.cuda else "cpu")
        self._total, self._count = 0.0, 0
        gathered = [torch.empty_like(mine) for _ in range(self.world)]
        torch.distributed.all_gather(gathered, mine)  # every rank, every report: the on/off state is agreed here
        rows = torch.stack(gathered).cpu().tolist()
        if self.rank == 0 and any(on for _, on in rows):
            print(straggler_line(iteration, [t for t, _ in rows], self.threshold), flush=True)

    def close(self) -> None:
        if self.on and self._previous is not None:
            signal.signal(TOGGLE_SIGNAL, self._previous)


def straggler_line(iteration: int, seconds: list[float], threshold: float) -> str:
    """``straggler report at iteration 20 | step time (ms) per rank: 0: 101.2, 1: 180.4 | slowest: rank 1
    (180.4 ms) | fastest: rank 0 (101.2 ms) | median: 140.8 ms | stragglers (> 1.5 x median): 1``."""
    ms = [s * 1000 for s in seconds]
    slow = max(range(len(ms)), key=ms.__getitem__)
    fast = min(range(len(ms)), key=ms.__getitem__)
    median = statistics.median(ms)
    flagged = [str(r) for r, t in enumerate(ms) if t > threshold * median]
    per_rank = ", ".join(f"{r}: {t:.1f}" for r, t in enumerate(ms))
    return (f"straggler report at iteration {iteration} | step time (ms) per rank: {per_rank} | "
            f"slowest: rank {slow} ({ms[slow]:.1f} ms) | fastest: rank {fast} ({ms[fast]:.1f} ms) | "
            f"median: {median:.1f} ms | stragglers (> {threshold:g} x median): {', '.join(flagged) or 'none'}")
