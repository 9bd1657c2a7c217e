"""Learning-rate and weight-decay schedule (megatron-core's OptimizerParamScheduler)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from megatron_bridge_cli.config.strict import StrictFields

__all__ = ["SchedulerConfig"]


@dataclass
class SchedulerConfig(StrictFields):
    """Warmup and decay of the learning rate, and the weight-decay ramp.

    Lengths may be given in iterations or in samples (not both); finalize() converts them to
    steps. The peak and minimum learning rates live on the optimizer (--optimizer.lr,
    --optimizer.min_lr).
    """

    lr_decay_style: Literal["constant", "linear", "cosine", "inverse-square-root", "WSD"] = "cosine"
    """Shape of the decay from optimizer.lr to optimizer.min_lr."""

    lr_decay_iters: Optional[int] = None
    """Iterations to decay over. None decays over the whole run."""

    lr_decay_samples: Optional[int] = None
    """Samples to decay over (alternative to lr_decay_iters)."""

    lr_warmup_iters: int = 0
    """Iterations of linear warmup from lr_warmup_init to optimizer.lr."""

    lr_warmup_samples: int = 0
    """Samples of warmup (alternative to lr_warmup_iters)."""

    lr_warmup_fraction: Optional[float] = None
    """Warmup as a fraction of the decay steps (alternative to lr_warmup_iters/samples)."""

    lr_warmup_init: float = 0.0
    """Learning rate at the start of warmup."""

    lr_wsd_decay_style: Literal["exponential", "linear", "cosine", "minus_sqrt"] = "exponential"
    """Decay shape of the final phase of a WSD schedule."""

    lr_wsd_decay_iters: Optional[int] = None
    """Iterations of the final decay phase of a WSD schedule."""

    lr_wsd_decay_samples: Optional[int] = None
    """Samples of the final decay phase of a WSD schedule (alternative to lr_wsd_decay_iters)."""

    start_weight_decay: Optional[float] = None
    """Weight decay at the start. None uses optimizer.weight_decay."""

    end_weight_decay: Optional[float] = None
    """Weight decay at the end. None uses optimizer.weight_decay."""

    weight_decay_incr_style: Literal["constant", "linear", "cosine"] = "constant"
    """How weight decay moves from start_weight_decay to end_weight_decay."""

    use_checkpoint_opt_param_scheduler: bool = True
    """On resume, take the schedule settings stored in the checkpoint."""

    override_opt_param_scheduler: bool = False
    """On resume, use these settings instead of the checkpoint's."""

    lr_warmup_steps: Optional[int] = field(default=None, init=False, repr=False)
    """Derived: warmup length in samples-steps as OptimizerParamScheduler counts them."""

    lr_decay_steps: Optional[int] = field(default=None, init=False, repr=False)
    """Derived: decay length in OptimizerParamScheduler steps."""

    wd_incr_steps: Optional[int] = field(default=None, init=False, repr=False)
    """Derived: weight-decay ramp length in OptimizerParamScheduler steps."""

    wsd_decay_steps: Optional[int] = field(default=None, init=False, repr=False)
    """Derived: WSD final decay length in OptimizerParamScheduler steps."""
