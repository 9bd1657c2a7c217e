"""How long to train, on what batch, and when to evaluate and stop."""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from typing import Optional

from megatron_bridge_cli.config.strict import StrictFields

__all__ = ["TrainingConfig"]


@dataclass
class TrainingConfig(StrictFields):
    """Batch sizes, run length, evaluation cadence and exit conditions."""

    global_batch_size: int = 32
    """Samples per optimizer step across all data-parallel ranks (= micro_batch_size x DP x micro-batches)."""

    micro_batch_size: int = 1
    """Samples per forward/backward pass on one rank."""

    train_iters: Optional[int] = None
    """Optimizer steps to train for. Set this or train_samples, not both."""

    train_samples: Optional[int] = None
    """Samples to train on; train_iters is derived as train_samples // global_batch_size."""

    eval_interval: Optional[int] = 1000
    """Evaluate on the validation set every this many iterations (None: only at the end)."""

    eval_iters: int = 100
    """Batches per evaluation (0 disables evaluation)."""

    eval_global_batch_size: Optional[int] = None
    """Global batch size of evaluation. None uses global_batch_size."""

    eval_micro_batch_size: Optional[int] = None
    """Micro-batch size of evaluation. None uses micro_batch_size."""

    skip_train: bool = False
    """Skip training and only run evaluation (e.g. to score a checkpoint)."""

    exit_interval: Optional[int] = None
    """Stop (after saving a checkpoint) when the iteration number is a multiple of this."""

    exit_duration_in_mins: Optional[float] = None
    """Stop (after saving a checkpoint) once the run has lasted this many minutes."""

    exit_signal_handler: bool = False
    """On exit_signal, finish the current iteration, save a checkpoint and exit 0."""

    exit_signal: signal.Signals = signal.SIGTERM
    """The signal exit_signal_handler listens for."""

    manual_gc: bool = False
    """Disable Python's automatic garbage collector and collect every manual_gc_interval steps."""

    manual_gc_interval: int = 0
    """Iterations between manual garbage collections (0: only at start)."""

    data_parallel_size: Optional[int] = field(default=None, init=False, repr=False)
    """Derived: world size / (TP x PP x CP)."""

    num_microbatches: Optional[int] = field(default=None, init=False, repr=False)
    """Derived: global_batch_size / (micro_batch_size x data_parallel_size)."""

    total_iters: Optional[int] = field(default=None, init=False, repr=False)
    """Derived: train_iters, or train_samples // global_batch_size."""

    eval_num_microbatches: Optional[int] = field(default=None, init=False, repr=False)
    """Derived: evaluation micro-batches per step."""
