"""Mixed precision: one place that sets the dtype knobs of model, optimizer and DDP together.

megatron-core spreads precision over three configs (TransformerConfig.bf16/params_dtype/fp8...,
OptimizerConfig.bf16/loss_scale..., DDPConfig.grad_reduce_in_fp32). A MixedPrecisionConfig, or
a named preset (``--mixed_precision=bf16_mixed``), sets them consistently at finalize(). A value
the user set explicitly on those sections (YAML or flag) wins; the disagreement is warned about.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Optional

import torch

from megatron_bridge_cli.config.strict import StrictFields

__all__ = ["MixedPrecisionConfig", "MIXED_PRECISION_PRESETS", "precision_assignments"]


@dataclass
class MixedPrecisionConfig(StrictFields):
    """Training precision applied to model, optimizer and ddp at finalize()."""

    bf16: bool = False
    """Train in bfloat16 (fp32 master weights in the optimizer)."""

    fp16: bool = False
    """Train in float16 with dynamic loss scaling."""

    params_dtype: torch.dtype = torch.float32
    """dtype the model's weights are allocated in."""

    pipeline_dtype: Optional[torch.dtype] = None
    """dtype of activations sent between pipeline stages. None uses params_dtype."""

    autocast_enabled: bool = False
    """Run each forward step under torch.autocast in autocast_dtype, weights staying in
    params_dtype (sets model.enable_autocast). Needs a half autocast_dtype (bf16, fp16)."""

    autocast_dtype: Optional[torch.dtype] = None
    """dtype of torch.autocast (with autocast_enabled). None uses params_dtype."""

    grad_reduce_in_fp32: bool = True
    """Accumulate and all-reduce gradients in fp32."""

    fp8: Optional[Literal["e4m3", "hybrid"]] = None
    """FP8 format for GEMMs (needs Transformer Engine and Hopper or newer). None disables FP8."""

    fp8_recipe: Literal["tensorwise", "delayed", "mxfp8", "blockwise"] = "tensorwise"
    """FP8 scaling recipe."""

    fp8_margin: int = 0
    """Margin of FP8 scaling factors."""

    fp8_amax_history_len: int = 1
    """Length of the amax history (delayed scaling)."""

    fp8_amax_compute_algo: Literal["most_recent", "max"] = "most_recent"
    """How the scaling amax is taken from the history (delayed scaling)."""

    fp8_param_gather: bool = False
    """Keep parameters in FP8 and all-gather them in FP8 (distributed optimizer)."""

    first_last_layers_bf16: bool = False
    """Keep the first and last transformer layers in bf16 under FP8."""

    loss_scale: Optional[float] = None
    """Static loss scale for fp16. None uses dynamic loss scaling."""

    initial_loss_scale: float = 4294967296.0
    """Starting dynamic loss scale (2**32)."""

    min_loss_scale: float = 1.0
    """Dynamic loss scale floor."""

    loss_scale_window: float = 1000
    """Clean steps before the dynamic loss scale grows."""

    hysteresis: int = 2
    """Overflowing steps tolerated before the dynamic loss scale shrinks."""


def precision_assignments(mp: MixedPrecisionConfig) -> list[tuple[str, str, object]]:
    """(section, field, value) settings this precision implies for model, optimizer and ddp."""
    pipeline_dtype = mp.pipeline_dtype or mp.params_dtype
    model = {
        "bf16": mp.bf16, "fp16": mp.fp16, "params_dtype": mp.params_dtype,
        "pipeline_dtype": pipeline_dtype, "enable_autocast": mp.autocast_enabled,
        "autocast_dtype": mp.autocast_dtype or mp.params_dtype,
        "fp8": mp.fp8, "fp8_recipe": mp.fp8_recipe, "fp8_margin": mp.fp8_margin,
        "fp8_amax_history_len": mp.fp8_amax_history_len,
        "fp8_amax_compute_algo": mp.fp8_amax_compute_algo, "fp8_param": mp.fp8_param_gather,
        "first_last_layers_bf16": mp.first_last_layers_bf16,
    }
    optimizer = {
        "bf16": mp.bf16, "fp16": mp.fp16, "params_dtype": mp.params_dtype,
        "loss_scale": mp.loss_scale, "initial_loss_scale": mp.initial_loss_scale,
        "min_loss_scale": mp.min_loss_scale, "loss_scale_window": mp.loss_scale_window,
        "hysteresis": mp.hysteresis,
    }
    ddp = {"grad_reduce_in_fp32": mp.grad_reduce_in_fp32, "fp8_param_gather": mp.fp8_param_gather}
    return (
        [("model", k, v) for k, v in model.items()]
        + [("optimizer", k, v) for k, v in optimizer.items()]
        + [("ddp", k, v) for k, v in ddp.items()]
    )


def fp32() -> MixedPrecisionConfig:
    """Full fp32 training."""
    return MixedPrecisionConfig()


def bf16_mixed() -> MixedPrecisionConfig:
    """bf16 weights and activations, fp32 master weights and gradient reduction."""
    return MixedPrecisionConfig(bf16=True, params_dtype=torch.bfloat16, pipeline_dtype=torch.bfloat16)


def fp16_mixed() -> MixedPrecisionConfig:
    """fp16 weights and activations with dynamic loss scaling."""
    return MixedPrecisionConfig(fp16=True, params_dtype=torch.float16, pipeline_dtype=torch.float16)


def bf16_with_fp8_delayed_scaling_mixed() -> MixedPrecisionConfig:
    """bf16 plus FP8 GEMMs with delayed scaling (Hopper, Transformer Engine)."""
    mp = bf16_mixed()
    mp.fp8, mp.fp8_recipe, mp.fp8_amax_history_len, mp.fp8_amax_compute_algo = "hybrid", "delayed", 1024, "max"
    return mp


def bf16_with_fp8_current_scaling_mixed() -> MixedPrecisionConfig:
    """bf16 plus FP8 GEMMs with per-tensor current scaling (Hopper, Transformer Engine)."""
    mp = bf16_mixed()
    mp.fp8, mp.fp8_recipe, mp.first_last_layers_bf16 = "hybrid", "tensorwise", True
    return mp


def bf16_with_mxfp8_mixed() -> MixedPrecisionConfig:
    """bf16 plus MXFP8 block-scaled GEMMs (Blackwell, Transformer Engine)."""
    mp = bf16_mixed()
    mp.fp8, mp.fp8_recipe = "e4m3", "mxfp8"
    return mp


MIXED_PRECISION_PRESETS: dict[str, Callable[[], MixedPrecisionConfig]] = {
    "fp32": fp32,
    "bf16_mixed": bf16_mixed,
    "fp16_mixed": fp16_mixed,
    "bf16_with_fp8_delayed_scaling_mixed": bf16_with_fp8_delayed_scaling_mixed,
    "bf16_with_fp8_current_scaling_mixed": bf16_with_fp8_current_scaling_mixed,
    "bf16_with_mxfp8_mixed": bf16_with_mxfp8_mixed,
}
"""Named precisions, e.g. ``--mixed_precision=bf16_mixed``."""
