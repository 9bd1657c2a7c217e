"""``run_training(cfg)``: the one function the CLI hands a merged ConfigContainer to.

parse (CLI) -> finalize + validate -> process groups -> build -> load -> train -> save -> close.
Configuration mistakes raise ConfigError before any process-group work, so every rank fails
the same way at once and the CLI prints the message once and exits 2.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import sys
import time
import warnings

import torch

from megatron_bridge_cli.errors import ConfigError, RunFailure
from megatron_bridge_cli.training.env import detect_world
from megatron_bridge_cli.training.launch import LAUNCHER_PID_ENV, take_descendants_along
from megatron_bridge_cli.training.preflight import prepare

__all__ = ["run_training"]


def _quiet_libraries(rank: int) -> None:
    """Keep the console to the lines users read: megatron-core's INFO chatter and the
    'TE/Apex not installed' warnings (the local spec is the documented choice) stay out, and
    every other notice appears once, from rank 0 (training/notices.py). Called before finalize,
    so that its notices are folded too."""
    from megatron_bridge_cli.training.notices import show_notices_once

    logging.getLogger("megatron").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*Transformer Engine and Apex are not installed.*")
    warnings.filterwarnings("ignore", message=".*Apex is not installed.*")
    warnings.filterwarnings("ignore", category=FutureWarning, module="megatron")
    # torch's deprecation of the collectives megatron-core calls: nothing a user can act on.
    warnings.filterwarnings("ignore", category=FutureWarning, message=r"`torch\.distributed\.\w+` is deprecated")
    if not torch.cuda.is_available():  # a CUDA tuning hint (async TP all-reduce): meaningless on CPU
        warnings.filterwarnings("ignore", message=".*CUDA_DEVICE_MAX_CONNECTIONS.*")
    show_notices_once(rank)


def _whole_lines() -> None:
    """Make every line this process prints reach stdout/stderr in one write() call.

    The ranks of a job share one pipe or file. Unbuffered (python -u, PYTHONUNBUFFERED, as
    torchrun and job scripts often run), print() writes the text and its newline separately, so
    another rank's line can land in between and split a log line that people and job scripts
    parse (seen in CI: an iteration line lost after another rank's parameter-count line). Line
    buffering without write-through flushes each whole line at once; one write of under
    PIPE_BUF bytes is atomic on a pipe."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(line_buffering=True, write_through=False)


def _user_step(forward_step_func, state):
    """The user's forward step as the schedule calls it: ``(data_iterator, model)``, binding a
    leading state argument (``(state, data_iterator, model)``) when it takes one."""
    if forward_step_func is None:
        return None
    positional = [p for p in inspect.signature(forward_step_func).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
    if len(positional) == 2:
        return forward_step_func
    if len(positional) == 3:
        return functools.partial(forward_step_func, state)
    raise ConfigError(
        f"forward_step_func {getattr(forward_step_func, '__name__', forward_step_func)!r} takes "
        f"{len(positional)} arguments; it must take (data_iterator, model) or (state, data_iterator, model)"
    )


_PEER_LOST = ("timed out", "timeout", "connection closed by peer", "connection reset by peer", "broken pipe")


@contextlib.contextmanager
def _peers_named(final):
    """A collective that fails because another rank died or hangs says so in one paragraph
    (exit 1) instead of gloo's/NCCL's traceback; other errors pass through unchanged."""
    try:
        yield
    except RuntimeError as e:  # DistBackendError is a RuntimeError
        text = str(e).lower()
        if not any(phrase in text for phrase in _PEER_LOST):
            raise
        first = str(e).strip().splitlines()[0][:300]
        raise RunFailure(
            f"rank {torch.distributed.get_rank()}: a collective with the other ranks failed ({first}); another "
            f"rank has died or hangs (its own message says why), or took longer than "
            f"--dist.distributed_timeout_minutes={final.dist.distributed_timeout_minutes}"
        ) from None


def run_training(cfg, forward_step_func=None) -> int:
    """Train the run ``cfg`` describes (an unfinalized ConfigContainer); return the exit code.

    0 when training ends normally or stops on exit_interval / exit_duration_in_mins / the exit
    signal (after saving a checkpoint). ConfigError propagates before any process-group work.
    Runtime failures raise; under torchrun that ends the whole job with a non-zero exit.
    ``forward_step_func`` replaces the built-in forward step (see training/api.py).
    """
    from megatron_bridge_cli.training import fault_tolerance as ft

    if cfg.inprocess_restart is not None and not ft.in_attempt():  # each attempt runs this function again
        from megatron_bridge_cli.training.inprocess import run_with_inprocess_restart

        return run_with_inprocess_restart(cfg, run_training, forward_step_func)
    _whole_lines()
    world = detect_world()
    if world.launcher == "torchrun" and not os.environ.get(LAUNCHER_PID_ENV):
        # under plain torchrun (bridge-train's own workers did this already): checkpoint writer
        # processes must not outlive a SIGKILLed worker
        take_descendants_along(regroup=False)
    _quiet_libraries(world.rank)
    ft.check_launcher(cfg)
    ft.resume_on_restart(cfg)  # a restarted job continues from its own latest checkpoint
    final = prepare(cfg, world.world_size)
    from megatron_bridge_cli.data.tokenizers import build_tokenizer

    tokenizer = build_tokenizer(final.tokenizer, final.model.vocab_size)  # may raise ConfigError

    from megatron_bridge_cli.data.datasets import build_datasets, build_iterators
    from megatron_bridge_cli.training import setup as S
    from megatron_bridge_cli.training.checkpointing import Checkpointer, load_checkpoint
    from megatron_bridge_cli.training.loop import RerunExit, train
    from megatron_bridge_cli.training.rerun import init_rerun_state_machine, restore_from_checkpoint
    from megatron_bridge_cli.training.metrics import Reporter

    if S.on_cpu():
        from megatron_bridge_cli.training.cpu_compat import apply_cpu_compat

        apply_cpu_compat()
    t0 = time.time()
    S.init_distributed(final, world)
    reporter = checkpointer = None
    finished = False
    try:
        ft.activate(final)  # heartbeats to ft_launcher's rank monitor (--ft)
        from megatron.core import parallel_state as ps

        S.set_seeds(final)
        model = S.build_model(final)
        optimizer = S.build_optimizer(final, model)
        scheduler = S.build_scheduler(final, optimizer)
        state = S.TrainingState()
        built = S.Built(model=model, optimizer=optimizer, scheduler=scheduler, state=state,
                        forward_step=_user_step(forward_step_func, S.StepState(final, state)))
        init_rerun_state_machine(final)  # once per run, before a checkpoint may give it a step to rerun
        restore_from_checkpoint(final, load_checkpoint(final, built))

        vp = final.model.virtual_pipeline_model_parallel_size or 1
        chunk_needs = [
            ps.is_pipeline_first_stage(ignore_virtual=False, vp_stage=i) or ps.is_pipeline_last_stage(ignore_virtual=False, vp_stage=i)
            for i in range(vp)
        ] if vp > 1 else [ps.is_pipeline_first_stage() or ps.is_pipeline_last_stage()]
        datasets = build_datasets(final, tokenizer, needs_data=any(chunk_needs))
        data = build_iterators(
            final, datasets, chunk_needs, built.state.consumed_train_samples, built.state.consumed_valid_samples,
            ps.get_data_parallel_rank(), ps.get_data_parallel_world_size(),
        )
        reporter = Reporter(final, cfg)
        checkpointer = Checkpointer(final, cfg)
        ft.started()
        torch.distributed.barrier()
        if torch.distributed.get_rank() == 0:
            print(f"setup done in {time.time() - t0:.1f}s; training {final.train.total_iters} iterations "
                  f"(TP={final.model.tensor_model_parallel_size} PP={final.model.pipeline_model_parallel_size} "
                  f"VP={final.model.virtual_pipeline_model_parallel_size or 1} DP={final.train.data_parallel_size}, "
                  f"{final.train.num_microbatches} micro-batches of {final.train.micro_batch_size})", flush=True)
        with _peers_named(final):
            try:
                train(final, built, data, reporter, checkpointer)
                rc = 0
            except RerunExit as stop:  # the rerun state machine's verdict: its exit code (training/rerun.py)
                rc = stop.exit_code
            checkpointer.close()
            torch.distributed.barrier()
        finished = rc == 0
        if finished and final.checkpoint.save_hf and torch.distributed.get_rank() == 0:
            from megatron_bridge_cli.hf.export import export_after_run

            export_after_run(final)  # --checkpoint.save_hf: the final checkpoint as a HuggingFace folder
        return rc
    finally:
        ft.deactivate(finished)
        if reporter is not None:
            reporter.close()
        sys.stdout.flush()
        S.destroy_distributed()
