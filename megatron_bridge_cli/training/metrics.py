"""What the run reports: Megatron-LM-format console lines, TensorBoard scalars, W&B.

The console lines keep Megatron-LM's field names and number formats, because users' tools
grep them (``lm loss: ([0-9.E+-]+)``). One rank reports: the first tensor/data/context-parallel
rank of the last pipeline stage, the only one holding the losses.
"""

from __future__ import annotations

import logging
import math
import resource
import sys
from typing import Optional

import torch

__all__ = ["Reporter", "is_reporting_rank", "num_floating_point_operations", "training_log_line",
           "eval_log_line", "peak_memory_mb", "params_norm", "make_timers", "timers_text", "TIMERS_TO_LOG"]

log = logging.getLogger(__name__)


def is_reporting_rank() -> bool:
    """Last pipeline stage, tensor-parallel rank 0, data-parallel (with CP) rank 0."""
    from megatron.core import parallel_state as ps

    return (
        ps.is_pipeline_last_stage(ignore_virtual=True)
        and ps.get_tensor_model_parallel_rank() == 0
        and ps.get_data_parallel_rank(with_context_parallel=True) == 0
    )


def num_floating_point_operations(cfg, batch_size: int) -> float:
    """Model FLOPs of one training step (forward + backward), Megatron-LM's dense GPT formula:
    12 x batch x seq x layers x hidden^2 x (1 + FFN/hidden x gated-unit factor + KV groups /
    heads + seq/hidden + vocab / (2 x layers x hidden))."""
    m = cfg.model
    groups = m.num_query_groups or m.num_attention_heads
    ffn = m.ffn_hidden_size or 4 * m.hidden_size
    if m.num_moe_experts:  # a token passes k routed experts of their own width and the shared expert
        ffn = m.moe_router_topk * (m.moe_ffn_hidden_size or ffn) + (m.moe_shared_expert_intermediate_size or 0)
    gated = 1.5 if m.gated_linear_unit else 1.0
    h, seq, layers = m.hidden_size, m.seq_length, m.num_layers
    return (
        12 * batch_size * seq * layers * h * h
        * (1 + ffn / h * gated + groups / m.num_attention_heads + seq / h
           + m.resolved_vocab_size() / (2 * layers * h))
    )


def peak_memory_mb() -> dict:
    """Peak memory of this process: CUDA allocator figures on GPU, max RSS on CPU."""
    if torch.cuda.is_available():
        return {
            "mem-allocated-MB": torch.cuda.memory_allocated() / 2**20,
            "mem-max-allocated-MB": torch.cuda.max_memory_allocated() / 2**20,
            "mem-reserved-MB": torch.cuda.memory_reserved() / 2**20,
        }
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"mem-max-rss-MB": kb / 1024}


def training_log_line(*, iteration: int, total_iters: int, consumed: int, iter_ms: float,
                      tokens_per_s: Optional[float], tflops_per_gpu: Optional[float], lr: float,
                      global_batch: int, loss: Optional[float], loss_scale: float,
                      grad_norm: Optional[float], skipped: int, nan: int,
                      aux_losses: Optional[dict] = None, num_zeros: Optional[float] = None,
                      params_norm: Optional[float] = None) -> str:
    """One Megatron-LM training line. ``aux_losses`` (MoE router losses by name) follow the LM
    loss, as Megatron-LM prints them (``load_balancing_loss: 1.000E+00 |``); ``num_zeros``
    (--optimizer.log_num_zeros_in_grad) and ``params_norm`` (--logger.log_params_norm) follow
    the grad norm, in Megatron-LM's order."""
    parts = [
        f"iteration {iteration:8d}/{total_iters:8d}",
        f"consumed samples: {consumed}",
        f"elapsed time per iteration (ms): {iter_ms:.1f}",
    ]
    if tokens_per_s is not None:
        parts.append(f"throughput (tokens/s): {tokens_per_s:.1f}")
    if tflops_per_gpu is not None:
        parts.append(f"throughput per GPU (TFLOP/s/GPU): {tflops_per_gpu:.3f}")
    parts += [f"learning rate: {lr:.6E}", f"global batch size: {global_batch:5d}"]
    if loss is not None:
        parts.append(f"lm loss: {loss:.6E}")
        parts += [f"{name}: {value:.6E}" for name, value in (aux_losses or {}).items()]
    parts.append(f"loss scale: {loss_scale:.1f}")
    if grad_norm is not None:
        parts.append(f"grad norm: {grad_norm:.3f}")
    if num_zeros is not None:
        parts.append(f"num zeros: {num_zeros:.1f}")
    if params_norm is not None:
        parts.append(f"params norm: {params_norm:.3f}")
    parts += [f"number of skipped iterations: {skipped:3d}", f"number of nan iterations: {nan:3d}"]
    return " | ".join(parts) + " |"


def params_norm(model: list, moe: bool) -> float:
    """L2 norm of the whole model's parameters, as Megatron-LM's ``calc_params_l2_norm``:
    each parameter counted once (tensor-parallel duplicates and the tied output copy of the
    embedding skipped), summed over tensor- and pipeline-parallel ranks; with ``moe``, expert
    parameters over the expert-tensor/expert/pipeline ranks. Collective over those groups.
    Half-precision weights are squared in fp32 (the norm of the weights the model computes with)."""
    from megatron.core import parallel_state as ps
    from megatron.core.tensor_parallel import param_is_not_tensor_parallel_duplicate
    from megatron.core.transformer.module import param_is_not_shared

    device = "cpu" if not torch.cuda.is_available() else torch.cuda.current_device()
    dense, expert = torch.zeros(1, device=device), torch.zeros(1, device=device)
    for chunk in model:
        for p in chunk.parameters():
            if param_is_not_tensor_parallel_duplicate(p) and param_is_not_shared(p):
                (dense if getattr(p, "allreduce", True) else expert).add_(p.detach().float().pow(2).sum())
    torch.distributed.all_reduce(dense, group=ps.get_model_parallel_group())
    if moe:  # every rank of a MoE model joins, whether or not its stage holds experts
        torch.distributed.all_reduce(expert, group=ps.get_expert_tensor_model_pipeline_parallel_group())
    return float((dense + expert).item()) ** 0.5


TIMERS_TO_LOG = [
    "forward-backward", "forward-compute", "backward-compute", "batch-generator",
    "forward-recv", "forward-send", "backward-recv", "backward-send",
    "forward-send-forward-recv", "forward-send-backward-recv", "backward-send-forward-recv",
    "backward-send-backward-recv", "forward-backward-send-forward-backward-recv",
    "layernorm-grads-all-reduce", "embedding-grads-all-reduce", "all-grads-sync", "params-all-gather",
    "optimizer-copy-to-main-grad", "optimizer-unscale-and-check-inf", "optimizer-clip-main-grad",
    "optimizer-count-zeros", "optimizer-inner-step", "optimizer-copy-main-to-model-params", "optimizer",
]
"""Megatron-LM's per-phase timers (training.py ``training_log``). Level 1 (--logger.timing_log_level=1):
forward-backward, the gradient all-reduces and the optimizer phases; level 2 adds forward/backward
compute, the batch generator and pipeline send/receive."""


def make_timers(level: int):
    """megatron-core Timers at ``level`` (min/max over ranks), or None at level 0: the iteration
    time of the log line is all level 0 reports, so megatron-core needs no timers then."""
    if not level:
        return None
    from megatron.core.timers import Timers

    return Timers(level, "minmax")


def timers_text(timers, iterations: int) -> Optional[str]:
    """Megatron-LM's timers block, per iteration over the last ``iterations``; resets the timers.
    Collective (an all-gather over all ranks): every rank must call it."""
    return timers.get_all_timers_string(TIMERS_TO_LOG, normalizer=max(iterations, 1), reset=True)


def eval_log_line(prefix: str, loss: float) -> str:
    """``validation loss at iteration 20 | lm loss value: 3.9E+00 | lm loss PPL: 49.4 |``."""
    ppl = math.exp(min(20.0, loss))
    return f"validation loss at {prefix} | lm loss value: {loss:.6E} | lm loss PPL: {ppl:.6E} |"


class Reporter:
    """Console + optional TensorBoard and W&B writers, all on the reporting rank."""

    def __init__(self, cfg, user_cfg):
        self.cfg = cfg
        self.active = is_reporting_rank()
        self.tb = None
        self.wandb = None
        lg = cfg.logger
        if not self.active:
            return
        if lg.tensorboard_dir:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=lg.tensorboard_dir, max_queue=lg.tensorboard_queue_size)
        if lg.wandb_project:
            import wandb

            self.wandb = wandb.init(
                project=lg.wandb_project, name=lg.wandb_exp_name, entity=lg.wandb_entity,
                dir=lg.wandb_save_dir, config=_plain(user_cfg),
            )

    def print(self, line: str) -> None:
        if self.active:
            print(line, flush=True)

    def scalars(self, values: dict, step: int) -> None:
        if not self.active:
            return
        if self.tb is not None:
            for name, value in values.items():
                self.tb.add_scalar(name, value, step)
        if self.wandb is not None:
            self.wandb.log(values, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.flush()
            self.tb.close()
            self.tb = None
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None


def _plain(user_cfg) -> dict:
    """The run's config as plain data for W&B (its YAML form)."""
    import yaml

    try:
        return yaml.safe_load(user_cfg.to_yaml()) or {}
    except Exception as e:  # reporting must never stop training
        print(f"warning: could not attach the config to W&B: {e}", file=sys.stderr)
        return {}
