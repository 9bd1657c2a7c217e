"""What a checkpoint holds, as megatron-core sharded state dicts (shared by saving and loading).

Model chunks (``model`` or ``model0``, ``model1``, ... with virtual pipeline stages), optimizer
(the distributed optimizer as ``dp_reshardable``), and the RNG states of each (pipeline, tensor)
rank as one ShardedObject of global shape (PP, TP).
"""

from __future__ import annotations

import random
from typing import Optional

import numpy
import torch

from megatron_bridge_cli.training.setup import Built, on_cpu, unwrap

__all__ = ["RUN_CONFIG", "FORMAT_VERSION", "optim_metadata", "rng_sharded_object", "restore_rng", "model_keys",
           "layout", "sharded_state_dict", "rank0_print"]

RUN_CONFIG = "run_config.yaml"
FORMAT_VERSION = 1


def optim_metadata(cfg) -> dict:
    meta = {"chained_optim_avoid_prefix": True}
    if cfg.optimizer.use_distributed_optimizer:
        meta["distrib_optim_sharding_type"] = "dp_reshardable"
    return meta


def rng_sharded_object(state: Optional[dict] = None):
    """This rank's RNG states as a ShardedObject of global shape (PP, TP), replicated over DP."""
    from megatron.core import parallel_state as ps
    from megatron.core import tensor_parallel
    from megatron.core.dist_checkpointing import ShardedObject

    if state is None:
        state = {
            "random": random.getstate(),
            "np": numpy.random.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": None if on_cpu() else torch.cuda.get_rng_state(),
            "tracker": tensor_parallel.get_cuda_rng_tracker().get_states(),
        }
    return ShardedObject(
        "rng_state", state,
        (ps.get_pipeline_model_parallel_world_size(), ps.get_tensor_model_parallel_world_size()),
        (ps.get_pipeline_model_parallel_rank(), ps.get_tensor_model_parallel_rank()),
        replica_id=ps.get_data_parallel_rank(with_context_parallel=True),
    )


def restore_rng(state: dict) -> None:
    from megatron.core import tensor_parallel

    random.setstate(state["random"])
    numpy.random.set_state(state["np"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and not on_cpu():
        torch.cuda.set_rng_state(state["cuda"])
    tensor_parallel.get_cuda_rng_tracker().set_states(state["tracker"])


def model_keys(model: list) -> list[str]:
    return ["model"] if len(model) == 1 else [f"model{i}" for i in range(len(model))]


def layout(cfg) -> dict:
    m = cfg.model
    return {
        "tensor_model_parallel_size": m.tensor_model_parallel_size,
        "pipeline_model_parallel_size": m.pipeline_model_parallel_size,
        "virtual_pipeline_model_parallel_size": m.virtual_pipeline_model_parallel_size,
        "data_parallel_size": cfg.train.data_parallel_size,
        "expert_model_parallel_size": getattr(m, "expert_model_parallel_size", 1),
    }


def sharded_state_dict(cfg, built: Built, *, optim: bool, rng: bool, is_loading: bool,
                       part: Optional[str] = None) -> dict:
    """``part``: 'all' model tensors, or with --peft 'adapters' (what its checkpoints hold) or
    'base' (what the pretrained checkpoint gives); default: 'adapters' with --peft, else 'all'."""
    part = part or ("adapters" if cfg.peft is not None else "all")
    sd = {key: _model_part(unwrap(chunk), part) for key, chunk in zip(model_keys(built.model), built.model)}
    if optim:
        sd["optimizer"] = built.optimizer.sharded_state_dict(sd, is_loading=is_loading, metadata=optim_metadata(cfg))
    if rng:
        sd["rng_state"] = rng_sharded_object()
    return sd


def _model_part(chunk, part: str) -> dict:
    sd = chunk.sharded_state_dict()
    if part == "all":
        return sd
    from megatron_bridge_cli.training.peft import adapter_names

    adapters = adapter_names(chunk)
    return {k: v for k, v in sd.items() if (k in adapters) == (part == "adapters")}


def rank0_print(msg: str) -> None:
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        print(msg, flush=True)
