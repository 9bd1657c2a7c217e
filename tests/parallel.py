"""A one-process gloo group with megatron-core parallel state, for unit tests that build models."""

from __future__ import annotations

from contextlib import contextmanager

from megatron_bridge_cli.training.param_count import free_port, single_rank_parallel_state as _parallel_state

__all__ = ["free_port", "single_rank_parallel_state"]


@contextmanager
def single_rank_parallel_state(seed: int = 1234):
    """param_count's one-rank parallel state, plus seeded model-parallel RNG for real weights."""
    from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

    with _parallel_state():
        model_parallel_cuda_manual_seed(seed)
        yield
