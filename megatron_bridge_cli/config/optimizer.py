"""The optimizer: megatron-core's OptimizerConfig, validated at finalize() instead of construction."""

from __future__ import annotations

from dataclasses import dataclass

from megatron.core.optimizer import OptimizerConfig as McoreOptimizerConfig

from megatron_bridge_cli.config.models.provider import DeferredPostInit
from megatron_bridge_cli.config.strict import StrictFields

__all__ = ["OptimizerConfig"]


@dataclass
class OptimizerConfig(StrictFields, DeferredPostInit, McoreOptimizerConfig):
    """megatron-core OptimizerConfig (Adam/SGD, lr, weight decay, clipping, loss scaling,
    distributed optimizer). Every field is megatron-core's; only its checks run later."""
