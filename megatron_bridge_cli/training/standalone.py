"""A one-rank runtime for models used outside a training job (model independence).

``provider.provide()`` in a plain Python session or notebook has no process group and no
megatron-core parallel state, both of which megatron-core's layers consult while they are
built and run. ``ensure_single_rank_runtime`` creates them for one rank (an in-memory store, so
no port is opened), on the current GPU or on CPU behind the compatibility layer, and leaves
them in place for the life of the process: the model's forward pass needs them too. Inside a
job (torchrun, bridge-train) the existing state is used untouched.

The config package calls this lazily from ``provide()``; it is the one place where config
reaches into training/, because building a megatron-core model needs a runtime.
"""

from __future__ import annotations

import torch

from megatron_bridge_cli.errors import ConfigError

__all__ = ["ensure_single_rank_runtime", "STANDALONE_SEED"]

STANDALONE_SEED = 1234
"""Seed of the weights a standalone provide() draws (Megatron-LM's default --seed)."""


def ensure_single_rank_runtime(model) -> None:
    """Make megatron-core's parallel state exist, for one rank, unless a job already set it up."""
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

    if parallel_state.model_parallel_is_initialized():
        return
    sizes = {name: getattr(model, name) or 1 for name in (
        "tensor_model_parallel_size", "pipeline_model_parallel_size", "context_parallel_size",
        "expert_model_parallel_size")}
    wide = [f"{name}={size}" for name, size in sizes.items() if size != 1]
    if wide:
        raise ConfigError(
            f"provide() outside a training job builds a single-rank model, but the provider asks for "
            f"{', '.join(wide)}; run it under torchrun (or bridge-train --nproc-per-node) or set them to 1"
        )
    if not torch.cuda.is_available():
        from megatron_bridge_cli.training.cpu_compat import apply_cpu_compat

        apply_cpu_compat()
    if not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend, store=torch.distributed.HashStore(), rank=0, world_size=1)
    if torch.distributed.get_world_size() != 1:
        raise ConfigError("provide(): a process group of several ranks exists but megatron-core's parallel state "
                          "does not; initialize it (megatron.core.parallel_state.initialize_model_parallel) first")
    parallel_state.initialize_model_parallel(1, 1)
    model_parallel_cuda_manual_seed(STANDALONE_SEED)
