"""GPT recipes: the small CPU default and two GPT-3 sizes.

GPT-3 (Brown et al. 2020, "Language Models are Few-Shot Learners", Table 2.1): pre-LayerNorm
decoder, learned absolute position embeddings over a 2048-token context, GELU MLP of 4 x hidden,
biases everywhere, input embedding tied to the output layer, GPT-2 BPE vocabulary of 50,257.
Its optimizer (Section 2.3 / Appendix B): Adam beta1 0.9, beta2 0.95, eps 1e-8, gradient
clipping 1.0, weight decay 0.1, linear warmup over the first 375M tokens, cosine decay to 10%
of the peak, 300B training tokens.
"""

from __future__ import annotations

from typing import Optional

from megatron_bridge_cli.config import ConfigContainer, GPTModelProvider, TokenizerConfig
from megatron_bridge_cli.recipes.common import (
    documented_world_size,
    parallelism,
    pretrain_container,
    tokenizer_for,
)

__all__ = ["gpt_cpu_tiny", "gpt3_126m", "gpt3_175b"]

GPT2_VOCAB_SIZE = 50257
"""GPT-2 BPE vocabulary (50,000 merges + 256 bytes + end-of-text), used by GPT-3."""


@documented_world_size(2)  # `make demo` runs it as 2 CPU processes
def gpt_cpu_tiny(
    seq_length: int = 128,
    num_layers: int = 4,
    hidden_size: int = 128,
    tensor_parallel: int = 1,
    pipeline_parallel: int = 1,
    global_batch_size: int = 16,
    micro_batch_size: int = 4,
    train_iters: int = 200,
    data_path: Optional[list[str]] = None,
) -> ConfigContainer:
    """Small GPT (4 layers, 128 hidden, ~1.1M parameters) that trains on CPU in minutes.

    Byte-level tokenizer (257 ids, padded to 384), so any UTF-8 text works as data without
    tokenizer files. Batch: 16 samples x 128 tokens = 2,048 tokens per step.
    """
    model = GPTModelProvider(
        num_layers=num_layers,
        hidden_size=hidden_size,
        num_attention_heads=4,
        ffn_hidden_size=4 * hidden_size,
        seq_length=seq_length,
        position_embedding_type="rope",
        normalization="RMSNorm",
        activation_func=_silu(),
        gated_linear_unit=True,
        add_bias_linear=False,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        share_embeddings_and_output_weights=True,
        tensor_model_parallel_size=tensor_parallel,
        pipeline_model_parallel_size=pipeline_parallel,
        layer_spec="local",
    )
    cfg = pretrain_container(
        model,
        global_batch_size=global_batch_size,
        micro_batch_size=micro_batch_size,
        train_iters=train_iters,
        lr=3e-3,
        warmup_iters=20,
        weight_decay=0.01,
        data_path=data_path,
        tokenizer=TokenizerConfig(tokenizer_type="ByteLevelTokenizer"),
        eval_interval=40,  # `make demo` (120 iterations): validation at 40, 80, 120
        eval_iters=4,
        log_interval=10,
    )
    # The demo corpus (Python's stdlib, ~160 files = documents) is small: 969,30,1 would give the
    # test split no whole document. Batches are cheap to read: no DataLoader worker processes on
    # a 2-core machine.
    cfg.dataset.split = "90,5,5"
    cfg.dataset.num_workers = 0
    return cfg


def _gpt3(
    *,
    num_layers: int,
    hidden_size: int,
    num_attention_heads: int,
    seq_length: int,
    init_method_std: float,
    layout: dict,
) -> GPTModelProvider:
    """A GPT-3 model of the given size (head dim = hidden / heads; FFN = 4 x hidden)."""
    import torch.nn.functional as F

    return GPTModelProvider(
        num_layers=num_layers,
        hidden_size=hidden_size,
        num_attention_heads=num_attention_heads,
        ffn_hidden_size=4 * hidden_size,
        seq_length=seq_length,
        vocab_size=GPT2_VOCAB_SIZE,
        # No released weights to stay compatible with: pad 50,257 to a multiple of 128 x TP
        # (Megatron's default) so the embedding GEMMs get aligned shapes: 50,304 rows at TP=1.
        make_vocab_size_divisible_by=128,
        normalization="LayerNorm",
        layernorm_epsilon=1e-5,
        activation_func=F.gelu,
        gated_linear_unit=False,
        add_bias_linear=True,
        position_embedding_type="learned_absolute",
        share_embeddings_and_output_weights=True,
        hidden_dropout=0.1,
        attention_dropout=0.1,
        init_method_std=init_method_std,
        **layout,
    )


@documented_world_size(8)
def gpt3_126m(
    *,
    seq_length: int = 2048,
    tensor_parallel: int = 1,
    pipeline_parallel: int = 1,
    context_parallel: int = 1,
    global_batch_size: int = 256,
    micro_batch_size: int = 4,
    train_iters: int = 572_205,
    lr: float = 6e-4,
    data_path: Optional[list[str]] = None,
    tokenizer_model: Optional[str] = None,
    precision: Optional[str] = "bf16_mixed",
    save: Optional[str] = None,
) -> ConfigContainer:
    """GPT-3 Small (125M in the paper): 12 layers, 768 hidden, 12 heads, 2048 context.

    Batch: 256 samples x 2048 tokens = 524,288 tokens (the paper's 0.5M) per step; on 8 GPUs
    that is DP=8 x micro-batch 4 x 8 micro-batches. 300B tokens / 524,288 = 572,205 steps.
    Warmup 375M tokens / 524,288 = 715 steps. Peak lr 6e-4 (paper, Table 2.1).
    Tokenizer: e.g. ``tokenizer_model="openai-community/gpt2"`` (the GPT-2 BPE GPT-3 used).
    """
    model = _gpt3(
        num_layers=12, hidden_size=768, num_attention_heads=12, seq_length=seq_length,
        init_method_std=0.02,
        layout=parallelism(tensor_parallel, pipeline_parallel, context_parallel),
    )
    return pretrain_container(
        model,
        global_batch_size=global_batch_size,
        micro_batch_size=micro_batch_size,
        train_iters=train_iters,
        lr=lr,
        warmup_iters=715,
        data_path=data_path,
        tokenizer=tokenizer_for(tokenizer_model),
        precision=precision,
        save=save,
    )


@documented_world_size(128)
def gpt3_175b(
    *,
    seq_length: int = 2048,
    tensor_parallel: int = 8,
    pipeline_parallel: int = 8,
    context_parallel: int = 1,
    virtual_pipeline_parallel: Optional[int] = None,
    sequence_parallel: bool = False,
    global_batch_size: int = 1536,
    micro_batch_size: int = 1,
    train_iters: int = 95_367,
    lr: float = 0.6e-4,
    data_path: Optional[list[str]] = None,
    tokenizer_model: Optional[str] = None,
    precision: Optional[str] = "bf16_mixed",
    save: Optional[str] = None,
) -> ConfigContainer:
    """GPT-3 175B: 96 layers, 12288 hidden, 96 heads, 2048 context; TP=8 x PP=8 per replica.

    Layout: 64 GPUs hold one replica (12 layers per pipeline stage, ~2.7B parameters per GPU);
    128 GPUs give DP=2 with the distributed optimizer sharding Adam state over both replicas.
    Batch: 1536 x 2048 = 3,145,728 tokens (the paper's 3.2M) per step, 768 micro-batches per
    replica at DP=2. 300B tokens / 3,145,728 = 95,367 steps; warmup 375M / 3.1M = 119 steps.
    Init std 0.006 (about sqrt(1 / (3 x 12288)), the value Megatron-LM uses for this size).
    """
    model = _gpt3(
        num_layers=96, hidden_size=12288, num_attention_heads=96, seq_length=seq_length,
        init_method_std=0.006,
        layout=parallelism(tensor_parallel, pipeline_parallel, context_parallel,
                           virtual_pipeline_parallel, sequence_parallel),
    )
    return pretrain_container(
        model,
        global_batch_size=global_batch_size,
        micro_batch_size=micro_batch_size,
        train_iters=train_iters,
        lr=lr,
        warmup_iters=119,
        data_path=data_path,
        tokenizer=tokenizer_for(tokenizer_model),
        precision=precision,
        save=save,
        distributed_optimizer=True,
    )


def _silu():
    import torch.nn.functional as F

    return F.silu
