"""What the run reports: console lines, TensorBoard scalars, Weights & Biases."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from megatron_bridge_cli.config.strict import StrictFields

__all__ = ["LoggerConfig"]


@dataclass
class LoggerConfig(StrictFields):
    """Console, TensorBoard and W&B logging."""

    log_interval: int = 10
    """Print a training log line every this many iterations."""

    log_throughput: bool = True
    """Include tokens/s and model TFLOP/s per GPU in log lines."""

    log_memory: bool = True
    """Report peak memory (to the console once, and to TensorBoard)."""

    tensorboard_dir: Optional[str] = None
    """Write TensorBoard event files here (needs the tensorboard extra). None disables."""

    tensorboard_log_interval: int = 1
    """Write TensorBoard scalars every this many iterations."""

    tensorboard_queue_size: int = 1000
    """Events TensorBoard buffers before flushing to disk."""

    wandb_project: Optional[str] = None
    """Log to this Weights & Biases project (needs the wandb extra; WANDB_MODE=offline works)."""

    wandb_exp_name: Optional[str] = None
    """W&B run name. None lets W&B choose."""

    wandb_entity: Optional[str] = None
    """W&B team or user."""

    wandb_save_dir: Optional[str] = None
    """Folder for W&B's local files. None uses W&B's default."""

    timing_log_level: Literal[0, 1, 2] = 0
    """megatron-core timers, printed after each log line as (min, max) ms per iteration over ranks
    (Megatron-LM's --timing-log-level): 0 only the line's iteration time; 1 adds forward-backward,
    gradient all-reduces and the optimizer's phases; 2 also forward/backward compute, batch
    loading and pipeline send/receive."""

    log_params_norm: bool = False
    """Add the L2 norm of all parameters to log lines ('params norm') and TensorBoard/W&B
    ('params-norm'), as Megatron-LM does (costs a model-parallel all-reduce per logged step)."""
