"""Resuming megatron-core's DistributedOptimizer over torch's own Adam (no Apex/TE: CPU, laptops).

megatron-core 0.16.1 takes its fused-Adam load path for granted; over ``torch.optim.Adam`` /
``AdamW`` three things go wrong, found by probing a DP=2 resume on CPU:

1. Before loading, ``DistributedOptimizer.state_dict()`` reads every parameter's ``step`` from
   the optimizer state, which torch creates lazily at the first step: a fresh optimizer has
   none and the load stops on ``assert len(steps) == 1``. ``before_load`` gives the state its
   shape (zeros, step 0); every value is overwritten by the load.
2. The dp_reshardable load copies the saved main parameters into views of the model's leaf
   parameters outside ``no_grad`` ("a view of a leaf Variable that requires grad is being used
   in an in-place operation" for fp32 models): ``load`` runs it under ``torch.no_grad()``.
3. ``load_state_dict`` puts ONE ``step`` tensor into every parameter's state. torch's Adam
   increments each parameter's ``step`` in place, so the shared tensor advanced once per
   parameter per iteration and bias correction ran ahead: losses matched at the first resumed
   iteration and drifted from the second. ``load`` gives each parameter its own ``step``
   (the saved iteration count, from the parameter group).

With the three, a resumed DP=2 run logs the uninterrupted run's losses bit for bit
(tests/integration/test_training_failures.py). Nothing here runs where Apex or Transformer
Engine provide the fused Adam (megatron-core's own path).
"""

from __future__ import annotations

import torch

__all__ = ["needs_repair", "before_load", "load"]


def _distributed_optimizers(optimizer) -> list:
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    parts = getattr(optimizer, "chained_optimizers", None) or [optimizer]
    return [p for p in parts if isinstance(p, DistributedOptimizer)]


def _torch_adam(dist_opt):
    inner = getattr(dist_opt, "optimizer", None)
    return inner if isinstance(inner, (torch.optim.Adam, torch.optim.AdamW)) else None


def needs_repair(optimizer) -> bool:
    """Whether ``optimizer`` holds a DistributedOptimizer over torch's Adam without fused Adam."""
    from megatron.core.optimizer import distrib_optimizer

    if getattr(distrib_optimizer, "HAVE_APEX_OR_TE", False):
        return False
    return any(_torch_adam(d) is not None for d in _distributed_optimizers(optimizer))


def before_load(optimizer) -> None:
    """Give each torch Adam state its entries (see 1.) before the sharded state dict is built."""
    for dist_opt in _distributed_optimizers(optimizer):
        adam = _torch_adam(dist_opt)
        if adam is None:
            continue
        for group in adam.param_groups:
            for p in group["params"]:
                state = adam.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0, dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)


def load(optimizer, state_dict) -> None:
    """``optimizer.load_state_dict(state_dict)`` with 2. and 3. repaired."""
    with torch.no_grad():
        optimizer.load_state_dict(state_dict)
    for dist_opt in _distributed_optimizers(optimizer):
        adam = _torch_adam(dist_opt)
        if adam is None:
            continue
        for group in adam.param_groups:
            step = group.get("step")
            for p in group["params"]:
                state = adam.state.get(p)
                if state and "step" in state and step is not None:
                    state["step"] = torch.tensor(float(step), dtype=state["step"].dtype)  # one tensor each
