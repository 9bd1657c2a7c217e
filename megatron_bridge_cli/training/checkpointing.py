"""Checkpoints with megatron-core dist_checkpointing (torch_dist), Megatron-LM's folder layout.

    SAVE/
      latest_checkpointed_iteration.txt     "20": written last, atomically
      iter_0000020/                         dist_checkpointing files + run_config.yaml

A checkpoint is written into ``iter_0000020.tmp`` and renamed once every rank has finished, and
only then does the tracker file move forward (write to a temporary name, ``os.replace``). A crash
mid-save therefore leaves the previous checkpoint as the latest one. ``run_config.yaml`` inside
each checkpoint is the user's (unfinalized) configuration: what reproduces the run.

What is saved: model chunks (``model`` or ``model0``, ``model1``, ... with virtual pipeline
stages), optimizer (the distributed optimizer as ``dp_reshardable``), scheduler, the RNG states
of each (pipeline, tensor) rank, and the data position (consumed samples). Tensors are sharded
with their global shapes, so a checkpoint loads under another TP/PP/DP layout; the distributed
optimizer's ``dp_reshardable`` state only under another DP size (load with
``--checkpoint.load_optim=false`` to change TP/PP/EP then); the other optimizers' state under
another expert-parallel size too (training/optim_layout.py). RNG states load only under the same
TP/PP layout (like Megatron-LM), since they belong to ranks.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from dataclasses import asdict
from typing import Optional

import numpy
import torch

from megatron_bridge_cli.errors import ConfigError
from megatron_bridge_cli.training.optim_layout import adopt_own_commons, optimizer_count, own_commons, saved_step
from megatron_bridge_cli.training.setup import Built, TrainingState, on_cpu, unwrap

__all__ = ["TRACKER", "checkpoint_dir_to_load", "check_load_paths", "save_checkpoint", "load_checkpoint",
           "Checkpointer", "iteration_dir"]

log = logging.getLogger(__name__)

TRACKER = "latest_checkpointed_iteration.txt"
RUN_CONFIG = "run_config.yaml"
FORMAT_VERSION = 1


def iteration_dir(root: str, iteration: int) -> str:
    return os.path.join(root, f"iter_{iteration:07d}")


def _read_tracker(root: str) -> Optional[int]:
    path = os.path.join(root, TRACKER)
    if not os.path.isfile(path):
        return None
    text = open(path).read().strip()
    return 0 if text == "release" else int(text)


def checkpoint_dir_to_load(root: Optional[str], step: Optional[int] = None) -> Optional[str]:
    """The checkpoint folder ``root`` points at (its latest, or iteration ``step``), or None."""
    if not root:
        return None
    if os.path.isfile(os.path.join(root, "metadata.json")):
        return root  # an iter_NNNNNNN folder itself
    if step is not None:
        path = iteration_dir(root, step)
        return path if os.path.isdir(path) else None
    it = _read_tracker(root)
    return None if it is None else iteration_dir(root, it)


def check_load_paths(cfg) -> None:
    """Config mistakes about what to load, raised before any process-group work."""
    ck = cfg.checkpoint
    if ck.load and checkpoint_dir_to_load(ck.load, ck.ckpt_step) is None:
        if ck.ckpt_step is not None:
            raise ConfigError(
                f"--checkpoint.ckpt_step={ck.ckpt_step}: {iteration_dir(ck.load, ck.ckpt_step)} does not exist"
            )
        if ck.exit_on_missing_checkpoint:
            raise ConfigError(
                f"--checkpoint.load={ck.load} holds no checkpoint ({TRACKER} is missing) and "
                f"--checkpoint.exit_on_missing_checkpoint is set"
            )
    if ck.pretrained_checkpoint and checkpoint_dir_to_load(ck.pretrained_checkpoint) is None:
        raise ConfigError(
            f"--checkpoint.pretrained_checkpoint={ck.pretrained_checkpoint} holds no checkpoint "
            f"(neither {TRACKER} nor an iter_NNNNNNN folder with metadata.json)"
        )


# --------------------------------------------------------------------------- state dicts
def _optim_metadata(cfg) -> dict:
    meta = {"chained_optim_avoid_prefix": True}
    if cfg.optimizer.use_distributed_optimizer:
        meta["distrib_optim_sharding_type"] = "dp_reshardable"
    return meta


def _rng_sharded_object(state: Optional[dict] = None):
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


def _restore_rng(state: dict) -> None:
    from megatron.core import tensor_parallel

    random.setstate(state["random"])
    numpy.random.set_state(state["np"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and not on_cpu():
        torch.cuda.set_rng_state(state["cuda"])
    tensor_parallel.get_cuda_rng_tracker().set_states(state["tracker"])


def _model_keys(model: list) -> list[str]:
    return ["model"] if len(model) == 1 else [f"model{i}" for i in range(len(model))]


def _layout(cfg) -> dict:
    m = cfg.model
    return {
        "tensor_model_parallel_size": m.tensor_model_parallel_size,
        "pipeline_model_parallel_size": m.pipeline_model_parallel_size,
        "virtual_pipeline_model_parallel_size": m.virtual_pipeline_model_parallel_size,
        "data_parallel_size": cfg.train.data_parallel_size,
        "expert_model_parallel_size": getattr(m, "expert_model_parallel_size", 1),
    }


def _fused_adam_available() -> bool:
    """Whether megatron-core's optimizer uses Apex/TE's fused Adam (its well-trodden load path)."""
    from megatron.core.optimizer import distrib_optimizer

    return bool(getattr(distrib_optimizer, "HAVE_APEX_OR_TE", False))


def _sharded_state_dict(cfg, built: Built, *, optim: bool, rng: bool, is_loading: bool) -> dict:
    sd = {key: unwrap(chunk).sharded_state_dict() for key, chunk in zip(_model_keys(built.model), built.model)}
    if optim:
        sd["optimizer"] = built.optimizer.sharded_state_dict(sd, is_loading=is_loading, metadata=_optim_metadata(cfg))
    if rng:
        sd["rng_state"] = _rng_sharded_object()
    return sd


# --------------------------------------------------------------------------- save
class Checkpointer:
    """Saves checkpoints (sync, or async where megatron-core supports it: CUDA builds)."""

    def __init__(self, cfg, user_cfg):
        self.cfg, self.user_cfg = cfg, user_cfg
        self.async_queue = None
        ck = cfg.checkpoint
        if ck.async_save:
            if on_cpu():
                # megatron-core's async writer divides by torch.cuda.device_count() (0 on CPU).
                _rank0_print("warning: --checkpoint.async_save needs CUDA; saving synchronously on CPU")
            else:
                from megatron.core.dist_checkpointing.strategies.async_utils import AsyncCallsQueue

                self.async_queue = AsyncCallsQueue()
        self._strategy = None

    def _save_strategy(self):
        from megatron.core import parallel_state as ps
        from megatron.core.dist_checkpointing.serialization import get_default_save_sharded_strategy
        from megatron.core.dist_checkpointing.strategies.fully_parallel import FullyParallelSaveStrategyWrapper

        if self._strategy is None:
            strategy = get_default_save_sharded_strategy("torch_dist")
            if self.cfg.checkpoint.fully_parallel_save and ps.get_data_parallel_world_size(with_context_parallel=True) > 1:
                strategy = FullyParallelSaveStrategyWrapper(
                    strategy, ps.get_data_parallel_group(with_context_parallel=True), do_cache_distribution=True
                )
            self._strategy = strategy
        return self._strategy

    def save(self, built: Built) -> None:
        """Write iteration ``built.state.iteration``; collective (every rank calls it)."""
        from megatron.core import dist_checkpointing

        cfg, ck, it = self.cfg, self.cfg.checkpoint, built.state.iteration
        root = ck.save
        final = iteration_dir(root, it)
        tmp = final + ".tmp"
        rank = torch.distributed.get_rank()
        if rank == 0:
            os.makedirs(root, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)  # left by a crash during an earlier save
            os.makedirs(tmp)
        torch.distributed.barrier()
        sd = _sharded_state_dict(cfg, built, optim=ck.save_optim, rng=ck.save_rng, is_loading=False)
        sd["opt_param_scheduler"] = built.scheduler.state_dict()
        sd["train_state"] = asdict(built.state)
        sd["checkpoint_meta"] = {
            "format_version": FORMAT_VERSION, "layout": _layout(cfg),
            "has_optimizer": ck.save_optim, "has_rng": ck.save_rng, "optimizers": optimizer_count(built.optimizer),
            "optimizer_metadata": _optim_metadata(cfg),
        }
        finish = lambda: self._commit(tmp, final, it)  # noqa: E731
        if self.async_queue is not None:
            request = dist_checkpointing.save(sd, tmp, self._save_strategy(), async_sharded_save=True)
            request.add_finalize_fn(finish)
            self.async_queue.schedule_async_request(request)
            return
        dist_checkpointing.save(sd, tmp, self._save_strategy())
        torch.distributed.barrier()
        finish()
        torch.distributed.barrier()
        _rank0_print(f"  successfully saved checkpoint at iteration {it:7d} to {root}")

    def _commit(self, tmp: str, final: str, iteration: int) -> None:
        """Rank 0: config inside, rename into place, then the tracker, then pruning."""
        if torch.distributed.get_rank() != 0:
            return
        self.user_cfg.to_yaml(os.path.join(tmp, RUN_CONFIG))
        if os.path.isdir(final):  # the same iteration saved again (e.g. after a resume)
            shutil.rmtree(final)
        os.replace(tmp, final)
        root = os.path.dirname(final)
        tracker_tmp = os.path.join(root, TRACKER + ".tmp")
        with open(tracker_tmp, "w") as f:
            f.write(str(iteration))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tracker_tmp, os.path.join(root, TRACKER))
        self._prune(root, iteration)

    def _prune(self, root: str, latest: int) -> None:
        k = self.cfg.checkpoint.most_recent_k
        if k is None or k < 0:
            return
        done = sorted(
            int(name[len("iter_"):]) for name in os.listdir(root)
            if name.startswith("iter_") and name[len("iter_"):].isdigit()
        )
        for it in done[: max(0, len(done) - max(k, 1))]:
            if it != latest:
                shutil.rmtree(iteration_dir(root, it), ignore_errors=True)

    def poll(self, blocking: bool = False) -> None:
        """Finish async saves that are done (all ranks must call it)."""
        if self.async_queue is not None:
            self.async_queue.maybe_finalize_async_calls(blocking=blocking)

    def close(self) -> None:
        if self.async_queue is not None:
            self.async_queue.maybe_finalize_async_calls(blocking=True)
            self.async_queue.close()
            self.async_queue = None


# --------------------------------------------------------------------------- load
def load_checkpoint(cfg, built: Built) -> Optional[str]:
    """Load what ``--checkpoint.load`` / ``pretrained_checkpoint`` name into ``built``.

    Resume (load): model, optimizer, scheduler, RNG, iteration and consumed samples.
    ``finetune`` or ``pretrained_checkpoint``: model weights only, from iteration 0.
    Returns the folder loaded, or None when starting from scratch.
    """
    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing.serialization import get_default_load_sharded_strategy
    from megatron.core.dist_checkpointing.strategies.fully_parallel import FullyParallelLoadStrategyWrapper
    from megatron.core import parallel_state as ps

    ck = cfg.checkpoint
    path = checkpoint_dir_to_load(ck.load, ck.ckpt_step)
    model_only = ck.finetune
    if path is None and ck.pretrained_checkpoint:
        path, model_only = checkpoint_dir_to_load(ck.pretrained_checkpoint), True
    if path is None:
        if ck.load:
            _rank0_print(f"no checkpoint in {ck.load}: training from scratch")
        return None
    common = dist_checkpointing.load_common_state_dict(path)
    meta = common.get("checkpoint_meta", {})
    saved = meta.get("layout", {})
    same_tp_pp = all(
        saved.get(k) == _layout(cfg)[k] for k in ("tensor_model_parallel_size", "pipeline_model_parallel_size")
    )
    load_optim = ck.load_optim and not model_only and meta.get("has_optimizer", True)
    same_ep = saved.get("expert_model_parallel_size", 1) == _layout(cfg)["expert_model_parallel_size"]
    if load_optim and cfg.optimizer.use_distributed_optimizer and not (same_tp_pp and same_ep):
        raise RuntimeError(
            f"{path} was saved with TP={saved.get('tensor_model_parallel_size')}, "
            f"PP={saved.get('pipeline_model_parallel_size')}, EP={saved.get('expert_model_parallel_size', 1)}; "
            f"the distributed optimizer's state reshards only across data-parallel sizes. Load with "
            f"--checkpoint.load_optim=false to change TP/PP/EP."
        )
    if load_optim and cfg.optimizer.use_distributed_optimizer and not _fused_adam_available():
        # megatron-core 0.16.1's DistributedOptimizer restores torch.optim.Adam state (the path
        # without Apex/TE) wrongly: state_dict() asserts on the lazily created 'step', and once
        # forced past that, the resumed losses drift from the uninterrupted run's. Refuse rather
        # than resume with a wrong optimizer state.
        raise ConfigError(
            f"resuming the distributed optimizer's state from {path} needs Transformer Engine or Apex "
            "(fused Adam; pip install '.[te]' on a GPU machine); without them, load the weights only with "
            "--checkpoint.load_optim=false, or train with --optimizer.use_distributed_optimizer=false"
        )
    load_rng = ck.load_rng and not model_only and meta.get("has_rng", True) and same_tp_pp
    if ck.load_rng and not model_only and not same_tp_pp:
        _rank0_print("note: the checkpoint's TP/PP layout differs from this run's: RNG states not restored")
    sd = _sharded_state_dict(cfg, built, optim=load_optim, rng=load_rng, is_loading=True)
    # Saved with another number of sub-optimizers (EP > 1 <-> EP = 1): see optim_layout.py.
    regroup = load_optim and meta.get("optimizers", optimizer_count(built.optimizer)) != optimizer_count(built.optimizer)
    commons = own_commons(sd["optimizer"]) if regroup else None
    strategy = None
    if ck.fully_parallel_load and ps.get_data_parallel_world_size(with_context_parallel=True) > 1:
        strategy = FullyParallelLoadStrategyWrapper(
            get_default_load_sharded_strategy(path), ps.get_data_parallel_group(with_context_parallel=True)
        )
    loaded = dist_checkpointing.load(sd, path, strategy, strict=ck.dist_ckpt_strictness)
    for key, chunk in zip(_model_keys(built.model), built.model):
        chunk.load_state_dict(loaded[key], strict=True)
    if load_optim:
        if regroup:
            loaded["optimizer"] = adopt_own_commons(loaded["optimizer"], commons, saved_step(common.get("optimizer")))
        built.optimizer.load_state_dict(loaded["optimizer"])
    else:
        built.optimizer.reload_model_params()  # main (fp32) params from the loaded weights
    if load_rng:
        _restore_rng(loaded["rng_state"])
    if not model_only:
        built.scheduler.load_state_dict(common["opt_param_scheduler"])
        built.state = TrainingState(**common["train_state"])
    torch.distributed.barrier()
    what = "model weights" if model_only else f"iteration {built.state.iteration}"
    _rank0_print(f"  loaded checkpoint {path} ({what})")
    return path


def _rank0_print(msg: str) -> None:
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        print(msg, flush=True)
