"""GPT-style recipes: the small CPU default (and, later, GPT-3 sizes)."""

from __future__ import annotations

from typing import Optional

from megatron_bridge_cli.config import ConfigContainer, GPTModelProvider, TokenizerConfig
from megatron_bridge_cli.recipes.common import pretrain_container

__all__ = ["gpt_cpu_tiny"]


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
    """Small GPT (4 layers, 128 hidden, ~0.9M parameters) that trains on CPU in minutes.

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
    return pretrain_container(
        model,
        global_batch_size=global_batch_size,
        micro_batch_size=micro_batch_size,
        train_iters=train_iters,
        lr=3e-3,
        warmup_iters=20,
        weight_decay=0.01,
        data_path=data_path,
        tokenizer=TokenizerConfig(tokenizer_type="ByteLevelTokenizer"),
        eval_interval=50,
        eval_iters=4,
        log_interval=10,
    )


def _silu():
    import torch.nn.functional as F

    return F.silu
