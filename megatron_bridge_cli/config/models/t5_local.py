"""T5 block specs built from plain megatron-core modules (no Transformer Engine).

megatron-core 0.16's local T5 block specs cannot build or run a published T5 on their own:

* they name ``TENorm`` as the final layer norm of both stacks, which is ``None`` when
  Transformer Engine is not installed, so the model does not build;
* the local ``DotProductAttention`` asserts ``attention_bias is None``, so T5's relative
  position bias (``position_embedding_type='relative'``, the published T5 architecture) only
  runs on the TE spec.

:func:`local_block_specs` fixes both: the final norm is the same norm class the layers use,
and self-attention gets :class:`BiasedDotProductAttention`, which adds the bias to the scaled
scores before the masked softmax, the way TE's ``post_scale_bias`` does. Cross-attention
gets no bias (T5 has none there), so it keeps the stock module.
"""

from __future__ import annotations

from typing import Optional

import torch
from megatron.core.models.T5 import t5_spec
from megatron.core.transformer.dot_product_attention import DotProductAttention

__all__ = ["BiasedDotProductAttention", "local_block_specs"]


class _BiasedSoftmax(torch.nn.Module):
    """Wraps megatron-core's FusedScaleMaskSoftmax: adds ``self.bias`` to the scores first."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner
        self.bias: Optional[torch.Tensor] = None  # set for the duration of one forward

    def forward(self, scores, mask, softmax_offset=None):
        if self.bias is not None:
            scores = scores + self.bias.to(scores.dtype)  # [b, np, sq, sk] + [1, np, sq, sk]
        return self.inner(scores, mask, softmax_offset)


class BiasedDotProductAttention(DotProductAttention):
    """megatron-core's local DotProductAttention plus an additive attention bias.

    The bias arrives already split over tensor-parallel ranks ([1, heads/TP, sq, sk]; T5Model
    scatters it). It is added after the 1/sqrt(head_dim) scaling, before masking and softmax.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.scale_mask_softmax = _BiasedSoftmax(self.scale_mask_softmax)

    def forward(self, query, key, value, attention_mask, attn_mask_type=None,
                attention_bias=None, packed_seq_params=None):
        self.scale_mask_softmax.bias = attention_bias
        try:
            return super().forward(query, key, value, attention_mask, attn_mask_type,
                                   None, packed_seq_params)
        finally:
            self.scale_mask_softmax.bias = None


def local_block_specs(encoder_layers: int, decoder_layers: int):
    """(encoder, decoder) TransformerBlockSubmodules for T5 without Transformer Engine."""
    specs = (
        t5_spec.get_t5_encoder_with_local_block_spec(encoder_layers),
        t5_spec.get_t5_decoder_with_local_block_spec(decoder_layers),
    )
    for block in specs:
        block.layer_norm = t5_spec.LNImpl  # instead of TENorm (None without TE)
        for layer in block.layer_specs:  # one shared spec object per stack; setting twice is harmless
            layer.submodules.self_attention.submodules.core_attention = BiasedDotProductAttention
    return specs
