"""Checks of mixture-of-experts runs, each naming the flag to change, and the one MoE derivation.

Facts behind them (megatron-core 0.16.1, torch 2.13, probed on CPU over gloo):

* **Expert parallelism divides the data-parallel ranks.** ``initialize_model_parallel`` lays the
  dense layers out as TP x CP x DP x PP and the expert layers as ETP x EP x expert-DP x PP over
  the same ranks (ETP, ``expert_tensor_parallel_size``, defaults to TP), and raises unless the
  world size divides by ETP x EP x PP. So DP = world / (TP x PP x CP) is unchanged by EP, and
  each expert's weights are replicated expert-DP = world / (ETP x EP x PP) times.
* ``MoELayer`` asserts ``num_moe_experts % EP == 0`` and, while training, refuses TP > 1
  without sequence parallel (which needs Transformer Engine norms here).
* **Token dispatchers over gloo:** ``allgather`` and ``alltoall`` run (gloo in torch 2.13 has
  ``all_to_all_single`` with uneven splits, ``all_gather_into_tensor``, ``reduce_scatter_tensor``
  and ``ReduceOp.AVG``); ``flex`` needs DeepEP or HybridEP, CUDA-only packages.
* **Fused kernels:** ``moe_permute_fusion`` and ``moe_router_fusion`` are Transformer Engine
  kernels; ``moe_grouped_gemm`` needs TE or the grouped_gemm package
  (``config/models/moe.py``). A grouped GEMM that a recipe asked for falls back to
  ``SequentialMLP`` (same parameters, interchangeable checkpoints) where neither exists;
  one set explicitly is an error instead.
"""

from __future__ import annotations

import importlib.util
import logging

import torch

from megatron_bridge_cli.config.models.moe import (
    GROUPED_GEMM_HINT,
    grouped_gemm_backend,
)
from megatron_bridge_cli.config.models.provider import transformer_engine_available

__all__ = ["check_moe", "derive_moe", "expert_data_parallel_size", "uses_gloo"]

log = logging.getLogger(__name__)


def uses_gloo(cfg) -> bool:
    """Whether the run's collectives go over gloo (named, or the default without CUDA)."""
    backend = cfg.dist.distributed_backend
    return backend == "gloo" or (backend is None and not torch.cuda.is_available())


def _etp(m) -> int:
    """Expert tensor-parallel size: its own setting, else the tensor-parallel size."""
    return m.expert_tensor_parallel_size or m.tensor_model_parallel_size


def expert_data_parallel_size(m, world_size: int) -> int:
    """How many ranks hold a copy of each expert: world / (ETP x EP x PP)."""
    return world_size // (_etp(m) * m.expert_model_parallel_size * m.pipeline_model_parallel_size)


def _check_layout(m, world_size: int) -> list[str]:
    problems, ep = [], m.expert_model_parallel_size
    if ep < 1 or (m.expert_tensor_parallel_size is not None and m.expert_tensor_parallel_size < 1):
        return [f"--model.expert_model_parallel_size ({ep}) and --model.expert_tensor_parallel_size "
                f"({m.expert_tensor_parallel_size}) must be at least 1"]
    if not m.num_moe_experts:
        if ep > 1:
            problems.append(f"--model.expert_model_parallel_size ({ep}) needs --model.num_moe_experts "
                            "(expert parallelism splits the experts of MoE layers)")
        return problems
    if m.num_moe_experts % ep:
        problems.append(f"--model.num_moe_experts ({m.num_moe_experts}) is not divisible by "
                        f"--model.expert_model_parallel_size ({ep})")
    grid = _etp(m) * ep * m.pipeline_model_parallel_size
    if m.pipeline_model_parallel_size >= 1 and world_size % grid:
        problems.append(
            f"world size ({world_size}) is not divisible by --model.expert_tensor_parallel_size ({_etp(m)}"
            f"{', the TP size' if m.expert_tensor_parallel_size is None else ''}) x "
            f"--model.expert_model_parallel_size ({ep}) x --model.pipeline_model_parallel_size "
            f"({m.pipeline_model_parallel_size}) = {grid}: experts are split over the data-parallel "
            f"ranks of each pipeline stage"
        )
    if not 1 <= m.moe_router_topk <= m.num_moe_experts:
        problems.append(f"--model.moe_router_topk ({m.moe_router_topk}) must be between 1 and "
                        f"--model.num_moe_experts ({m.num_moe_experts})")
    if m.moe_shared_expert_intermediate_size and m.add_bias_linear:
        problems.append("--model.moe_shared_expert_intermediate_size needs --model.add_bias_linear=false "
                        "(megatron-core's shared experts have no biases)")
    if m.tensor_model_parallel_size > 1 and not m.sequence_parallel:
        problems.append(
            f"--model.tensor_model_parallel_size ({m.tensor_model_parallel_size}) with MoE layers needs "
            "--model.sequence_parallel=true (megatron-core's MoE layer refuses TP without it while training; "
            "it needs Transformer Engine), or use expert parallelism (--model.expert_model_parallel_size) "
            "instead of TP"
        )
    return problems


def _check_kernels(cfg) -> list[str]:
    m, problems = cfg.model, []
    te = transformer_engine_available()
    if m.moe_token_dispatcher_type == "flex":
        package = {"deepep": "deep_ep", "hybridep": "hybrid_ep"}.get(m.moe_flex_dispatcher_backend, "deep_ep")
        if uses_gloo(cfg) or importlib.util.find_spec(package) is None:
            where = "CUDA GPUs over NCCL, not gloo" if uses_gloo(cfg) else f"CUDA GPUs with {package} installed"
            problems.append(
                f"--model.moe_token_dispatcher_type=flex runs only on {where} (its "
                f"--model.moe_flex_dispatcher_backend={m.moe_flex_dispatcher_backend} kernels): use "
                "--model.moe_token_dispatcher_type=alltoall (or allgather), which also run over gloo"
            )
    for name in ("moe_permute_fusion", "moe_router_fusion"):
        if getattr(m, name) and not te:
            problems.append(f"--model.{name} is a Transformer Engine kernel: pip install '.[te]' on a GPU "
                            f"machine, or set --model.{name}=false")
    explicit = "model.moe_grouped_gemm" in cfg.explicit_paths  # else derive_moe() falls back
    if m.moe_grouped_gemm and explicit and grouped_gemm_backend(m.use_transformer_engine()) is None:
        problems.append(f"--model.moe_grouped_gemm needs Transformer Engine or grouped_gemm: {GROUPED_GEMM_HINT}; "
                        "or set --model.moe_grouped_gemm=false (SequentialMLP, one GEMM per expert)")
    return problems


def check_moe(cfg, world_size: int) -> list[str]:
    """Problems of the MoE settings at ``world_size`` (none for dense models without EP)."""
    m = cfg.model
    if not hasattr(m, "num_moe_experts"):
        return []
    problems = _check_layout(m, world_size)
    if m.num_moe_experts:
        problems += _check_kernels(cfg)
    return problems


def derive_moe(cfg) -> None:
    """Fall back from a grouped GEMM nobody set explicitly to SequentialMLP where no grouped-GEMM
    implementation exists (a recipe written for GPUs, run on a CPU or a machine without TE)."""
    m = cfg.model
    if not getattr(m, "num_moe_experts", None) or not m.moe_grouped_gemm:
        return
    if "model.moe_grouped_gemm" in cfg.explicit_paths or grouped_gemm_backend(m.use_transformer_engine()):
        return
    log.warning("--model.moe_grouped_gemm: no grouped-GEMM implementation here (Transformer Engine or "
                "grouped_gemm); using SequentialMLP, one GEMM per expert (same parameters and checkpoints)")
    m.moe_grouped_gemm = False
