"""Mamba / hybrid Mamba-Transformer model provider."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Literal, Optional

from megatron_bridge_cli.config.models.provider import ModelProviderBase

__all__ = ["MambaModelProvider", "MAMBA_INSTALL_HINT", "mamba_missing_packages"]

# megatron-core's mamba_stack_spec builds its layers from Transformer Engine modules
# (TELayerNormColumnParallelLinear, TERowParallelLinear), so TE is needed too.
_MAMBA_PACKAGES = ("mamba_ssm", "causal_conv1d", "triton", "transformer_engine")
MAMBA_INSTALL_HINT = "pip install mamba-ssm causal-conv1d '.[te]' on a CUDA machine"
"""How to install what MambaModel needs (all of it needs CUDA)."""


def mamba_missing_packages() -> list[str]:
    """Packages MambaModel needs that are not installed (they need CUDA to install)."""
    return [name for name in _MAMBA_PACKAGES if importlib.util.find_spec(name) is None]


@dataclass
class MambaModelProvider(ModelProviderBase):
    """megatron-core MambaModel (Mamba-2 layers, optionally mixed with attention and MLP)."""

    hybrid_attention_ratio: float = 0.0
    """Fraction of layers that are attention layers (ignored when hybrid_override_pattern is set)."""

    hybrid_mlp_ratio: float = 0.0
    """Fraction of layers that are MLP layers (ignored when hybrid_override_pattern is set)."""

    hybrid_override_pattern: Optional[str] = None
    """Layer pattern, one character a layer: M=Mamba, *=attention, -=MLP (e.g. 'M-M*-M-')."""

    position_embedding_type: Literal["learned_absolute", "rope", "none"] = "none"
    """Position encoding; pure Mamba needs none."""

    rotary_base: int = 10000
    """RoPE base frequency (attention layers with position_embedding_type='rope')."""

    rotary_percent: float = 1.0
    """Fraction of each attention head's dimensions that RoPE rotates."""

    share_embeddings_and_output_weights: bool = False
    """Tie the input embedding and the output projection."""

    fp16_lm_cross_entropy: bool = False
    """Compute the LM cross entropy in fp16."""

    parallel_output: bool = True
    """Keep logits split across tensor-parallel ranks."""

    def provide(self, pre_process: Optional[bool] = None, post_process: Optional[bool] = None,
                vp_stage: Optional[int] = None):
        """Build the megatron-core MambaModel; needs mamba-ssm, causal-conv1d, triton and TE."""
        missing = mamba_missing_packages()
        if missing:
            raise RuntimeError(
                f"MambaModel needs {', '.join(missing)} (GPU-only packages): {MAMBA_INSTALL_HINT}"
            )
        from megatron.core import parallel_state
        from megatron.core.models.mamba import MambaModel
        from megatron.core.models.mamba.mamba_layer_specs import mamba_stack_spec

        self.ensure_finalized()
        return MambaModel(
            config=self,
            mamba_stack_spec=mamba_stack_spec,
            vocab_size=self.resolved_vocab_size(),
            max_sequence_length=self.seq_length,
            pre_process=parallel_state.is_pipeline_first_stage() if pre_process is None else pre_process,
            post_process=parallel_state.is_pipeline_last_stage() if post_process is None else post_process,
            hybrid_attention_ratio=self.hybrid_attention_ratio,
            hybrid_mlp_ratio=self.hybrid_mlp_ratio,
            hybrid_override_pattern=self.hybrid_override_pattern,
            fp16_lm_cross_entropy=self.fp16_lm_cross_entropy,
            parallel_output=self.parallel_output,
            share_embeddings_and_output_weights=self.share_embeddings_and_output_weights,
            position_embedding_type=self.position_embedding_type,
            rotary_percent=self.rotary_percent,
            rotary_base=self.rotary_base,
        )
