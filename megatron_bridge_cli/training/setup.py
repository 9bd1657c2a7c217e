"""Everything built before the first step: process groups, seeds, model, optimizer, scheduler.

Order (Megatron-LM's): torch.distributed -> megatron-core parallel_state (TP, PP incl.
virtual, CP, DP) -> seeds -> one model chunk per virtual pipeline stage from
``cfg.model.provide()`` -> Float16Module when training in half precision -> megatron-core
DDP -> ``get_megatron_optimizer`` -> ``OptimizerParamScheduler``. The schedule hooks
(``grad_scale_func``, ``finalize_model_grads_func``, ``no_sync_func``, ...) are set on the
model config as Megatron-LM's training.py does, since megatron-core's schedules read them there.
"""

from __future__ import annotations

import datetime
import logging
import os
import random
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy
import torch

from megatron_bridge_cli.training.env import WorldInfo

__all__ = ["TrainingState", "Built", "init_distributed", "set_seeds", "build_model", "build_optimizer",
           "build_scheduler", "destroy_distributed", "unwrap", "on_cpu"]

log = logging.getLogger(__name__)


def on_cpu() -> bool:
    """True when training runs on the CPU (no CUDA: gloo and the compatibility layer)."""
    return not torch.cuda.is_available()


@dataclass
class TrainingState:
    """What advances with training and goes into each checkpoint besides tensors."""

    iteration: int = 0
    consumed_train_samples: int = 0
    consumed_valid_samples: int = 0
    skipped_iterations: int = 0
    nan_iterations: int = 0


@dataclass
class Built:
    """The objects a run trains with."""

    model: list  # one DDP-wrapped chunk per virtual pipeline stage
    optimizer: Any
    scheduler: Any
    state: TrainingState
    forward_step: Optional[Callable] = None
    """A user's ``(data_iterator, model) -> (output, loss_func)`` replacing the built-in step."""


@dataclass
class StepState:
    """What a user forward step with a leading state argument receives
    (``forward_step(state, data_iterator, model)``, as Megatron-Bridge allows)."""

    cfg: Any
    """The finalized ConfigContainer of the run."""

    train_state: TrainingState
    """Iteration and consumed samples, updated as training goes."""


def init_distributed(cfg, world: WorldInfo) -> None:
    """torch.distributed (NCCL with CUDA, gloo without), then megatron-core's model-parallel groups.

    The timeout (``--dist.distributed_timeout_minutes``) bounds every collective, so a rank
    that dies leaves the others failing instead of hanging forever.
    """
    from megatron.core import parallel_state

    backend = cfg.dist.distributed_backend or ("gloo" if on_cpu() else "nccl")
    timeout = datetime.timedelta(minutes=cfg.dist.distributed_timeout_minutes)
    if not on_cpu():
        torch.cuda.set_device(world.local_rank)
    if not torch.distributed.is_initialized() and not cfg.dist.lazy_init:
        if world.world_size == 1 and world.launcher == "single":
            # One process needs no rendezvous: an in-memory store, no port to collide on.
            store = torch.distributed.HashStore()
            torch.distributed.init_process_group(backend, store=store, rank=0, world_size=1, timeout=timeout)
        else:
            os.environ.setdefault("MASTER_ADDR", world.master_addr)
            os.environ.setdefault("MASTER_PORT", str(world.master_port))
            from megatron_bridge_cli.training.fault_tolerance import restart_store

            store = restart_store(world.rank, world.world_size, timeout)  # a restarted attempt: fresh keys
            torch.distributed.init_process_group(
                backend, init_method=None if store else "env://", store=store, rank=world.rank,
                world_size=world.world_size, timeout=timeout,
            )
    m = cfg.model
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=m.tensor_model_parallel_size,
        pipeline_model_parallel_size=m.pipeline_model_parallel_size,
        virtual_pipeline_model_parallel_size=m.virtual_pipeline_model_parallel_size,
        pipeline_model_parallel_comm_backend=m.pipeline_model_parallel_comm_backend,
        context_parallel_size=m.context_parallel_size,
        hierarchical_context_parallel_sizes=m.hierarchical_context_parallel_sizes,
        expert_model_parallel_size=m.expert_model_parallel_size,
        expert_tensor_parallel_size=m.expert_tensor_parallel_size,
        num_distributed_optimizer_instances=cfg.ddp.num_distributed_optimizer_instances,
        distributed_timeout_minutes=cfg.dist.distributed_timeout_minutes,
        create_gloo_process_groups=cfg.dist.use_gloo_process_groups,
    )


def destroy_distributed() -> None:
    """Tear down megatron-core's groups and the default process group (idempotent)."""
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def set_seeds(cfg) -> None:
    """Megatron-LM's seeding: seed + 100 x pipeline rank (+ 10 x DP rank with
    data_parallel_random_init) for Python, NumPy and torch; the model-parallel RNG tracker
    forks its tensor-parallel stream from it."""
    from megatron.core import parallel_state, tensor_parallel

    seed = cfg.rng.seed + 100 * parallel_state.get_pipeline_model_parallel_rank()
    if cfg.rng.data_parallel_random_init:
        seed += 10 * parallel_state.get_data_parallel_rank()
    random.seed(seed)
    numpy.random.seed(seed)
    torch.manual_seed(seed)
    tensor_parallel.model_parallel_cuda_manual_seed(
        seed,
        # Either spelling asks for the tracker (Megatron-LM's --te-rng-tracker sets the model's).
        te_rng_tracker=cfg.rng.te_rng_tracker or cfg.model.use_te_rng_tracker,
        inference_rng_tracker=cfg.rng.inference_rng_tracker or cfg.model.inference_rng_tracker,
    )


def unwrap(chunk):
    """The GPTModel inside DDP / Float16Module wrappers."""
    while hasattr(chunk, "module") and not hasattr(chunk, "decoder"):
        chunk = chunk.module
    return chunk


def build_model(cfg) -> list:
    """One model chunk per virtual pipeline stage, wrapped for mixed precision and DDP."""
    from megatron.core import parallel_state, tensor_parallel
    from megatron.core.distributed import DistributedDataParallel
    from megatron.core.transformer.module import Float16Module

    provider = cfg.model
    vp = provider.virtual_pipeline_model_parallel_size
    chunks = []
    for vp_stage in range(vp or 1):
        chunk = provider.provide(vp_stage=vp_stage if vp else None)
        if cfg.peft is not None:  # adapters in, base frozen: before DDP, which skips frozen params
            from megatron_bridge_cli.training.peft import apply_peft

            apply_peft(cfg, chunk)
        for param in chunk.parameters():
            tensor_parallel.set_defaults_if_not_set_tensor_model_parallel_attributes(param)
        chunks.append(chunk)
    if parallel_state.get_data_parallel_rank() == 0:
        n = sum(p.numel() for c in chunks for p in c.parameters())
        print(
            f" > number of parameters on (tensor, pipeline) model parallel rank "
            f"({parallel_state.get_tensor_model_parallel_rank()}, "
            f"{parallel_state.get_pipeline_model_parallel_rank()}): {n}"
            + (f" ({sum(p.numel() for c in chunks for p in c.parameters() if p.requires_grad)} trainable: "
               f"--peft)" if cfg.peft is not None else ""),
            flush=True,
        )
    if not on_cpu():
        chunks = [c.cuda(torch.cuda.current_device()) for c in chunks]
    if provider.fp16 or provider.bf16:
        chunks = [Float16Module(provider, c) for c in chunks]
    wrapped = [
        DistributedDataParallel(
            config=provider,
            ddp_config=cfg.ddp,
            module=c,
            # Later chunks' gradients are ready only at the end of the pipeline flush: one bucket.
            disable_bucketing=i > 0,
        )
        for i, c in enumerate(chunks)
    ]
    if cfg.rng.data_parallel_random_init:
        for w in wrapped:
            w.broadcast_params()
    return wrapped


def build_optimizer(cfg, model: list):
    """megatron-core optimizer (incl. the distributed optimizer) and the schedule hooks."""
    from megatron.core.distributed import finalize_model_grads
    from megatron.core.optimizer import get_megatron_optimizer

    from megatron_bridge_cli.training.metrics import make_timers

    # --logger.timing_log_level: megatron-core's schedules, gradient reduction and optimizer time
    # their phases on the Timers they find in these configs (None at level 0: nothing is timed).
    timers = make_timers(cfg.logger.timing_log_level)
    cfg.optimizer.timers = timers
    optimizer = get_megatron_optimizer(cfg.optimizer, model, use_gloo_process_groups=cfg.dist.use_gloo_process_groups)
    config = cfg.model  # the TransformerConfig every chunk holds (get_model_config(model[0]))
    config.grad_scale_func = optimizer.scale_loss
    config.finalize_model_grads_func = finalize_model_grads
    config.timers = timers
    if cfg.ddp.overlap_grad_reduce:
        no_sync = [m.no_sync for m in model]
        config.no_sync_func = no_sync[0] if len(model) == 1 else no_sync
        if getattr(cfg.ddp, "align_grad_reduce", True):
            sync = [m.start_grad_sync for m in model]
            config.grad_sync_func = sync[0] if len(model) == 1 else sync
    if cfg.ddp.overlap_param_gather and getattr(cfg.ddp, "align_param_gather", False):
        sync = [m.start_param_sync for m in model]
        config.param_sync_func = sync[0] if len(model) == 1 else sync
    return optimizer


def build_scheduler(cfg, optimizer):
    """OptimizerParamScheduler stepped by global batch size (lengths in samples, as derived)."""
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    s, o = cfg.scheduler, cfg.optimizer
    return OptimizerParamScheduler(
        optimizer,
        init_lr=s.lr_warmup_init,
        max_lr=o.lr,
        min_lr=o.min_lr,
        lr_warmup_steps=s.lr_warmup_steps,
        lr_decay_steps=s.lr_decay_steps,
        lr_decay_style=s.lr_decay_style,
        start_wd=o.weight_decay if s.start_weight_decay is None else s.start_weight_decay,
        end_wd=o.weight_decay if s.end_weight_decay is None else s.end_weight_decay,
        wd_incr_steps=s.wd_incr_steps,
        wd_incr_style=s.weight_decay_incr_style,
        use_checkpoint_opt_param_scheduler=s.use_checkpoint_opt_param_scheduler,
        override_opt_param_scheduler=s.override_opt_param_scheduler,
        wsd_decay_steps=s.wsd_decay_steps,
        lr_wsd_decay_style=s.lr_wsd_decay_style,
    )
