"""Qwen recipes: Qwen2.5 7B, Qwen3 8B and Qwen3 30B-A3B (mixture of experts).

Architectures of the released checkpoints (HuggingFace ``config.json``):

* Qwen/Qwen2.5-7B: 28 layers, hidden 3584, 28 heads / 4 KV heads (head dim 128), SwiGLU
  18944, RMSNorm eps 1e-6, RoPE base 1,000,000, biases on the Q/K/V projections only,
  vocabulary 152,064 (unpadded), untied output layer.
* Qwen/Qwen3-8B: 36 layers, hidden 4096, 32 heads / 8 KV heads, head_dim 128, SwiGLU 12288,
  RMSNorm eps 1e-6 on the residual stream and on each query and key head (QK-norm), RoPE base
  1,000,000, no biases, vocabulary 151,936 (unpadded), untied output layer.
* Qwen/Qwen3-30B-A3B: Qwen3's attention (48 layers, hidden 2048, 32 heads / 4 KV heads of
  head_dim 128, QK-norm) with every MLP a mixture of 128 SwiGLU experts of width 768, 8 per
  token with renormalized weights (``norm_topk_prob``), no shared expert, router aux-loss
  coefficient 0.001; vocabulary 151,936, untied. 30,532,122,624 parameters, 3,353,032,704
  active per token (the model card's 30.5B and 3.3B).

The Qwen2.5 and Qwen3 technical reports give data sizes (18T and 36T tokens) and a first
pretraining stage at 4096 tokens, but not batch sizes or learning rates; those here follow the
other 7-8B recipes (4M-token batches, lr 3e-4, cosine to 10%).
"""

from __future__ import annotations

from typing import Optional

from megatron_bridge_cli.config import ConfigContainer
from megatron_bridge_cli.recipes.common import (
    documented_world_size,
    moe_fields,
    parallelism,
    pretrain_container,
    swiglu_decoder,
    tokenizer_for,
)

__all__ = ["qwen25_7b", "qwen3_8b", "qwen3_30b_a3b"]

# Embedding rows as released. The tokenizer has 151,665 ids (Qwen2.5) / 151,669 (Qwen3); Qwen
# padded the tables itself, so no further padding here.
QWEN25_VOCAB_SIZE = 152064
QWEN3_VOCAB_SIZE = 151936


@documented_world_size(8)
def qwen25_7b(
    *,
    seq_length: int = 4096,
    tensor_parallel: int = 2,
    pipeline_parallel: int = 1,
    context_parallel: int = 1,
    sequence_parallel: bool = False,
    global_batch_size: int = 1024,
    micro_batch_size: int = 1,
    train_iters: int = 500_000,
    lr: float = 3e-4,
    data_path: Optional[list[str]] = None,
    tokenizer_model: Optional[str] = None,
    precision: Optional[str] = "bf16_mixed",
    save: Optional[str] = None,
) -> ConfigContainer:
    """Qwen2.5 7B: 28 layers, 3584 hidden, 28 heads / 4 KV heads, SwiGLU 18944, QKV bias.

    Layout: TP=2 (28 heads and 4 KV heads both split in two) leaves DP=4 on 8 GPUs. Batch:
    1024 x 4096 = 4,194,304 tokens = DP 4 x micro-batch 1 x 256 micro-batches.
    Tokenizer: e.g. ``tokenizer_model="Qwen/Qwen2.5-7B"``.
    """
    model = swiglu_decoder(
        num_layers=28, hidden_size=3584, ffn_hidden_size=18944,
        num_attention_heads=28, num_query_groups=4,
        vocab_size=QWEN25_VOCAB_SIZE, seq_length=seq_length,
        rotary_base=1_000_000, layernorm_epsilon=1e-6,
        add_qkv_bias=True,
        **parallelism(tensor_parallel, pipeline_parallel, context_parallel, None, sequence_parallel),
    )
    return pretrain_container(
        model,
        global_batch_size=global_batch_size,
        micro_batch_size=micro_batch_size,
        train_iters=train_iters,
        lr=lr,
        warmup_iters=2000,
        data_path=data_path,
        tokenizer=tokenizer_for(tokenizer_model),
        precision=precision,
        save=save,
        distributed_optimizer=True,
    )


@documented_world_size(8)
def qwen3_8b(
    *,
    seq_length: int = 4096,
    tensor_parallel: int = 2,
    pipeline_parallel: int = 1,
    context_parallel: int = 1,
    sequence_parallel: bool = False,
    global_batch_size: int = 1024,
    micro_batch_size: int = 1,
    train_iters: int = 500_000,
    lr: float = 3e-4,
    data_path: Optional[list[str]] = None,
    tokenizer_model: Optional[str] = None,
    precision: Optional[str] = "bf16_mixed",
    save: Optional[str] = None,
) -> ConfigContainer:
    """Qwen3 8B: 36 layers, 4096 hidden, 32 heads / 8 KV heads of dim 128, SwiGLU 12288, QK-norm.

    Layout: TP=2 leaves DP=4 on 8 GPUs. Batch: 1024 x 4096 = 4,194,304 tokens = DP 4 x
    micro-batch 1 x 256 micro-batches. Tokenizer: e.g. ``tokenizer_model="Qwen/Qwen3-8B"``.
    """
    model = swiglu_decoder(
        num_layers=36, hidden_size=4096, ffn_hidden_size=12288,
        num_attention_heads=32, num_query_groups=8,
        vocab_size=QWEN3_VOCAB_SIZE, seq_length=seq_length,
        rotary_base=1_000_000, layernorm_epsilon=1e-6,
        kv_channels=128,  # head_dim is its own setting in Qwen3 (here equal to 4096 / 32)
        qk_layernorm=True,  # RMSNorm over each head's 128 dims of Q and K, before RoPE
        **parallelism(tensor_parallel, pipeline_parallel, context_parallel, None, sequence_parallel),
    )
    return pretrain_container(
        model,
        global_batch_size=global_batch_size,
        micro_batch_size=micro_batch_size,
        train_iters=train_iters,
        lr=lr,
        warmup_iters=2000,
        data_path=data_path,
        tokenizer=tokenizer_for(tokenizer_model),
        precision=precision,
        save=save,
        distributed_optimizer=True,
    )


@documented_world_size(16)
def qwen3_30b_a3b(
    *,
    seq_length: int = 4096,
    tensor_parallel: int = 1,
    pipeline_parallel: int = 2,
    expert_parallel: int = 8,
    context_parallel: int = 1,
    sequence_parallel: bool = False,
    global_batch_size: int = 1024,
    micro_batch_size: int = 1,
    train_iters: int = 500_000,
    lr: float = 3e-4,
    data_path: Optional[list[str]] = None,
    tokenizer_model: Optional[str] = None,
    precision: Optional[str] = "bf16_mixed",
    save: Optional[str] = None,
) -> ConfigContainer:
    """Qwen3 30B-A3B: 48 layers, 2048 hidden, 32 heads / 4 KV heads, 128 experts of 768 (top 8).

    Layout: EP=8 x PP=2 on 16 GPUs (two 8-GPU nodes, one pipeline stage each). A stage holds 24
    layers; each GPU holds 16 of the 128 experts of each of them (24 x 16 x 4.7M = 1.81B
    parameters) plus 0.45B attention and the 311M embedding or output layer: ~2.6B. DP = 16 /
    (TP 1 x PP 2) = 8, expert-DP = 16 / (EP 8 x PP 2) = 1. TP stays 1: megatron-core's MoE
    layer needs sequence parallel (Transformer Engine) with TP > 1. Batch: 1024 x 4096 =
    4,194,304 tokens = DP 8 x micro-batch 1 x 128 micro-batches.
    Tokenizer: e.g. ``tokenizer_model="Qwen/Qwen3-30B-A3B"``.
    """
    model = swiglu_decoder(
        num_layers=48, hidden_size=2048,
        ffn_hidden_size=6144,  # config.json's dense intermediate_size; unused, as every layer is MoE
        num_attention_heads=32, num_query_groups=4,
        vocab_size=QWEN3_VOCAB_SIZE, seq_length=seq_length,
        rotary_base=1_000_000, layernorm_epsilon=1e-6,
        kv_channels=128,  # head_dim 128 with 32 heads: the attention width (4096) exceeds hidden (2048)
        qk_layernorm=True,
        **moe_fields(num_experts=128, topk=8, expert_ffn_hidden_size=768, aux_loss_coeff=0.001),
        **parallelism(tensor_parallel, pipeline_parallel, context_parallel, None, sequence_parallel,
                      expert_parallel),
    )
    return pretrain_container(
        model,
        global_batch_size=global_batch_size,
        micro_batch_size=micro_batch_size,
        train_iters=train_iters,
        lr=lr,
        warmup_iters=2000,
        data_path=data_path,
        tokenizer=tokenizer_for(tokenizer_model),
        precision=precision,
        save=save,
        distributed_optimizer=True,
    )
