"""Parts every pretraining recipe shares, so recipes state only what is specific to them.

* :func:`pretrain_container` wraps a model in the usual pretraining setup (Adam, cosine decay
  after warmup, mock data unless a data path is given, evaluation, checkpoints, precision).
* :func:`parallelism` turns the per-run layout keywords into model-provider fields.
* :func:`moe_fields` sets up a Mixtral/Qwen-style mixture-of-experts MLP.
* :func:`swiglu_decoder` builds the Llama-style decoder that Llama, Mistral and Qwen share
  (pre-RMSNorm, SwiGLU MLP, RoPE, no linear biases, untied output layer).
* :func:`tokenizer_for` picks a HuggingFace tokenizer when one is named, else ids as given.
* :func:`documented_world_size` records the GPU count a recipe's default layout is meant for.
"""

from __future__ import annotations

from typing import Callable, Optional, TypeVar

from megatron_bridge_cli.config import (
    MIXED_PRECISION_PRESETS,
    CheckpointConfig,
    ConfigContainer,
    DistributedDataParallelConfig,
    GPTDatasetConfig,
    GPTModelProvider,
    LoggerConfig,
    OptimizerConfig,
    SchedulerConfig,
    TokenizerConfig,
    TrainingConfig,
)
from megatron_bridge_cli.config.models import ModelProviderBase

__all__ = [
    "documented_world_size", "moe_fields", "parallelism", "pretrain_container", "swiglu_decoder", "tokenizer_for",
]

F = TypeVar("F", bound=Callable[..., ConfigContainer])


def documented_world_size(world_size: int) -> Callable[[F], F]:
    """Decorator: the GPU count the recipe's default layout is written for.

    Stored as ``recipe.documented_world_size``; the recipe's defaults pass finalize() at that
    world size (tests check it) and the README's recipe table lists it.
    """

    def mark(fn: F) -> F:
        fn.documented_world_size = world_size  # type: ignore[attr-defined]
        return fn

    return mark


def parallelism(
    tensor_parallel: int = 1,
    pipeline_parallel: int = 1,
    context_parallel: int = 1,
    virtual_pipeline_parallel: Optional[int] = None,
    sequence_parallel: bool = False,
    expert_parallel: int = 1,
) -> dict:
    """Model-provider fields for a TP x PP x CP layout (data parallel takes the remaining GPUs).

    Sequence parallel is off unless asked for: it needs Transformer Engine norms, so a recipe
    that turned it on would not validate on machines without TE (CPU CI, laptops). Turn it on
    for TP > 1 runs on GPU clusters with ``--model.sequence_parallel=true``.
    ``expert_parallel`` (EP) splits the routed experts of MoE layers over the data-parallel
    ranks of each pipeline stage; it needs a world size divisible by EP x TP x PP.
    """
    fields = dict(
        tensor_model_parallel_size=tensor_parallel,
        pipeline_model_parallel_size=pipeline_parallel,
        context_parallel_size=context_parallel,
        virtual_pipeline_model_parallel_size=virtual_pipeline_parallel,
        sequence_parallel=sequence_parallel,
    )
    if expert_parallel != 1:
        fields["expert_model_parallel_size"] = expert_parallel
    return fields


def moe_fields(
    *,
    num_experts: int,
    topk: int,
    expert_ffn_hidden_size: int,
    aux_loss_coeff: float,
    shared_expert_ffn_hidden_size: Optional[int] = None,
) -> dict:
    """Model-provider fields of a token-choice MoE MLP with a softmax router, as in Mixtral and
    Qwen-MoE (HF ``norm_topk_prob``: the k chosen weights are renormalized to sum to 1, which is
    megatron-core's softmax over the top-k logits, ``moe_router_pre_softmax=False``).

    Load balancing: the Switch-Transformer auxiliary loss with the released coefficient. Tokens
    go through the alltoall dispatcher (the one for expert parallelism; it also runs over gloo)
    with no capacity limit (dropless). Grouped GEMM is on: Transformer Engine's TEGroupedMLP
    on GPUs; where no grouped GEMM exists (CPU) finalize falls back to SequentialMLP, which
    holds the same parameters. The router computes in fp32.
    """
    return dict(
        num_moe_experts=num_experts,
        moe_router_topk=topk,
        moe_ffn_hidden_size=expert_ffn_hidden_size,
        moe_shared_expert_intermediate_size=shared_expert_ffn_hidden_size,
        moe_router_score_function="softmax",
        moe_router_pre_softmax=False,
        moe_router_load_balancing_type="aux_loss",
        moe_aux_loss_coeff=aux_loss_coeff,
        moe_router_dtype="fp32",
        moe_token_dispatcher_type="alltoall",
        moe_grouped_gemm=True,
    )


def swiglu_decoder(
    *,
    num_layers: int,
    hidden_size: int,
    ffn_hidden_size: int,
    num_attention_heads: int,
    num_query_groups: int,
    vocab_size: int,
    seq_length: int,
    rotary_base: int,
    layernorm_epsilon: float,
    **overrides,
) -> GPTModelProvider:
    """A Llama-style decoder: pre-RMSNorm, SwiGLU MLP (three weight matrices), rotary position
    embeddings on full head dims, no biases, no dropout, untied input and output embeddings.

    The vocabulary is kept exactly as given (``should_pad_vocab=False``): released checkpoints
    of these families have unpadded embedding tables, and their sizes are multiples of 8, so
    tensor parallelism up to 8 splits them evenly.
    """
    import torch.nn.functional as F_

    fields = dict(
        num_layers=num_layers,
        hidden_size=hidden_size,
        ffn_hidden_size=ffn_hidden_size,
        num_attention_heads=num_attention_heads,
        num_query_groups=num_query_groups,
        vocab_size=vocab_size,
        should_pad_vocab=False,
        seq_length=seq_length,
        normalization="RMSNorm",
        layernorm_epsilon=layernorm_epsilon,
        activation_func=F_.silu,
        gated_linear_unit=True,
        add_bias_linear=False,
        position_embedding_type="rope",
        rotary_base=rotary_base,
        share_embeddings_and_output_weights=False,
        hidden_dropout=0.0,
        attention_dropout=0.0,
    )
    fields.update(overrides)
    return GPTModelProvider(**fields)


def tokenizer_for(tokenizer_model: Optional[str]) -> TokenizerConfig:
    """HuggingFace tokenizer ``tokenizer_model`` (a hub name or a local folder), or, when None,
    NullTokenizer: data is already token ids (preprocessed or mock) and the vocabulary size
    comes from the model."""
    if tokenizer_model is None:
        return TokenizerConfig(tokenizer_type="NullTokenizer")
    return TokenizerConfig(tokenizer_type="HuggingFaceTokenizer", tokenizer_model=tokenizer_model)


def pretrain_container(
    model: ModelProviderBase,
    *,
    global_batch_size: int,
    micro_batch_size: int,
    train_iters: int,
    lr: float,
    min_lr: Optional[float] = None,
    warmup_iters: int = 2000,
    weight_decay: float = 0.1,
    adam_beta2: float = 0.95,
    adam_eps: float = 1e-8,
    data_path: Optional[list[str]] = None,
    tokenizer: Optional[TokenizerConfig] = None,
    eval_interval: int = 2000,
    eval_iters: int = 32,
    log_interval: int = 10,
    save: Optional[str] = None,
    save_interval: int = 2000,
    precision: Optional[str] = None,
    distributed_optimizer: bool = False,
) -> ConfigContainer:
    """A ConfigContainer with the usual pretraining setup around ``model``: Adam
    (beta2 0.95, clip 1.0), cosine decay to min_lr (default lr/10) after linear warmup,
    mock data unless data_path is given, periodic evaluation and checkpoints.

    ``precision`` names a mixed-precision preset (``"bf16_mixed"``, ...; see
    ``--mixed_precision``); None trains in fp32. ``distributed_optimizer`` shards optimizer
    state over data-parallel ranks (set on both the optimizer and DDP, which must agree).
    """
    if precision is not None and precision not in MIXED_PRECISION_PRESETS:
        raise ValueError(f"unknown precision {precision!r}; choose from {sorted(MIXED_PRECISION_PRESETS)}")
    return ConfigContainer(
        model=model,
        train=TrainingConfig(
            global_batch_size=global_batch_size,
            micro_batch_size=micro_batch_size,
            train_iters=train_iters,
            eval_interval=eval_interval,
            eval_iters=eval_iters,
        ),
        optimizer=OptimizerConfig(
            optimizer="adam",
            lr=lr,
            min_lr=lr / 10 if min_lr is None else min_lr,
            weight_decay=weight_decay,
            adam_beta1=0.9,
            adam_beta2=adam_beta2,
            adam_eps=adam_eps,
            clip_grad=1.0,
            use_distributed_optimizer=distributed_optimizer,
        ),
        scheduler=SchedulerConfig(lr_decay_style="cosine", lr_warmup_iters=warmup_iters),
        dataset=GPTDatasetConfig(data_path=data_path),
        logger=LoggerConfig(log_interval=log_interval),
        tokenizer=tokenizer or TokenizerConfig(),
        checkpoint=CheckpointConfig(save=save, save_interval=save_interval if save else None),
        ddp=DistributedDataParallelConfig(use_distributed_optimizer=distributed_optimizer),
        mixed_precision=MIXED_PRECISION_PRESETS[precision]() if precision else None,
    )
