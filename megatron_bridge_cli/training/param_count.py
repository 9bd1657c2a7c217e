"""Exact parameter counts of the model a config describes, without allocating it.

The model is built once with TP=PP=1 on PyTorch's meta device (no memory, ~0.1 s even for
hundreds of billions of parameters) and its real megatron-core modules are counted. The
per-GPU shard follows from how megatron-core splits them: parameters marked
``tensor_model_parallel`` are divided by TP, the rest are replicated, and pipeline stage k
holds layers [k*L/PP, (k+1)*L/PP) plus the embedding (first stage) or the final norm and
output layer (last stage; with tied embeddings the last stage keeps its own copy).
"""

from __future__ import annotations

import copy
import socket
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from megatron_bridge_cli.config.models import GPTModelProvider, ModelProviderBase

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


def _unsharded_copy(provider: ModelProviderBase) -> ModelProviderBase:
    """The same architecture as one TP=PP=1 meta-device model (vocab padded as configured)."""
    provider = copy.deepcopy(provider)
    padded_vocab = provider.resolved_vocab_size()  # padding depends on the real TP
    for name in ("tensor_model_parallel_size", "pipeline_model_parallel_size", "context_parallel_size"):
        setattr(provider, name, 1)
    provider.virtual_pipeline_model_parallel_size = None
    provider.num_layers_in_first_pipeline_stage = None
    provider.num_layers_in_last_pipeline_stage = None
    provider.sequence_parallel = False
    provider.perform_initialization = True  # megatron-core marks TP-split weights while initializing (a no-op on meta)
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


def count_parameters(provider: ModelProviderBase) -> ParameterCount:
    """Exact total and per-GPU parameter counts for ``provider`` as configured."""
    tp, pp = provider.tensor_model_parallel_size, provider.pipeline_model_parallel_size
    with meta_model(provider) as model:
        total = sum(p.numel() for p in model.parameters())
        if not isinstance(provider, GPTModelProvider):
            # Encoder-decoder and hybrid stacks are not pipeline-split here: one stage.
            return ParameterCount(total, _numel(model, tp)[1], 0, 0, 0)
        layers = list(model.decoder.layers)
        emb_full, emb_shard = _numel(model.embedding, tp)
        layer_shards = [_numel(layer, tp)[1] for layer in layers]
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
            start += n
            if stage == 0:
                count += emb_shard
            if stage == pp - 1:
                count += norm_shard + out_shard
            per_stage.append(count)
        return ParameterCount(
            total=total,
            per_gpu_max=max(per_stage),
            embedding=emb_full,
            per_layer=_numel(layers[0], 1)[0] if layers else 0,
            head=norm_full + out_full,
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
