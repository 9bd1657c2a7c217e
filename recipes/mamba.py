"""Mamba recipe: Mamba-2 130M (Dao & Gu 2024, "Transformers are SSMs", state-spaces/mamba2-130m).

Architecture of the released checkpoint (``config.json``: d_model 768, n_layer 24,
d_intermediate 0, ssm_cfg {layer: Mamba2}, rms_norm, tie_embeddings, vocab_size 50277 padded
to a multiple of pad_vocab_size_multiple=16 -> 50,288 rows) with the mamba_ssm Mamba2 layer
defaults: d_state 128, headdim 64 (24 heads), expand 2 (inner width 1536), ngroups 1, conv
width 4, RMSNorm eps 1e-5. 24 Mamba-2 layers, no attention, no MLP, no position embeddings.

Per layer: in_proj 768 x (2 x 1536 + 2 x 128 + 24) = 2,574,336; conv1d (1536 + 256) x 4 +
1792 bias = 8,960; A_log, D, dt_bias 3 x 24; gated RMSNorm 1536; out_proj 1536 x 768 =
1,179,648; pre-norm 768 -> 3,765,320. Total 24 x 3,765,320 + 50,288 x 768 + 768 (final norm)
= 128,989,632.

megatron-core's MambaModel needs mamba-ssm, causal-conv1d, triton and Transformer Engine
(CUDA only); without them finalize() says what to install.

Training: the Mamba paper's improved GPT-3 recipe (Gu & Dao 2023, Appendix E.2): AdamW
beta2 0.95, weight decay 0.1, clip 1.0, peak lr 5x GPT-3's (6e-4 x 5 = 3e-3 at this size),
cosine to 1e-5; 0.5M-token batches over the Pile's 300B tokens.
"""

from __future__ import annotations

from typing import Optional

from megatron_bridge_cli.config import ConfigContainer, MambaModelProvider
from megatron_bridge_cli.recipes.common import (
    documented_world_size,
    parallelism,
    pretrain_container,
    tokenizer_for,
)

__all__ = ["mamba2_130m"]

GPT_NEOX_VOCAB_SIZE = 50277  # EleutherAI/gpt-neox-20b tokenizer


@documented_world_size(8)
def mamba2_130m(
    *,
    seq_length: int = 2048,
    tensor_parallel: int = 1,
    global_batch_size: int = 256,
    micro_batch_size: int = 8,
    train_iters: int = 572_205,
    lr: float = 3e-3,
    data_path: Optional[list[str]] = None,
    tokenizer_model: Optional[str] = None,
    precision: Optional[str] = "bf16_mixed",
    save: Optional[str] = None,
) -> ConfigContainer:
    """Mamba-2 130M: 24 Mamba-2 layers, 768 hidden, state 128, 24 heads of 64, tied embedding.

    Needs mamba-ssm, causal-conv1d and Transformer Engine (GPU). Batch: 256 x 2048 = 524,288
    tokens = DP 8 x micro-batch 8 x 4 micro-batches; 300B tokens / 524,288 = 572,205 steps.
    Tokenizer: e.g. ``tokenizer_model="EleutherAI/gpt-neox-20b"``.
    """
    model = MambaModelProvider(
        num_layers=24,
        hidden_size=768,
        num_attention_heads=12,  # unused without attention layers; megatron-core requires it
        mamba_state_dim=128,
        mamba_head_dim=64,
        mamba_num_groups=1,
        vocab_size=GPT_NEOX_VOCAB_SIZE,
        # mamba_ssm pads the vocabulary to a multiple of 16 (50,288); x TP, as megatron-core pads.
        make_vocab_size_divisible_by=16,
        seq_length=seq_length,
        normalization="RMSNorm",
        layernorm_epsilon=1e-5,
        add_bias_linear=False,
        position_embedding_type="none",
        share_embeddings_and_output_weights=True,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        **parallelism(tensor_parallel),
    )
    return pretrain_container(
        model,
        global_batch_size=global_batch_size,
        micro_batch_size=micro_batch_size,
        train_iters=train_iters,
        lr=lr,
        min_lr=1e-5,
        warmup_iters=715,  # 375M tokens / 524,288, as GPT-3's warmup
        data_path=data_path,
        tokenizer=tokenizer_for(tokenizer_model),
        precision=precision,
        save=save,
    )
