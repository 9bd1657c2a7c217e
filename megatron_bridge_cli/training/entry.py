"""``run_training(cfg)``: the one function the CLI hands a merged ConfigContainer to.

parse (CLI) -> finalize + validate -> process groups -> build -> load -> train -> save -> close.
Configuration mistakes raise ConfigError before any process-group work, so every rank fails
the same way at once and the CLI prints the message once and exits 2.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings

import torch

from megatron_bridge_cli.config.finalize import finalize
from megatron_bridge_cli.errors import ConfigError
from megatron_bridge_cli.training.env import detect_world

__all__ = ["run_training"]


# Sections the config validates but this training loop does not act on yet. Training on while
# ignoring them would silently do something else than asked (e.g. full finetuning for --peft).
_NOT_YET_DRIVEN = ("peft", "profiling", "ft", "straggler", "nvrx_straggler", "inprocess_restart")


def _refuse_undriven_sections(cfg) -> None:
    asked = [f"--{name}" for name in _NOT_YET_DRIVEN if getattr(cfg, name) is not None]
    if cfg.rerun_state_machine.rerun_mode != "disabled":
        asked.append("--rerun_state_machine.rerun_mode")
    if asked:
        raise ConfigError(
            f"{', '.join(asked)}: configured and validated, but the training loop does not apply "
            "it yet; remove it (e.g. --peft=null) to train without it"
        )


def _preflight(cfg) -> None:
    """Checks that need the file system, not just the config (still before process groups)."""
    _refuse_undriven_sections(cfg)
    from megatron_bridge_cli.data.datasets import check_data_paths
    from megatron_bridge_cli.training.checkpointing import check_load_paths

    check_data_paths(cfg)
    check_load_paths(cfg)
    if cfg.model.pipeline_model_parallel_size > 1 and cfg.train.micro_batch_size != (
        cfg.train.eval_micro_batch_size or cfg.train.micro_batch_size
    ):
        raise ConfigError(
            "--train.eval_micro_batch_size must equal --train.micro_batch_size with pipeline parallelism "
            "(the pipeline's tensor shapes are fixed at setup)"
        )


def _quiet_libraries() -> None:
    """Keep the console to the lines users read: megatron-core's INFO chatter and the
    'TE/Apex not installed' warnings (the local spec is the documented choice) stay out."""
    logging.getLogger("megatron").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*Transformer Engine and Apex are not installed.*")
    warnings.filterwarnings("ignore", message=".*Apex is not installed.*")
    warnings.filterwarnings("ignore", category=FutureWarning, module="megatron")


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


def run_training(cfg) -> int:
    """Train the run ``cfg`` describes (an unfinalized ConfigContainer); return the exit code.

    0 when training ends normally or stops on exit_interval / exit_duration_in_mins / the exit
    signal (after saving a checkpoint). ConfigError propagates before any process-group work.
    Runtime failures raise; under torchrun that ends the whole job with a non-zero exit.
    """
    _whole_lines()
    world = detect_world()
    final = finalize(cfg, world.world_size)
    _preflight(final)
    _quiet_libraries()
    from megatron_bridge_cli.data.tokenizers import build_tokenizer

    tokenizer = build_tokenizer(final.tokenizer, final.model.vocab_size)  # may raise ConfigError

    from megatron_bridge_cli.data.datasets import build_datasets, build_iterators
    from megatron_bridge_cli.training import setup as S
    from megatron_bridge_cli.training.checkpointing import Checkpointer, load_checkpoint
    from megatron_bridge_cli.training.loop import train
    from megatron_bridge_cli.training.metrics import Reporter

    if S.on_cpu():
        from megatron_bridge_cli.training.cpu_compat import apply_cpu_compat

        apply_cpu_compat()
    t0 = time.time()
    S.init_distributed(final, world)
    reporter = checkpointer = None
    try:
        from megatron.core import parallel_state as ps

        S.set_seeds(final)
        model = S.build_model(final)
        optimizer = S.build_optimizer(final, model)
        scheduler = S.build_scheduler(final, optimizer)
        built = S.Built(model=model, optimizer=optimizer, scheduler=scheduler, state=S.TrainingState())
        load_checkpoint(final, built)

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
        torch.distributed.barrier()
        if torch.distributed.get_rank() == 0:
            print(f"setup done in {time.time() - t0:.1f}s; training {final.train.total_iters} iterations "
                  f"(TP={final.model.tensor_model_parallel_size} PP={final.model.pipeline_model_parallel_size} "
                  f"VP={final.model.virtual_pipeline_model_parallel_size or 1} DP={final.train.data_parallel_size}, "
                  f"{final.train.num_microbatches} micro-batches of {final.train.micro_batch_size})", flush=True)
        train(final, built, data, reporter, checkpointer)
        checkpointer.close()
        torch.distributed.barrier()
        return 0
    finally:
        if reporter is not None:
            reporter.close()
        sys.stdout.flush()
        S.destroy_distributed()
