"""Mixture of experts on megatron-core: which expert implementation a run can use.

The MoE settings themselves are megatron-core ``TransformerConfig`` fields (``num_moe_experts``,
``moe_router_topk``, ``moe_aux_loss_coeff``, ``moe_token_dispatcher_type``,
``expert_model_parallel_size``, ...), so they are flags and YAML keys like any other field.
What this module adds is the knowledge of what each choice needs:

* **Grouped GEMM** (``moe_grouped_gemm``) runs all local experts in one kernel. megatron-core
  implements it with Transformer Engine (``TEGroupedMLP``, TE layer spec) or with the
  ``grouped_gemm`` package (legacy ``GroupedMLP``, local layer spec, bf16 only). Neither exists
  on a CPU-only machine; ``SequentialMLP`` (one GEMM per expert) holds the same parameters
  and checkpoints interchangeably, so a recipe's grouped GEMM falls back to it there.
* **megatron-core 0.16.1 without Transformer Engine:** the router's gating GEMM
  (``moe_utils.RouterGatingLinearFunction``) tests a name ``te_general_gemm`` that is defined
  only when TE imports, so every MoE forward pass raises ``NameError``. :func:`patch_router_without_te`
  defines it as None, which selects the plain ``torch.mm`` branch already written there.
"""

from __future__ import annotations

import importlib.util
from typing import Optional

__all__ = ["grouped_gemm_backend", "patch_router_without_te", "GROUPED_GEMM_HINT"]

GROUPED_GEMM_HINT = (
    "pip install '.[te]' on a GPU machine (TEGroupedMLP), or install the grouped_gemm package "
    "(pip install git+https://github.com/fanshiqing/grouped_gemm@v1.1.4, local spec, bf16 only)"
)


def grouped_gemm_backend(uses_transformer_engine: bool) -> Optional[str]:
    """The grouped-GEMM implementation megatron-core would use for a model built with (True) or
    without (False) the Transformer Engine layer spec, or None when there is none."""
    if uses_transformer_engine:
        return "transformer_engine"  # TEGroupedMLP
    if importlib.util.find_spec("grouped_gemm") is not None:
        return "grouped_gemm"  # legacy GroupedMLP on the local spec
    return None


def patch_router_without_te() -> None:
    """Let megatron-core's router run when Transformer Engine is absent (see the module doc).

    Idempotent, and a no-op where TE imported (the name is then TE's GEMM)."""
    from megatron.core.transformer.moe import moe_utils

    if not hasattr(moe_utils, "te_general_gemm"):
        moe_utils.te_general_gemm = None
