"""GPT (decoder-only) model provider: GPT-3, Llama, Mistral, Qwen and friends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from megatron_bridge_cli.config.models.moe import patch_router_without_te
from megatron_bridge_cli.config.models.provider import ModelProviderBase

__all__ = ["GPTModelProvider"]


@dataclass
class GPTModelProvider(ModelProviderBase):
    """megatron-core GPTModel: a TransformerConfig plus embedding and output-layer settings."""

    position_embedding_type: Literal["learned_absolute", "rope", "yarn", "none"] = "learned_absolute"
    """Position encoding: learned absolute embeddings (GPT-2/3) or rotary (Llama and later)."""

    rotary_base: int = 10000
    """RoPE base frequency theta (Llama 3 uses 500000)."""

    rotary_percent: float = 1.0
    """Fraction of each attention head's dimensions that RoPE rotates."""

    rope_scaling: bool = False
    """Apply Llama-3.1-style RoPE frequency scaling for long context."""

    rope_scaling_factor: float = 8.0
    """Scale factor of rope_scaling."""

    seq_len_interpolation_factor: Optional[float] = None
    """Linear RoPE position interpolation factor; None disables it."""

    share_embeddings_and_output_weights: bool = True
    """Tie the input embedding and the output projection (GPT-3: tied; Llama: untied)."""

    fp16_lm_cross_entropy: bool = False
    """Compute the LM cross entropy in fp16 (saves memory, costs precision)."""

    parallel_output: bool = True
    """Keep logits split across tensor-parallel ranks (the loss handles the split)."""

    @classmethod
    def from_hf(cls, path: str) -> "GPTModelProvider":
        """The architecture of a local HuggingFace model folder (its config.json: Llama, Mistral,
        Qwen2, Qwen3 or GPT-2), as ``--model=hf:PATH`` builds it. Weights are loaded separately,
        with ``--checkpoint.pretrained_checkpoint=PATH``. Never downloads."""
        from megatron_bridge_cli.hf.families import provider_from_hf

        return provider_from_hf(path)

    def layer_spec_module(self, vp_stage: Optional[int] = None):
        """The megatron-core ModuleSpec for one transformer layer, or, for MoE models, the block
        spec of this pipeline stage's layers (MoE or dense, as ``moe_layer_freq`` says)."""
        from megatron.core.models.gpt import gpt_layer_specs

        kwargs = dict(
            num_experts=self.num_moe_experts,
            moe_grouped_gemm=self.moe_grouped_gemm,
            qk_layernorm=self.qk_layernorm,
        )
        if self.num_moe_experts:
            patch_router_without_te()
            return gpt_layer_specs.get_gpt_decoder_block_spec(
                self, use_transformer_engine=self.use_transformer_engine(), normalization=self.normalization,
                vp_stage=vp_stage,
            )
        if self.use_transformer_engine():
            return gpt_layer_specs.get_gpt_layer_with_transformer_engine_spec(**kwargs)
        return gpt_layer_specs.get_gpt_layer_local_spec(normalization=self.normalization, **kwargs)

    def provide(self, pre_process: Optional[bool] = None, post_process: Optional[bool] = None,
                vp_stage: Optional[int] = None):
        """Build the megatron-core GPTModel for this rank's pipeline stage.

        Needs megatron-core's parallel state initialized (a single process with TP=PP=1 is
        enough). ``pre_process``/``post_process`` default to "this rank holds the first/last
        pipeline stage".
        """
        from megatron.core import parallel_state
        from megatron.core.models.gpt import GPTModel

        self.ensure_finalized()
        if pre_process is None:
            pre_process = parallel_state.is_pipeline_first_stage(ignore_virtual=False, vp_stage=vp_stage)
        if post_process is None:
            post_process = parallel_state.is_pipeline_last_stage(ignore_virtual=False, vp_stage=vp_stage)
        return GPTModel(
            config=self,
            transformer_layer_spec=self.layer_spec_module(vp_stage),
            vocab_size=self.resolved_vocab_size(),
            max_sequence_length=self.seq_length,
            pre_process=pre_process,
            post_process=post_process,
            fp16_lm_cross_entropy=self.fp16_lm_cross_entropy,
            parallel_output=self.parallel_output,
            share_embeddings_and_output_weights=self.share_embeddings_and_output_weights,
            position_embedding_type=self.position_embedding_type,
            rotary_percent=self.rotary_percent,
            rotary_base=self.rotary_base,
            rope_scaling=self.rope_scaling,
            rope_scaling_factor=self.rope_scaling_factor,
            seq_len_interpolation_factor=self.seq_len_interpolation_factor,
            vp_stage=vp_stage,
        )
