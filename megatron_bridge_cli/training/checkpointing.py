"""Checkpoints with megatron-core dist_checkpointing (torch_dist), Megatron-LM's folder layout.

    SAVE/
      latest_checkpointed_iteration.txt     "20": written last, atomically
      iter_0000020/                         dist_checkpointing files + run_config.yaml

Crash safety: every moment of a save leaves the tracker naming a complete checkpoint, and no
folder under a checkpoint's name is ever partial (the kill -9 chain of
tests/integration/test_crash_safety.py checks it):
- a checkpoint is written into ``iter_0000020.tmp``, its files flushed to disk, and renamed once
  every rank has finished (a save killed before that leaves a ``.tmp`` the next save removes);
- saved again under the same name (after loading an older one), it is swapped in by one
  atomic exchange of the two folders, since the tracker may name it;
- only then does the tracker move (written to a temporary name, fsynced, ``os.replace``);
- ``most_recent_k`` pruning first renames a folder out of the ``iter_`` namespace
  (``iter_0000010.deleting``), then deletes it.
``run_config.yaml`` inside each checkpoint is the user's (unfinalized) configuration: what
reproduces the run. Loading is checkpoint_load.py; what the files say, checkpoint_files.py.

What is saved (checkpoint_state.py): model chunks, optimizer (the distributed optimizer as
``dp_reshardable``), scheduler, the RNG states of each (pipeline, tensor) rank, and the data
position (consumed samples); and when the rerun state machine stops the run to have a step rerun
from the checkpoint, its state (megatron-core's ``state_dict``, training/rerun.py). Tensors are
sharded with their global shapes, so a checkpoint loads under another TP/PP/DP layout; the distributed optimizer's ``dp_reshardable`` state only under
another DP size (load with ``--checkpoint.load_optim=false`` to change TP/PP/EP then); the other
optimizers' state under another expert-parallel size too (training/optim_layout.py). RNG states
load only under the same TP/PP layout (like Megatron-LM), since they belong to ranks.

With --peft a checkpoint holds only the adapters and their optimizer state (the base weights
stay in --checkpoint.pretrained_checkpoint, loaded first on every start and resume);
``checkpoint_meta["peft"]`` names the adapter kind. scripts/merge_lora.py makes a full one.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import asdict
from typing import Optional

import torch

from megatron_bridge_cli.errors import ConfigError
from megatron_bridge_cli.training.checkpoint_files import (
    TRACKER, checkpoint_problems, iteration_dir, read_tracker, saved_iterations,
)
from megatron_bridge_cli.training.checkpoint_load import load_checkpoint
from megatron_bridge_cli.training.checkpoint_state import (
    FORMAT_VERSION, RUN_CONFIG, layout, optim_metadata, rank0_print, sharded_state_dict,
)
from megatron_bridge_cli.training.optim_layout import optimizer_count
from megatron_bridge_cli.training.rerun import checkpoint_state as rerun_checkpoint_state
from megatron_bridge_cli.training.setup import Built, on_cpu

__all__ = ["TRACKER", "checkpoint_dir_to_load", "checkpoint_problems", "check_load_paths", "load_checkpoint",
           "Checkpointer", "iteration_dir"]

log = logging.getLogger(__name__)


def checkpoint_dir_to_load(root: Optional[str], step: Optional[int] = None) -> Optional[str]:
    """The folder ``root`` points at (the tracker's iteration, or ``step``), or None; whether it
    can be loaded is checkpoint_problems' question (load_checkpoint goes through resolve)."""
    if not root:
        return None
    if os.path.isfile(os.path.join(root, "metadata.json")):
        return root  # an iter_NNNNNNN folder itself
    if step is not None:
        path = iteration_dir(root, step)
        return path if os.path.isdir(path) else None
    it = read_tracker(root)[1]
    return None if it is None else iteration_dir(root, it)


def check_load_paths(cfg) -> None:
    """checkpoint_problems(cfg) raised as one ConfigError (kept for callers of the old name)."""
    problems = checkpoint_problems(cfg)
    if problems:
        raise ConfigError(" ".join(problems) if len(problems) == 1 else "; ".join(problems))


# --------------------------------------------------------------------------- save
def _in_process_write_results() -> None:
    """Give megatron-core's checkpoint writer an in-process queue for its results (sync saves).

    Its default is a multiprocessing Manager queue, started with 'spawn' at the first save: a
    fresh interpreter per rank, which cost ~2.5 s per job on CPU and was a process of its own
    that outlived a SIGKILLed worker. It exists for async saves, whose writer runs in another
    process; a synchronous save writes and collects in this process, so a plain queue is
    enough. Where megatron-core has no such global (another version), nothing changes.
    """
    import queue

    from megatron.core.dist_checkpointing.strategies import filesystem_async

    if getattr(filesystem_async, "_results_queue", False) is None:
        filesystem_async._results_queue = queue.Queue()


class Checkpointer:
    """Saves checkpoints (sync, or async where megatron-core supports it: CUDA builds)."""

    def __init__(self, cfg, user_cfg):
        self.cfg, self.user_cfg = cfg, user_cfg
        self.async_queue = None
        ck = cfg.checkpoint
        if ck.async_save:
            if on_cpu():
                # megatron-core's async writer divides by torch.cuda.device_count() (0 on CPU).
                rank0_print("warning: --checkpoint.async_save needs CUDA; saving synchronously on CPU")
            else:
                from megatron.core.dist_checkpointing.strategies.async_utils import AsyncCallsQueue

                self.async_queue = AsyncCallsQueue()
        if self.async_queue is None:
            _in_process_write_results()
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
        if cfg.ddp.use_distributed_optimizer and cfg.ddp.overlap_param_gather:
            # The last step's parameter all-gather waits for the next forward (--comm_overlap):
            # finish it, or other ranks' shards would be saved as they were before the step.
            for chunk in built.model:
                chunk.start_param_sync(force_sync=True)
        root = ck.save
        final = iteration_dir(root, it)
        tmp = final + ".tmp"
        rank = torch.distributed.get_rank()
        if rank == 0:
            os.makedirs(root, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)  # left by a crash during an earlier save
            os.makedirs(tmp)
        torch.distributed.barrier()
        sd = sharded_state_dict(cfg, built, optim=ck.save_optim, rng=ck.save_rng, is_loading=False)
        sd["opt_param_scheduler"] = built.scheduler.state_dict()
        sd["train_state"] = asdict(built.state)
        rerun = rerun_checkpoint_state()  # a step the rerun state machine reruns on resume (training/rerun.py)
        if rerun is not None:
            sd["rerun_state_machine"] = rerun
        sd["checkpoint_meta"] = {
            "format_version": FORMAT_VERSION, "layout": layout(cfg),
            "has_optimizer": ck.save_optim, "has_rng": ck.save_rng, "optimizers": optimizer_count(built.optimizer),
            "optimizer_metadata": optim_metadata(cfg),
            "peft": type(cfg.peft).__name__ if cfg.peft is not None else None,  # adapters only
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
        rank0_print(f"  successfully saved checkpoint at iteration {it:7d} to {root}")

    def _commit(self, tmp: str, final: str, iteration: int) -> None:
        """Rank 0: config inside, rename into place, then the tracker, then pruning."""
        if torch.distributed.get_rank() != 0:
            return
        self.user_cfg.to_yaml(os.path.join(tmp, RUN_CONFIG))
        _fsync_tree(tmp)
        if os.path.isdir(final):  # the same iteration saved again (after loading an older one)
            _exchange(tmp, final)  # the tracker may name `final`: it must never be missing
            shutil.rmtree(tmp, ignore_errors=True)  # now the old copy
        else:
            os.replace(tmp, final)
        root = os.path.dirname(final)
        tracker_tmp = os.path.join(root, TRACKER + ".tmp")
        with open(tracker_tmp, "w") as f:
            f.write(str(iteration))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tracker_tmp, os.path.join(root, TRACKER))
        _fsync_dir(root)  # the renames themselves survive a power cut, not just a killed process
        self._prune(root, iteration)

    def _prune(self, root: str, latest: int) -> None:
        """Keep the newest ``most_recent_k``. Each old folder is first renamed out of the
        ``iter_NNNNNNN`` namespace (atomic), then deleted: a kill during the deletion leaves a
        ``.deleting`` folder (removed by the next prune), never a half-deleted checkpoint under a
        checkpoint's name."""
        for name in os.listdir(root):
            if name.endswith(".deleting"):
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)
        k = self.cfg.checkpoint.most_recent_k
        if k is None or k < 0:
            return
        done = sorted(i for i in saved_iterations(root) if i <= latest)
        for it in done[: max(0, len(done) - max(k, 1))]:
            if it != latest:
                doomed = iteration_dir(root, it) + ".deleting"
                os.replace(iteration_dir(root, it), doomed)
                shutil.rmtree(doomed, ignore_errors=True)

    def poll(self, blocking: bool = False) -> None:
        """Finish async saves that are done (all ranks must call it)."""
        if self.async_queue is not None:
            self.async_queue.maybe_finalize_async_calls(blocking=blocking)

    def close(self) -> None:
        if self.async_queue is not None:
            self.async_queue.maybe_finalize_async_calls(blocking=True)
            self.async_queue.close()
            self.async_queue = None


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems do not fsync folders
        pass
    finally:
        os.close(fd)


def _fsync_tree(path: str) -> None:
    """Flush a finished checkpoint's files to disk before it is renamed into place: after a
    power cut the tracker must not name a folder whose data never left the page cache."""
    for name in os.listdir(path):
        full = os.path.join(path, name)
        if os.path.isfile(full):
            fd = os.open(full, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    _fsync_dir(path)


def _exchange(a: str, b: str) -> None:
    """Swap two folders in one step (Linux renameat2 RENAME_EXCHANGE); where the system has no
    such call, b is moved aside, a put in its place, and the old b left under a's name."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        at_fdcwd, rename_exchange = -100, 2
        if libc.renameat2(at_fdcwd, a.encode(), at_fdcwd, b.encode(), rename_exchange) == 0:
            return
    except (OSError, AttributeError):  # no libc symbol (not Linux, or an old glibc)
        pass
    aside = b + ".old"
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(b, aside)
    os.replace(a, b)
    os.replace(aside, a)
