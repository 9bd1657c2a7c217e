"""Mistral recipes: Mistral 7B (v0.3, the current base release) and Mixtral 8x7B (v0.1).

Architecture of mistralai/Mistral-7B-v0.3 (HuggingFace ``config.json``): 32 layers, hidden
4096, 32 heads / 8 KV heads (head dim 128), SwiGLU 14336, RMSNorm eps 1e-5, RoPE base
1,000,000, no sliding window, vocabulary 32,768 (unpadded), untied output layer. v0.1 differed
only in its 32,000-token vocabulary, RoPE base 10,000 and a 4096-token sliding window.

mistralai/Mixtral-8x7B-v0.1 (``config.json``) is Mistral 7B v0.1's decoder without the sliding
window and with RoPE base 1,000,000, whose MLP is a mixture of 8 SwiGLU experts of width 14336,
2 per token (``num_local_experts`` 8, ``num_experts_per_tok`` 2, ``router_aux_loss_coef``
0.02): 46,702,792,704 parameters, 12,879,925,248 of them active per token.

Mistral published no pretraining hyperparameters; the optimizer settings follow Llama 2 7B
(lr 3e-4, warmup 2000, cosine to 10%, beta2 0.95, weight decay 0.1).
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

__all__ = ["mistral_7b", "mixtral_8x7b"]

MISTRAL_V3_VOCAB_SIZE = 32768  # v0.3 extended the 32,000 SentencePiece vocabulary to 2**15
MIXTRAL_VOCAB_SIZE = 32000  # v0.1's SentencePiece vocabulary


@documented_world_size(8)
def mistral_7b(
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
    """Mistral 7B v0.3: 32 layers, 4096 hidden, 32 heads / 8 KV heads, SwiGLU 14336, RoPE 1M.

    Layout: TP=2 on one 8-GPU node leaves DP=4. Batch: 1024 x 4096 = 4,194,304 tokens =
    DP 4 x micro-batch 1 x 256 micro-batches; 500k steps = 2.1T tokens.
    Tokenizer: e.g. ``tokenizer_model="mistralai/Mistral-7B-v0.3"``.
    """
    model = swiglu_decoder(
        num_layers=32, hidden_size=4096, ffn_hidden_size=14336,
        num_attention_heads=32, num_query_groups=8,
        vocab_size=MISTRAL_V3_VOCAB_SIZE, seq_length=seq_length,
        rotary_base=1_000_000, layernorm_epsilon=1e-5,
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


@documented_world_size(32)
def mixtral_8x7b(
    *,
    seq_length: int = 4096,
    tensor_parallel: int = 1,
    pipeline_parallel: int = 4,
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
    """Mixtral 8x7B v0.1: 32 layers, 4096 hidden, 32 heads / 8 KV heads, 8 SwiGLU experts (top 2).

    Layout: EP=8 x PP=4 on 32 GPUs. Each pipeline stage holds 8 layers; its 8 experts per layer
    are spread over the stage's 8 data-parallel ranks (one expert each, 176M parameters per
    layer), so a GPU holds ~1.9B parameters: 1.41B of experts + 0.34B attention + the 131M
    embedding or output layer. DP = 32 / (TP 1 x PP 4) = 8; each expert has one copy (expert-DP
    = 32 / (EP 8 x PP 4) = 1). TP stays 1: megatron-core's MoE layer needs sequence parallel
    (Transformer Engine) with TP > 1. Batch: 1024 x 4096 = 4,194,304 tokens = DP 8 x micro-batch
    1 x 128 micro-batches. Mistral published no training settings; these follow Mistral 7B.
    Tokenizer: e.g. ``tokenizer_model="mistralai/Mixtral-8x7B-v0.1"``.
    """
    model = swiglu_decoder(
        num_layers=32, hidden_size=4096, ffn_hidden_size=14336,
        num_attention_heads=32, num_query_groups=8,
        vocab_size=MIXTRAL_VOCAB_SIZE, seq_length=seq_length,
        rotary_base=1_000_000, layernorm_epsilon=1e-5,
        **moe_fields(num_experts=8, topk=2, expert_ffn_hidden_size=14336, aux_loss_coeff=0.02),
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
