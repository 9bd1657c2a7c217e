"""Exact parameter counts of the model a config describes, without allocating it.

The model is built once with TP=PP=EP=1 on PyTorch's meta device (no memory, ~0.1 s even for
hundreds of billions of parameters) and its real megatron-core modules are counted. The
per-GPU shard follows from how megatron-core splits them: parameters marked
``tensor_model_parallel`` are divided by TP, the rest are replicated, and pipeline stage k
holds layers [k*L/PP, (k+1)*L/PP) plus the embedding (first stage) or the final norm and
output layer (last stage; with tied embeddings the last stage keeps its own copy). The routed
experts of an MoE layer (``layer.mlp.experts``) are divided by EP instead, and their
``tensor_model_parallel`` weights by the expert TP size (ETP, TP unless set).

Active parameters per token: a token passes through top-k of the E routed experts of each MoE
layer (all experts of a layer have the same shape) plus everything else (attention, router,
shared experts, dense layers, embeddings), so active = total - sum over MoE layers of
routed x (E - k) / E.
"""

from __future__ import annotations

import copy
import socket
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from megatron_bridge_cli.config.models import GPTModelProvider, ModelProviderBase
from megatron_bridge_cli.config.models.moe import grouped_gemm_backend

__all__ = ["ParameterCount", "count_parameters", "meta_model", "single_rank_parallel_state", "free_port"]


@dataclass(frozen=True)
class ParameterCount:
    """Parameter figures of one model configuration."""

    total: int
    """Unique parameters of the whole model (what building it with TP=PP=1 gives)."""

    per_gpu_max: int
    """Parameters on the fullest GPU under the configured TP/PP split."""

    embedding: int
    """Input embedding (and learned position embedding) parameters."""

    per_layer: int
    """Parameters of one transformer layer (the first one)."""

    head: int
    """Final norm plus untied output layer parameters."""

    active: int = 0
    """Parameters one token passes through: all but the routed experts it is not sent to
    (equal to total for dense models)."""

    routed_experts: int = 0
    """Parameters of all routed experts (0 for dense models)."""

    per_gpu_experts: int = 0
    """Routed-expert parameters on the fullest GPU (part of per_gpu_max): sharded by expert-DP,
    not DP, under the distributed optimizer."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def single_rank_parallel_state():
    """A one-rank gloo group with TP=PP=1 (CPU layer applied where CUDA is absent), unless the
    caller already has process groups."""
    from megatron.core import parallel_state

    from megatron_bridge_cli.training.cpu_compat import apply_cpu_compat

    apply_cpu_compat()
    own_group = not torch.distributed.is_initialized()
    if own_group:
        torch.distributed.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1
        )
    own_state = not parallel_state.model_parallel_is_initialized()
    if own_state:
        parallel_state.initialize_model_parallel(1, 1)
    try:
        yield
    finally:
        if own_state:
            parallel_state.destroy_model_parallel()
        if own_group:
            torch.distributed.destroy_process_group()


def _skip_init(tensor: torch.Tensor) -> torch.Tensor:
    """An init_method that leaves the (meta) tensor as it is."""
    return tensor


def _unsharded_copy(provider: ModelProviderBase) -> ModelProviderBase:
    """The same architecture as one TP=PP=1 meta-device model (vocab padded as configured)."""
    provider = copy.deepcopy(provider)
    padded_vocab = provider.resolved_vocab_size()  # padding depends on the real TP
    for name in ("tensor_model_parallel_size", "pipeline_model_parallel_size", "context_parallel_size",
                 "expert_model_parallel_size"):
        setattr(provider, name, 1)
    provider.expert_tensor_parallel_size = None
    if getattr(provider, "moe_grouped_gemm", False) and not grouped_gemm_backend(provider.use_transformer_engine()):
        provider.moe_grouped_gemm = False  # SequentialMLP holds the same parameters as a grouped GEMM
    provider.virtual_pipeline_model_parallel_size = None
    provider.num_layers_in_first_pipeline_stage = None
    provider.num_layers_in_last_pipeline_stage = None
    provider.sequence_parallel = False
    provider.perform_initialization = True  # megatron-core marks TP-split weights while initializing (a no-op on meta)
    # ... but drawing the (meta) values still dispatches a few dozen torch calls per weight:
    # ~10 s for the 12,288 expert weights of a 128-expert model. Values are not needed.
    provider.init_method = provider.output_layer_init_method = provider.embedding_init_method = _skip_init
    provider.use_cpu_initialization = True
    provider.init_model_with_meta_device = True
    provider.finalize()
    provider.padded_vocab_size = padded_vocab  # keep the TP-dependent padding of the real run
    return provider


@contextmanager
def meta_model(provider: ModelProviderBase):
    """Yield the whole model of ``provider`` built on the meta device (TP=PP=1)."""
    unsharded = _unsharded_copy(provider)
    with single_rank_parallel_state(), torch.device("meta"):
        yield unsharded.provide(pre_process=True, post_process=True)


def _numel(module, tp: int) -> tuple[int, int]:
    """(full count, count on one TP rank) of a module's parameters."""
    full = shard = 0
    for p in module.parameters():
        full += p.numel()
        shard += p.numel() // tp if getattr(p, "tensor_model_parallel", False) else p.numel()
    return full, shard


def _routed_experts(layer):
    """The routed experts of an MoE layer (SequentialMLP / TEGroupedMLP / GroupedMLP), else None."""
    mlp = getattr(layer, "mlp", None)
    return getattr(mlp, "experts", None) if hasattr(mlp, "router") else None


def _layer_shard(layer, tp: int, ep: int, etp: int) -> tuple[int, int]:
    """(parameters on one rank, of which routed experts) of a transformer layer."""
    experts = _routed_experts(layer)
    if experts is None:
        return _numel(layer, tp)[1], 0
    expert_shard = _numel(experts, etp)[1]
    rest = _numel(layer, tp)[1] - _numel(experts, tp)[1]
    return rest + expert_shard // ep, expert_shard // ep


def _inactive(layer, topk: int) -> tuple[int, int]:
    """(routed-expert parameters, of which a token skips) in one layer."""
    experts = _routed_experts(layer)
    if experts is None:
        return 0, 0
    routed, n = _numel(experts, 1)[0], layer.mlp.config.num_moe_experts
    return routed, routed * (n - topk) // n


def count_parameters(provider: ModelProviderBase) -> ParameterCount:
    """Exact total and per-GPU parameter counts for ``provider`` as configured."""
    tp, pp = provider.tensor_model_parallel_size, provider.pipeline_model_parallel_size
    with meta_model(provider) as model:
        total = sum(p.numel() for p in model.parameters())
        if not isinstance(provider, GPTModelProvider):
            # Encoder-decoder and hybrid stacks are not pipeline-split here: one stage.
            return ParameterCount(total, _numel(model, tp)[1], 0, 0, 0, active=total)
        layers = list(model.decoder.layers)
        emb_full, emb_shard = _numel(model.embedding, tp)
        ep, etp = provider.expert_model_parallel_size, provider.expert_tensor_parallel_size or tp
        shards = [_layer_shard(layer, tp, ep, etp) for layer in layers]
        layer_shards, expert_shards = [s for s, _ in shards], [e for _, e in shards]
        moe = [_inactive(layer, provider.moe_router_topk) for layer in layers]
        norm_full, norm_shard = _numel(model.decoder.final_layernorm, tp) if model.decoder.final_layernorm else (0, 0)
        if provider.share_embeddings_and_output_weights:
            # tied: counted once in the total, but the last stage holds its own copy
            out_full, out_shard = 0, _numel(model.embedding.word_embeddings, tp)[1] if pp > 1 else 0
        else:
            out_full, out_shard = _numel(model.output_layer, tp)
        first = provider.num_layers_in_first_pipeline_stage
        last = provider.num_layers_in_last_pipeline_stage
        stage_layers = _split_layers(len(layers), pp, first, last)
        per_stage, start = [], 0
        for stage, n in enumerate(stage_layers):
            count = sum(layer_shards[start:start + n])
            experts = sum(expert_shards[start:start + n])
            start += n
            if stage == 0:
                count += emb_shard
            if stage == pp - 1:
                count += norm_shard + out_shard
            per_stage.append((count, experts))
        per_gpu_max, per_gpu_experts = max(per_stage)
        return ParameterCount(
            total=total,
            per_gpu_max=per_gpu_max,
            embedding=emb_full,
            per_layer=_numel(layers[0], 1)[0] if layers else 0,
            head=norm_full + out_full,
            active=total - sum(skipped for _, skipped in moe),
            routed_experts=sum(routed for routed, _ in moe),
            per_gpu_experts=per_gpu_experts,
        )


def _split_layers(num_layers: int, pp: int, first: int | None, last: int | None) -> list[int]:
    """Layers per pipeline stage, as megatron-core assigns them (even split, optional uneven ends)."""
    if pp == 1:
        return [num_layers]
    middle_layers, middle_stages = num_layers, pp
    if first is not None:
        middle_layers, middle_stages = middle_layers - first, middle_stages - 1
    if last is not None:
        middle_layers, middle_stages = middle_layers - last, middle_stages - 1
    per = middle_layers // middle_stages if middle_stages else 0
    stages = [per] * middle_stages
    if first is not None:
        stages.insert(0, first)
    if last is not None:
        stages.append(last)
    return stages
