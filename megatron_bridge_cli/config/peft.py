"""Parameter-efficient finetuning: LoRA and DoRA adapters on the linear layers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from megatron_bridge_cli.config.strict import StrictFields

__all__ = ["LoRAConfig", "DoRAConfig", "PEFT_KINDS"]


@dataclass
class LoRAConfig(StrictFields):
    """Low-rank adapters (Hu et al., 2021): W x + (alpha/dim) B A x, base weights frozen."""

    target_modules: list[str] = field(
        default_factory=lambda: ["linear_qkv", "linear_proj", "linear_fc1", "linear_fc2"]
    )
    """megatron-core linear layers that get an adapter: a layer name (``linear_qkv``) matches it
    anywhere; a wildcard pattern matches the full module name (``*.layers.0.*.linear_fc1``)."""

    exclude_modules: list[str] = field(default_factory=list)
    """Layers left without an adapter although target_modules names them (same patterns)."""

    dim: int = 32
    """Adapter rank r."""

    alpha: int = 32
    """Scaling numerator: the adapter output is multiplied by alpha / dim."""

    dropout: float = 0.0
    """Dropout on the adapter input."""

    dropout_position: Literal["pre", "post"] = "pre"
    """Apply dropout before the A projection or after the B projection."""

    lora_A_init_method: Literal["xavier", "uniform", "kaiming"] = "xavier"
    """Initialization of the down projection A."""

    lora_B_init_method: Literal["zero", "xavier"] = "zero"
    """Initialization of the up projection B (zero makes the adapter start as identity)."""


@dataclass
class DoRAConfig(LoRAConfig):
    """Weight-decomposed low-rank adaptation (Liu et al., 2024): LoRA on the direction, plus a
    trained per-output magnitude vector."""


PEFT_KINDS = {"lora": LoRAConfig, "dora": DoRAConfig}
"""Names that switch PEFT on, e.g. ``--peft=lora``."""
