"""``--inprocess_restart``: run training inside nvidia-resiliency-ext's in-process restart wrapper.

A fault on any rank (an exception, e.g. a collective failing because a peer faulted) ends the
attempt on every rank: each tears down its process groups (run_training's own cleanup), the
wrapper's barrier brings the healthy ranks together, and the training function runs again in
the same processes, resuming from the latest checkpoint in --checkpoint.save
(fault_tolerance.resume_on_restart counts the wrapper's attempts). No process is relaunched.

Needs CUDA/NCCL (validation refuses it otherwise: config/resilience_checks.py). Probed with
nvidia-resiliency-ext 0.4.1 over gloo on CPU, 2 ranks under torchrun: a bare all-reduce loop
restarts fine (the faulted rank's process group is destroyed, the peer's collective fails with
"Connection closed by peer", both re-enter). A bridge-train job did not: after one rank raised,
its peer never came back from the step it was in until the wrapper's hard_timeout terminated it
(the wrapper's abort, AbortTorchDistributed, aborts NCCL backends only; also calling gloo's
``abort()`` on every group, on both sides, did not release it). Each attempt's default process
group rendezvouses on the wrapper's store under a prefix of its own. What in-process restart
cannot do is bring back a rank whose process died or hangs: a killed rank is gone, and a hung
one is terminated after --inprocess_restart.hard_timeout; those are the launcher's job (--max-restarts, --ft).
"""

from __future__ import annotations

import copy
import datetime
import gc
import os
import socket
import traceback
from typing import Callable, Optional

from megatron_bridge_cli.config.resilience import InProcessRestartConfig
from megatron_bridge_cli.config.validation import parallel_product

__all__ = ["run_with_inprocess_restart"]


def rank_assignment(ip: InProcessRestartConfig, model_parallel: int):
    """Which ranks train after a fault (nvidia-resiliency-ext's topology ``Tree``).

    --inprocess_restart.granularity=node drops a whole node when one of its ranks faults (its
    ranks are a layer keyed by host name that needs all LOCAL_WORLD_SIZE of them healthy), rank
    drops just the rank. At most --inprocess_restart.active_world_size ranks train, the others
    wait as spares that replace a dropped rank; the number that trains is always a multiple of
    the model-parallel size (TP x PP x CP), so the layout still divides the world.
    """
    from nvidia_resiliency_ext.inprocess.rank_assignment import Layer, LayerFlag, Tree

    layers = [Layer(min_ranks=model_parallel, max_ranks=ip.active_world_size, key_or_fn="root",
                    flag=LayerFlag.RESERVE)]
    if ip.granularity == "node":
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        layers.append(Layer(min_ranks=per_node, max_ranks=per_node, key_or_fn=lambda _: socket.gethostname(),
                            flag=LayerFlag.RESERVE))
    return Tree(layers, world_size_filter=lambda n: n // model_parallel * model_parallel)


def _wrapper(ip: InProcessRestartConfig, on_cpu: bool, model_parallel: int):
    import nvidia_resiliency_ext.inprocess as inprocess

    def s(seconds: float) -> datetime.timedelta:
        return datetime.timedelta(seconds=seconds)

    return inprocess.Wrapper(
        initialize=inprocess.initialize.RetryController(max_iterations=ip.max_iterations),
        rank_assignment=rank_assignment(ip, model_parallel),
        health_check=None if on_cpu else inprocess.health_check.CudaHealthCheck(),
        soft_timeout=s(ip.soft_timeout), hard_timeout=s(ip.hard_timeout),
        heartbeat_interval=s(ip.heartbeat_interval), heartbeat_timeout=s(ip.heartbeat_timeout),
        barrier_timeout=s(ip.barrier_timeout), completion_timeout=s(ip.completion_timeout),
        monitor_process_interval=s(ip.monitor_process_interval),
    )


def run_with_inprocess_restart(cfg, run: Callable[..., int], forward_step_func=None) -> Optional[int]:
    """``run(cfg_copy, forward_step_func)`` under the wrapper, once per attempt, until one finishes."""
    import torch
    import nvidia_resiliency_ext.inprocess as inprocess

    from megatron_bridge_cli.training import fault_tolerance as ft

    ip = cfg.inprocess_restart

    def attempt(call_wrapper: Optional[inprocess.CallWrapper] = None) -> int:
        n = call_wrapper.iteration
        ft._inprocess_attempt = n  # resume_on_restart and the simulated fault read it
        ft._attempt_store = torch.distributed.PrefixStore(f"bridge_train_inprocess_{n}", call_wrapper.base_store)
        if n and torch.distributed.is_initialized():  # aborted attempt left it (normally run's cleanup did)
            torch.distributed.destroy_process_group()
        if n and ft._rank0():
            print(f"inprocess_restart: attempt {n} (after a fault), in the same processes", flush=True)
        try:
            return run(copy.deepcopy(cfg), forward_step_func)
        except BaseException as e:
            # Free what the failed attempt built (the traceback's frames hold the model, its DDP
            # buckets and through them the process groups): a gloo group's connections close only
            # when its last reference goes, and that is what tells a peer blocked in a collective
            # with this rank to give up and restart too.
            traceback.clear_frames(e.__traceback__)
            gc.collect()
            raise

    # the wrapper finds the parameter to pass itself in by its annotation: a class, not a string
    attempt.__annotations__ = {"call_wrapper": Optional[inprocess.CallWrapper], "return": int}

    if ip.empty_cuda_cache and torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        return _wrapper(ip, not torch.cuda.is_available(), parallel_product(cfg.model))(attempt)()
    finally:
        ft._inprocess_attempt, ft._attempt_store = 0, None
