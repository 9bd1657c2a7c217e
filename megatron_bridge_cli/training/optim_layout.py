"""Optimizer state saved under another expert-parallel layout (EP > 1 <-> EP = 1).

megatron-core's ``get_megatron_optimizer`` builds one optimizer for all parameters when no
parameter is expert-parallel, and a ``ChainedOptimizer`` of two (dense parameters, and the
expert-parallel ones, which reduce over the expert-data-parallel group) when EP > 1. Its
checkpoint has two kinds of content:

* per-parameter state (Adam moments, fp32 main copies): ShardedTensors keyed by the model
  parameter they belong to, with no optimizer prefix (``chained_optim_avoid_prefix``), so
  dist_checkpointing reshards them to any EP like the weights;
* the *common* part, written per sub-optimizer in ``common.pt``: ``param_groups``
  (hyper-parameters) and the shared Adam ``common_step``. dist_checkpointing merges it back by
  position, so into the other structure it does not fit (megatron-core then fails with
  ``KeyError: 'pre_wd_mult'`` or "Expected 2 entries in state dict").

When the number of sub-optimizers changed, :func:`adopt_own_commons` keeps every loaded
tensor and takes the common part from this run's own optimizer (its hyper-parameters are the
config's; learning rate and weight decay are set again from the scheduler's saved state) with
the checkpoint's step count. This is what makes a checkpoint saved at EP=2 resume at EP=1 with
the same losses (tests/integration/test_training_moe.py).
"""

from __future__ import annotations

import copy
from typing import Any, Optional

__all__ = ["optimizer_count", "own_commons", "adopt_own_commons", "saved_step"]

_LOADED = object()
"""Placeholder, in :func:`own_commons`' result, for a leaf the checkpoint provides."""


def optimizer_count(optimizer) -> int:
    """How many sub-optimizers megatron-core built (1, or 2 with expert-parallel parameters)."""
    return len(getattr(optimizer, "chained_optimizers", None) or [optimizer])


def own_commons(sharded: Any) -> Any:
    """The optimizer's sharded state dict with every leaf the checkpoint provides (tensors,
    runtime-only objects) replaced by a placeholder and the common values deep-copied.
    Call it before ``dist_checkpointing.load`` (which may consume the dict)."""
    from megatron.core.dist_checkpointing.mapping import LocalNonpersistentObject, ShardedBase

    if isinstance(sharded, (ShardedBase, LocalNonpersistentObject)):
        return _LOADED
    if isinstance(sharded, dict):
        return {k: own_commons(v) for k, v in sharded.items()}
    if isinstance(sharded, list):
        return [own_commons(v) for v in sharded]
    return copy.deepcopy(sharded)


def adopt_own_commons(loaded: Any, commons: Any, step: Optional[Any]) -> Any:
    """``loaded`` restricted to this optimizer's structure: loaded leaves where ``commons`` has
    a placeholder, this run's common values elsewhere, and ``step`` as every sub-optimizer's
    ``common_step`` (the key megatron-core restores Adam's per-parameter step from)."""
    if commons is _LOADED:
        return loaded
    if isinstance(commons, dict):
        out = {k: adopt_own_commons(loaded.get(k) if isinstance(loaded, dict) else None, v, step)
               for k, v in commons.items()}
        if step is not None and "param_groups" in out and isinstance(out.get("state"), dict):
            out["state"]["common_step"] = copy.deepcopy(step)
        return out
    if isinstance(commons, list):
        items = loaded if isinstance(loaded, list) else [None] * len(commons)
        return [adopt_own_commons(a, c, step) for a, c in zip(items, commons)]
    return commons


def saved_step(common: Any) -> Optional[Any]:
    """The shared optimizer step stored anywhere in a checkpoint's common optimizer part."""
    if isinstance(common, dict):
        if isinstance(common.get("state"), dict) and "common_step" in common["state"]:
            return common["state"]["common_step"]
        for value in common.values():
            found = saved_step(value)
            if found is not None:
                return found
    return None
