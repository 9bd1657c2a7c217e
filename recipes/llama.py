"""Llama recipes: Llama 2 7B, Llama 3 8B and 70B, Llama 3.1 405B.

Architectures are those of the released checkpoints (HuggingFace ``config.json`` of
meta-llama/Llama-2-7b-hf, Meta-Llama-3-8B, Meta-Llama-3-70B, Llama-3.1-405B): pre-RMSNorm
(eps 1e-5), SwiGLU MLP, rotary embeddings, no biases, untied output layer, grouped-query
attention with 8 KV heads from Llama 3 on. Vocabularies are unpadded (32,000 and 128,256
rows), as in the released embedding tables, so parameter counts equal the released ones.

Training settings follow the papers: Llama 2 (Touvron et al. 2023, Section 2.2: AdamW
beta2 0.95, eps 1e-5, weight decay 0.1, clip 1.0, 2000 warmup steps, cosine to 10% of peak,
4M-token batches, lr 3e-4 for 7B, 2T tokens) and "The Llama 3 Herd of Models" (Dubey et al.
2024, Section 3.4.1: 405B peak lr 8e-5, 8000 warmup steps, cosine to 8e-7 over 1.2M steps,
8M-token batches of 8192-token sequences; 15T+ tokens).
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

__all__ = ["llama2_7b", "llama3_8b", "llama3_70b", "llama31_405b"]

LLAMA2_VOCAB_SIZE = 32000  # SentencePiece BPE
LLAMA3_VOCAB_SIZE = 128256  # tiktoken BPE: 128,000 regular + 256 special tokens
LLAMA3_ROPE_BASE = 500_000
LLAMA3_TOKENS = 15_000_000_000_000  # "15T+" pretraining tokens (Llama 3 model card)


@documented_world_size(8)
def llama2_7b(
    *,
    seq_length: int = 4096,
    tensor_parallel: int = 2,
    pipeline_parallel: int = 1,
    context_parallel: int = 1,
    sequence_parallel: bool = False,
    global_batch_size: int = 1024,
    micro_batch_size: int = 1,
    train_iters: int = 476_837,
    lr: float = 3e-4,
    data_path: Optional[list[str]] = None,
    tokenizer_model: Optional[str] = None,
    precision: Optional[str] = "bf16_mixed",
    save: Optional[str] = None,
) -> ConfigContainer:
    """Llama 2 7B: 32 layers, 4096 hidden, 32 heads (no GQA), SwiGLU 11008, 4096 context.

    Layout: TP=2 on one 8-GPU node leaves DP=4. Batch: 1024 x 4096 = 4,194,304 tokens (the
    paper's 4M) = DP 4 x micro-batch 1 x 256 micro-batches. 2T tokens / 4,194,304 = 476,837
    steps. Tokenizer: e.g. ``tokenizer_model="meta-llama/Llama-2-7b-hf"``.
    """
    model = swiglu_decoder(
        num_layers=32, hidden_size=4096, ffn_hidden_size=11008,
        num_attention_heads=32, num_query_groups=32,
        vocab_size=LLAMA2_VOCAB_SIZE, seq_length=seq_length,
        rotary_base=10_000, layernorm_epsilon=1e-5,
        **parallelism(tensor_parallel, pipeline_parallel, context_parallel, None, sequence_parallel),
    )
    return pretrain_container(
        model,
        global_batch_size=global_batch_size,
        micro_batch_size=micro_batch_size,
        train_iters=train_iters,
        lr=lr,
        warmup_iters=2000,
        adam_eps=1e-5,
        data_path=data_path,
        tokenizer=tokenizer_for(tokenizer_model),
        precision=precision,
        save=save,
        distributed_optimizer=True,
    )


@documented_world_size(8)
def llama3_8b(
    *,
    seq_length: int = 8192,
    tensor_parallel: int = 2,
    pipeline_parallel: int = 1,
    context_parallel: int = 1,
    sequence_parallel: bool = False,
    global_batch_size: int = 512,
    micro_batch_size: int = 1,
    train_iters: int = LLAMA3_TOKENS // (512 * 8192),
    lr: float = 3e-4,
    data_path: Optional[list[str]] = None,
    tokenizer_model: Optional[str] = None,
    precision: Optional[str] = "bf16_mixed",
    save: Optional[str] = None,
) -> ConfigContainer:
    """Llama 3 8B: 32 layers, 4096 hidden, 32 heads / 8 KV heads, SwiGLU 14336, RoPE 500k.

    Layout: TP=2 on one 8-GPU node leaves DP=4. Batch: 512 x 8192 = 4,194,304 tokens =
    DP 4 x micro-batch 1 x 128 micro-batches; 15T tokens / 4,194,304 = 3,576,278 steps.
    Tokenizer: e.g. ``tokenizer_model="meta-llama/Meta-Llama-3-8B"``.
    """
    model = swiglu_decoder(
        num_layers=32, hidden_size=4096, ffn_hidden_size=14336,
        num_attention_heads=32, num_query_groups=8,
        vocab_size=LLAMA3_VOCAB_SIZE, seq_length=seq_length,
        rotary_base=LLAMA3_ROPE_BASE, layernorm_epsilon=1e-5,
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


@documented_world_size(64)
def llama3_70b(
    *,
    seq_length: int = 8192,
    tensor_parallel: int = 8,
    pipeline_parallel: int = 4,
    context_parallel: int = 1,
    virtual_pipeline_parallel: Optional[int] = None,
    sequence_parallel: bool = False,
    global_batch_size: int = 512,
    micro_batch_size: int = 1,
    train_iters: int = LLAMA3_TOKENS // (512 * 8192),
    lr: float = 1.5e-4,
    data_path: Optional[list[str]] = None,
    tokenizer_model: Optional[str] = None,
    precision: Optional[str] = "bf16_mixed",
    save: Optional[str] = None,
) -> ConfigContainer:
    """Llama 3 70B: 80 layers, 8192 hidden, 64 heads / 8 KV heads, SwiGLU 28672, RoPE 500k.

    Layout: TP=8 (one node) x PP=4 (20 layers per stage) = 32 GPUs per replica, ~2.2B
    parameters per GPU; 64 GPUs give DP=2 for the distributed optimizer. Batch: 512 x 8192 =
    4,194,304 tokens = DP 2 x micro-batch 1 x 256 micro-batches. Interleaving (e.g.
    ``virtual_pipeline_parallel=5``: 4 layers per chunk) shrinks the pipeline bubble.
    """
    model = swiglu_decoder(
        num_layers=80, hidden_size=8192, ffn_hidden_size=28672,
        num_attention_heads=64, num_query_groups=8,
        vocab_size=LLAMA3_VOCAB_SIZE, seq_length=seq_length,
        rotary_base=LLAMA3_ROPE_BASE, layernorm_epsilon=1e-5,
        **parallelism(tensor_parallel, pipeline_parallel, context_parallel,
                      virtual_pipeline_parallel, sequence_parallel),
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


@documented_world_size(512)
def llama31_405b(
    *,
    seq_length: int = 8192,
    tensor_parallel: int = 8,
    pipeline_parallel: int = 8,
    layers_in_first_stage: Optional[int] = 15,
    layers_in_last_stage: Optional[int] = 15,
    context_parallel: int = 1,
    sequence_parallel: bool = False,
    global_batch_size: int = 1024,
    micro_batch_size: int = 1,
    train_iters: int = 1_200_000,
    lr: float = 8e-5,
    data_path: Optional[list[str]] = None,
    tokenizer_model: Optional[str] = None,
    precision: Optional[str] = "bf16_mixed",
    save: Optional[str] = None,
) -> ConfigContainer:
    """Llama 3.1 405B: 126 layers, 16384 hidden, 128 heads / 8 KV heads, SwiGLU 53248, scaled RoPE.

    RoPE base 500k with Llama 3.1 frequency scaling (factor 8, low/high frequency factors 1
    and 4, original context 8192).

    Layout: TP=8 x PP=8 = 64 GPUs per replica. 126 layers do not split evenly over 8 stages,
    so the first and last stages, which also hold the 128256 x 16384 embedding and output
    layer (~263M parameters per GPU each), get 15 layers and the 6 middle stages 16:
    15 + 6 x 16 + 15 = 126. 512 GPUs give DP=8. Batch: 1024 x 8192 = 8,388,608 tokens (the
    paper's 8M stage) = DP 8 x micro-batch 1 x 128 micro-batches. Schedule: the paper's 8000
    warmup steps and cosine to 8e-7 over 1.2M steps.
    """
    model = swiglu_decoder(
        num_layers=126, hidden_size=16384, ffn_hidden_size=53248,
        num_attention_heads=128, num_query_groups=8,
        vocab_size=LLAMA3_VOCAB_SIZE, seq_length=seq_length,
        rotary_base=LLAMA3_ROPE_BASE, layernorm_epsilon=1e-5,
        # megatron-core's Llama 3.x scaling uses low_freq_factor 1, high_freq_factor 4 and
        # original_max_position_embeddings 8192, the values of the released config.json.
        rope_scaling=True, rope_scaling_factor=8.0,
        num_layers_in_first_pipeline_stage=layers_in_first_stage if pipeline_parallel > 1 else None,
        num_layers_in_last_pipeline_stage=layers_in_last_stage if pipeline_parallel > 1 else None,
        **parallelism(tensor_parallel, pipeline_parallel, context_parallel, None, sequence_parallel),
    )
    return pretrain_container(
        model,
        global_batch_size=global_batch_size,
        micro_batch_size=micro_batch_size,
        train_iters=train_iters,
        lr=lr,
        min_lr=8e-7,
        warmup_iters=8000,
        data_path=data_path,
        tokenizer=tokenizer_for(tokenizer_model),
        precision=precision,
        save=save,
        distributed_optimizer=True,
    )
