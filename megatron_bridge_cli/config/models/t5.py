"""T5 (encoder-decoder) model provider."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal, Optional

from megatron_bridge_cli.config.models.provider import ModelProviderBase

__all__ = ["T5ModelProvider"]


@dataclass
class T5ModelProvider(ModelProviderBase):
    """megatron-core T5Model. ``num_layers`` is the decoder depth; the encoder has its own."""

    encoder_num_layers: Optional[int] = None
    """Encoder depth. None uses num_layers (the usual symmetric T5)."""

    encoder_seq_length: Optional[int] = None
    """Encoder input length. None uses seq_length."""

    position_embedding_type: Literal["learned_absolute", "rope", "relative"] = "learned_absolute"
    """Position encoding of encoder and decoder."""

    relative_attention_num_buckets: int = 32
    """Buckets of relative position attention (position_embedding_type='relative')."""

    relative_attention_max_distance: int = 128
    """Largest distance relative position attention tells apart."""

    rotary_percent: float = 1.0
    """Fraction of each attention head's dimensions that RoPE rotates."""

    share_embeddings_and_output_weights: bool = True
    """Tie the input embedding and the LM head."""

    fp16_lm_cross_entropy: bool = False
    """Compute the LM cross entropy in fp16."""

    parallel_output: bool = True
    """Keep logits split across tensor-parallel ranks."""

    def encoder_config(self) -> "T5ModelProvider":
        """The encoder's TransformerConfig: this config with the encoder depth."""
        encoder = copy.copy(self)
        encoder.num_layers = self.encoder_num_layers or self.num_layers
        return encoder

    def provide(self, pre_process: Optional[bool] = None, post_process: Optional[bool] = None,
                vp_stage: Optional[int] = None):
        """Build the megatron-core T5Model (both stacks on this rank; no pipeline split)."""
        from megatron.core.models.T5 import T5Model, t5_spec

        self.ensure_finalized()
        encoder = self.encoder_config()
        if self.use_transformer_engine():
            enc_spec = t5_spec.get_t5_encoder_with_transformer_engine_block_spec(encoder.num_layers)
            dec_spec = t5_spec.get_t5_decoder_with_transformer_engine_block_spec(self.num_layers)
        else:
            from megatron_bridge_cli.config.models.t5_local import local_block_specs

            enc_spec, dec_spec = local_block_specs(encoder.num_layers, self.num_layers)
        return T5Model(
            config=self,
            encoder_config=encoder,
            transformer_encoder_layer_spec=enc_spec,
            transformer_decoder_layer_spec=dec_spec,
            vocab_size=self.resolved_vocab_size(),
            max_sequence_length=max(self.seq_length, self.encoder_seq_length or 0),
            pre_process=True if pre_process is None else pre_process,
            post_process=True if post_process is None else post_process,
            fp16_lm_cross_entropy=self.fp16_lm_cross_entropy,
            parallel_output=self.parallel_output,
            share_embeddings_and_output_weights=self.share_embeddings_and_output_weights,
            position_embedding_type=self.position_embedding_type,
            rotary_percent=self.rotary_percent,
            relative_attention_num_buckets=self.relative_attention_num_buckets,
            relative_attention_max_distance=self.relative_attention_max_distance,
        )
