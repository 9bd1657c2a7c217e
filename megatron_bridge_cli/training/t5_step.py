"""One micro-batch of megatron-core's T5Model: span-corruption batch -> masks -> loss.

``T5Model.forward(encoder_input_ids, decoder_input_ids, encoder_attn_mask, decoder_attn_mask,
encoder_decoder_attn_mask, lm_labels=...)`` returns per-token cross entropy ``[b, s_dec]``
when given labels; the loss function (the loop's, shared with GPT) weights it by the batch's
``loss_mask``, which covers exactly the real target tokens (sentinels, masked spans, eos).

Attention masks (True = may not attend), built from the dataset's padding masks (``enc_mask``,
``dec_mask``: 1 on real tokens):

* local attention (no Transformer Engine) takes full ``[b, 1, q, k]`` masks: encoder
  padding x padding, decoder padding x padding x causal, decoder queries x encoder keys. They
  are what megatron-core's ``T5MaskedWordPieceDataset.config_attention_mask(use_local=True)``
  builds, except that it finds padding by ``token id >= 1`` (BERT's [PAD] is 0), which would
  also hide every real id 0 (a NUL byte, t5-base's <pad>): the dataset's own masks are exact.
* Transformer Engine takes ``[b, 1, 1, s]`` padding masks and applies causality itself:
  megatron-core's ``config_attention_mask(use_local=False)`` builds them (as Megatron-LM's
  ``pretrain_t5.py`` does).

Pipeline parallelism is refused by validation for T5 (see config/t5_checks.py), so every rank
holds embedding, both stacks and LM head, and reads every micro-batch.
"""

from __future__ import annotations

from functools import partial

import torch

from megatron_bridge_cli.training.setup import on_cpu, unwrap

__all__ = ["forward_step", "attention_masks"]


def attention_masks(enc_real: torch.Tensor, dec_real: torch.Tensor, local: bool,
                    enc_tokens: torch.Tensor = None, dec_tokens: torch.Tensor = None):
    """(encoder, decoder, encoder-decoder) masks for ``[b, s]`` padding masks (True = real)."""
    if not local:
        from megatron.core.datasets.t5_dataset import T5MaskedWordPieceDataset

        return T5MaskedWordPieceDataset.config_attention_mask(enc_tokens, dec_tokens, ~enc_real, ~dec_real, False)
    s_dec = dec_real.shape[1]
    causal = torch.tril(torch.ones(s_dec, s_dec, dtype=torch.bool, device=dec_real.device))
    enc = enc_real[:, :, None] & enc_real[:, None, :]
    dec = dec_real[:, :, None] & dec_real[:, None, :] & causal
    enc_dec = dec_real[:, :, None] & enc_real[:, None, :]
    return (~enc).unsqueeze(1), (~dec).unsqueeze(1), (~enc_dec).unsqueeze(1)


def forward_step(data_iterator, model):
    """Run the T5 chunk on the next micro-batch; return its token losses and the loss function."""
    from megatron_bridge_cli.training.loop import loss_func  # the loop's token-weighted loss

    t5 = unwrap(model)
    batch = next(data_iterator)
    if not on_cpu():
        batch = {k: v.cuda(non_blocking=True) for k, v in batch.items()}
    enc_tokens, dec_tokens = batch["text_enc"].long(), batch["text_dec"].long()
    masks = attention_masks(batch["enc_mask"] > 0, batch["dec_mask"] > 0, local=not t5.config.use_transformer_engine(),
                            enc_tokens=enc_tokens, dec_tokens=dec_tokens)
    output = model(enc_tokens, dec_tokens, *masks, lm_labels=batch["labels"].long())
    return output, partial(loss_func, batch["loss_mask"].float())
