"""T5 recipe: T5-Base, the ~220M encoder-decoder of Raffel et al. 2020 (JMLR, Section 3.1.1
and Table 14: "Base", 12 + 12 layers, d_model 768, d_ff 3072, 12 heads of d_kv 64).

Architecture of the released t5-base checkpoint (HuggingFace google-t5/t5-base
``config.json``): RMS layer norm without bias (eps 1e-6), ReLU MLP, no biases in any linear
layer, relative position bias in self-attention (32 buckets, max distance 128, one table per
stack), SentencePiece vocabulary of 32,128 (unpadded), input embedding shared by encoder,
decoder and LM head. Released total: 222,903,552 parameters.

Differences that megatron-core's T5Model imposes, stated rather than hidden:

* its LM head has an output bias when the embedding is tied (one value per token): +32,128
  parameters, so the count is 222,935,680;
* attention scores are scaled by 1/sqrt(d_kv) (T5 folds that scale into its initialization);
* on machines without Transformer Engine the relative bias runs through this project's
  local attention (``config/models/t5_local.py``), the same post-scale bias TE applies.

Training: the paper pretrains 2**19 = 524,288 steps of 128 sequences x 512 tokens (2**16
tokens per batch, ~34B tokens) with Adafactor; here Adam with warmup and cosine decay.
Inputs are 512 tokens, targets 114 after span corruption (the decoder here is given 128).
Data: megatron-core's T5 span-corruption dataset (``--dataset=t5``) over sentence-split
indexed files (``scripts/preprocess_data.py --split-sentences``), mock sentences without a
data path; the tokenizer carries 100 sentinels (``--tokenizer.vocab_extra_ids``).
"""

from __future__ import annotations

from typing import Optional

from megatron_bridge_cli.config import ConfigContainer, T5DatasetConfig, T5ModelProvider
from megatron_bridge_cli.recipes.common import (
    documented_world_size,
    parallelism,
    pretrain_container,
    tokenizer_for,
)

__all__ = ["t5_220m"]

T5_VOCAB_SIZE = 32128  # 32,000 SentencePiece pieces + 100 sentinel ids, rounded to 128 by Google


@documented_world_size(8)
def t5_220m(
    *,
    encoder_seq_length: int = 512,
    decoder_seq_length: int = 128,
    tensor_parallel: int = 1,
    global_batch_size: int = 128,
    micro_batch_size: int = 16,
    train_iters: int = 524_288,
    lr: float = 1e-4,
    data_path: Optional[list[str]] = None,
    tokenizer_model: Optional[str] = None,
    precision: Optional[str] = "bf16_mixed",
    save: Optional[str] = None,
) -> ConfigContainer:
    """T5-Base (220M): 12 encoder + 12 decoder layers, 768 hidden, 12 heads, ReLU 3072.

    Layout: data parallel only (the model fits on any GPU; T5Model is not pipeline-split
    here). Batch: 128 x 512 input tokens = 65,536 tokens (the paper's 2**16) = DP 8 x
    micro-batch 16 x 1 micro-batch. Tokenizer: e.g. ``tokenizer_model="google-t5/t5-base"``.
    """
    import torch.nn.functional as F

    model = T5ModelProvider(
        num_layers=12,  # decoder depth
        encoder_num_layers=12,
        hidden_size=768,
        num_attention_heads=12,
        kv_channels=64,
        ffn_hidden_size=3072,
        seq_length=decoder_seq_length,
        encoder_seq_length=encoder_seq_length,
        vocab_size=T5_VOCAB_SIZE,
        should_pad_vocab=False,
        normalization="RMSNorm",
        layernorm_epsilon=1e-6,
        activation_func=F.relu,
        gated_linear_unit=False,
        add_bias_linear=False,
        position_embedding_type="relative",
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        share_embeddings_and_output_weights=True,
        hidden_dropout=0.1,
        attention_dropout=0.1,
        **parallelism(tensor_parallel),
    )
    cfg = pretrain_container(
        model,
        global_batch_size=global_batch_size,
        micro_batch_size=micro_batch_size,
        train_iters=train_iters,
        lr=lr,
        warmup_iters=10_000,  # the paper's 10**4 warmup steps
        weight_decay=0.01,
        adam_beta2=0.999,
        data_path=data_path,
        tokenizer=tokenizer_for(tokenizer_model),
        precision=precision,
        save=save,
    )
    # Span corruption (the paper's objective): 15% of the input in spans of mean length 3
    # (here megatron-core's geometric spans), each replaced by one of 100 sentinel tokens.
    cfg.dataset = T5DatasetConfig(data_path=data_path)
    cfg.tokenizer.vocab_extra_ids = 100
    return cfg
