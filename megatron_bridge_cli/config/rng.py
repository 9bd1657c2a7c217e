"""Random seeds."""

from __future__ import annotations

from dataclasses import dataclass

from megatron_bridge_cli.config.strict import StrictFields

__all__ = ["RNGConfig"]


@dataclass
class RNGConfig(StrictFields):
    """Seeds of Python, NumPy and torch, and megatron-core's model-parallel RNG tracker."""

    seed: int = 1234
    """Base seed. Each pipeline stage offsets it; tensor-parallel ranks fork a tracked stream."""

    data_parallel_random_init: bool = False
    """Initialize weights differently on each data-parallel rank (normally identical)."""

    te_rng_tracker: bool = False
    """Use Transformer Engine's RNG tracker (needed for CUDA graphs)."""

    inference_rng_tracker: bool = False
    """Use the inference-mode RNG tracker."""
