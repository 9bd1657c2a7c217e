"""The T5 and Mamba providers build their megatron-core models (or say what is missing).

T5 runs on CPU with the local (non-Transformer-Engine) specs, relative position bias included;
MambaModel needs mamba-ssm, causal-conv1d, triton and Transformer Engine, which install only
with CUDA, so without them provide() and finalize() name what to install.
"""

from __future__ import annotations

import math

import pytest
import torch

from megatron_bridge_cli.config.models.mamba import mamba_missing_packages
from megatron_bridge_cli.recipes.mamba import mamba2_130m
from megatron_bridge_cli.recipes.t5 import t5_220m
from tests.unit.test_recipes import single_rank  # noqa: F401  (fixture)


def small_t5():
    """t5_220m's architecture (RMSNorm, ReLU, no biases, relative position bias, tied
    embedding) at toy width and depth, fp32, local specs."""
    model = t5_220m(precision=None).model
    model.num_layers = model.encoder_num_layers = 2
    model.hidden_size, model.num_attention_heads, model.kv_channels, model.ffn_hidden_size = 64, 4, 16, 128
    model.vocab_size = 512
    model.hidden_dropout = model.attention_dropout = 0.0
    model.layer_spec = "local"
    return model


def t5_batch(b=2, enc=24, dec=8, vocab=512):
    g = torch.Generator().manual_seed(0)
    enc_ids, dec_ids = torch.randint(0, vocab, (b, enc), generator=g), torch.randint(0, vocab, (b, dec), generator=g)
    # megatron-core masks are True where attention is NOT allowed; [b, 1, q, k]
    enc_mask = torch.zeros(b, 1, enc, enc, dtype=torch.bool)
    enc_mask[1, :, :, enc - 4:] = True  # second sample: last 4 encoder tokens are padding
    dec_mask = torch.triu(torch.ones(dec, dec, dtype=torch.bool), 1).expand(b, 1, dec, dec)
    cross_mask = enc_mask[:, :, :1, :].expand(b, 1, dec, enc)
    labels = torch.randint(0, vocab, (b, dec), generator=g)
    return enc_ids, dec_ids, enc_mask, dec_mask, cross_mask, labels


def test_t5_builds_and_trains_a_step_on_cpu(single_rank):  # noqa: F811
    model = small_t5().provide()
    assert model.encoder_relative_pos_emb is not None and model.encoder.final_layernorm is not None
    enc_ids, dec_ids, enc_mask, dec_mask, cross_mask, labels = t5_batch()
    loss = model(enc_ids, dec_ids, enc_mask, dec_mask, cross_mask, lm_labels=labels)
    assert loss.shape == labels.shape and torch.isfinite(loss).all()
    # Untrained: per-token loss is close to log(vocab).
    assert abs(loss.mean().item() - math.log(512)) < 1.0
    loss.mean().backward()
    for stack in ("encoder_relative_pos_emb", "decoder_relative_pos_emb"):
        grad = getattr(model, stack).relative_attention_bias.weight.grad
        assert grad is not None and grad.abs().sum() > 0, f"{stack} gets no gradient: the bias is not applied"
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_t5_relative_bias_changes_the_output(single_rank):  # noqa: F811
    model = small_t5().provide()
    model.eval()
    batch = t5_batch()
    with torch.no_grad():
        before = model(*batch[:5])
        model.encoder_relative_pos_emb.relative_attention_bias.weight.add_(1.0 * torch.randn(32, 4))
        after = model(*batch[:5])
    assert not torch.allclose(before, after)


def test_biased_attention_equals_softmax_of_scaled_scores_plus_bias(single_rank):  # noqa: F811
    from megatron.core.transformer.enums import AttnMaskType
    from megatron.core.transformer.transformer_config import TransformerConfig

    from megatron_bridge_cli.config.models.t5_local import BiasedDotProductAttention

    heads, dim, sq, b = 4, 16, 6, 2
    config = TransformerConfig(num_layers=1, hidden_size=heads * dim, num_attention_heads=heads,
                               attention_dropout=0.0)
    attn = BiasedDotProductAttention(config, layer_number=1, attn_mask_type=AttnMaskType.arbitrary,
                                     attention_type="self")
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(sq, b, heads, dim, generator=g) for _ in range(3))
    bias = torch.randn(1, heads, sq, sq, generator=g)
    mask = torch.zeros(b, 1, sq, sq, dtype=torch.bool)
    mask[0, :, :, -2:] = True
    out = attn(q, k, v, mask, attention_bias=bias)

    scores = torch.einsum("qbhd,kbhd->bhqk", q, k) / math.sqrt(dim) + bias
    probs = scores.masked_fill(mask, float("-inf")).softmax(-1)
    expected = torch.einsum("bhqk,kbhd->qbhd", probs, v).reshape(sq, b, heads * dim)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    # Without a bias it is megatron-core's attention, unchanged.
    plain = attn(q, k, v, mask)
    probs = (torch.einsum("qbhd,kbhd->bhqk", q, k) / math.sqrt(dim)).masked_fill(mask, float("-inf")).softmax(-1)
    torch.testing.assert_close(plain, torch.einsum("bhqk,kbhd->qbhd", probs, v).reshape(sq, b, heads * dim))


@pytest.mark.skipif(not mamba_missing_packages(), reason="mamba-ssm stack is installed here")
def test_mamba_provide_without_mamba_ssm_names_what_to_install():
    with pytest.raises(RuntimeError, match="pip install mamba-ssm causal-conv1d"):
        mamba2_130m().model.provide()


@pytest.mark.skipif(bool(mamba_missing_packages()), reason="needs mamba-ssm, causal-conv1d, triton and TE (CUDA)")
def test_mamba_builds_where_mamba_ssm_is_installed(single_rank):  # noqa: F811
    model = mamba2_130m(precision=None).model
    model.num_layers, model.hidden_size = 2, 128
    built = model.provide()
    assert len(built.decoder.layers) == 2
