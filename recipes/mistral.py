"""Mistral recipe: Mistral 7B (v0.3, the current base release).

Architecture of mistralai/Mistral-7B-v0.3 (HuggingFace ``config.json``): 32 layers, hidden
4096, 32 heads / 8 KV heads (head dim 128), SwiGLU 14336, RMSNorm eps 1e-5, RoPE base
1,000,000, no sliding window, vocabulary 32,768 (unpadded), untied output layer. v0.1 differed
only in its 32,000-token vocabulary, RoPE base 10,000 and a 4096-token sliding window.

Mistral published no pretraining hyperparameters; the optimizer settings follow Llama 2 7B
(lr 3e-4, warmup 2000, cosine to 10%, beta2 0.95, weight decay 0.1).
"""

from __future__ import annotations

from typing import Optional

from megatron_bridge_cli.config import ConfigContainer
from megatron_bridge_cli.recipes.common import (
    documented_world_size,
    parallelism,
    pretrain_container,
    swiglu_decoder,
    tokenizer_for,
)

__all__ = ["mistral_7b"]

MISTRAL_V3_VOCAB_SIZE = 32768  # v0.3 extended the 32,000 SentencePiece vocabulary to 2**15


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
