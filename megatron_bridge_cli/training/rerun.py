"""megatron-core's rerun state machine as the training loop drives it (--rerun_state_machine).

Modes (ours -> megatron-core's ``RerunMode``):

    disabled          DISABLED: each step runs once; the loss checks raise (NaN/Inf) or warn (spike).
    validate_results  VALIDATE_RESULTS: a step whose loss fails a check is run again on the same
                      micro-batches (``RerunDataIterator`` replays them) from the same RNG states:
                      - the result differs (a transient fault): a non-fatal check (spiky loss)
                        goes on with the rerun's gradients; a fatal one (NaN/Inf) saves a
                        checkpoint and exits EXIT_CODE_FAILED_ON_RESULT_VALIDATION (17);
                      - it reproduces: a non-fatal check goes on; a fatal one saves a checkpoint
                        holding the machine's state and exits EXIT_CODE_RESUME_TO_DISAMBIGUATE
                        (16): resumed on another node, the step runs a third time and the job
                        exits 17 (a persistent fault, or a correct result: the data or the
                        model diverges); resumed on the same node it exits 16 again.
                      The first step of a process is not validated by megatron-core (no
                      checkpoint can be taken before an optimizer step): its NaN raises as in
                      disabled mode.
    report_stats      REPORT_DETERMINISM_STATS: every step runs twice and the relative difference
                      of each checked value between the runs is gathered; rank 0 prints a
                      ``determinism stats`` line every --logger.log_interval iterations.
                      NaN/Inf still stop the run as in disabled mode.

Error injection (--rerun_state_machine.error_injection_rate/type) is megatron-core's
``RerunErrorInjector``: each check of a step that has none injected yet is rejected when
``(randint(0, rate - 1) + rank) % rate == 0``; rate 1 rejects the first check of the first
validated step (the process's second) on every rank, which makes it deterministic for tests.
"""

from __future__ import annotations

import logging
import os
from typing import Optional

import torch

__all__ = ["MODES", "init_rerun_state_machine", "wrap_iterators", "rerun_decision", "checkpoint_state",
           "restore_from_checkpoint"]

MODES = {"disabled": "DISABLED", "validate_results": "VALIDATE_RESULTS", "report_stats": "REPORT_DETERMINISM_STATS"}
"""--rerun_state_machine.rerun_mode -> the name of megatron-core's RerunMode member."""

_KEY = "rerun_state_machine"  # its key in a checkpoint (Megatron-LM's)


def _machine_class():
    from megatron.core.rerun_state_machine import QuickStats, RerunStateMachine

    class Machine(RerunStateMachine):
        """megatron-core's machine with its determinism report as one printed line (rank 0).

        0.16.1's own ``_maybe_report_stats`` reads ``caller.filename`` (a field ``Caller`` does
        not have: AttributeError on rank 0) and logs at INFO, which bridge-train keeps quiet."""

        def _maybe_report_stats(self) -> None:
            if self.current_iteration % self.REPORTING_INTERVAL_ITERATIONS != 0:
                return
            world, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
            gathered = [None] * world if rank == 0 else None
            torch.distributed.gather_object(dict(self.stats), gathered, dst=0)
            if rank == 0:
                parts = []
                for message in sorted({c.message for s in gathered for c in s}):
                    total = QuickStats()
                    total.combine([st for s in gathered for c, st in s.items() if c.message == message])
                    parts.append(f"{message}: {total.print_stats()}")
                print(f"determinism stats at iteration {self.current_iteration} ({world} ranks, each step run "
                      f"twice) | {' | '.join(parts) or 'nothing checked'}", flush=True)
            for stats in self.stats.values():
                stats.reset()  # each line covers the iterations since the one before

    return Machine


def _tracker_states():
    """megatron-core's model-parallel RNG tracker states (dropout in TP regions): megatron-core
    saves the default generators itself but not these, and a rerun must draw the same masks."""
    from megatron.core import tensor_parallel

    return {"tracker": tensor_parallel.get_cuda_rng_tracker().get_states()}


def _set_tracker_states(saved) -> None:
    from megatron.core import tensor_parallel

    tensor_parallel.get_cuda_rng_tracker().set_states(saved["tracker"])


def init_rerun_state_machine(cfg) -> None:
    """megatron-core's rerun state machine (a process-wide singleton) in --rerun_state_machine's
    mode, replacing any earlier one. megatron-core's own checks (DDP's --ddp.check_for_nan_in_grad)
    and the loop's loss checks go through it."""
    from megatron.core import rerun_state_machine as rsm_mod
    from megatron.core.rerun_state_machine import RerunDiagnostic, RerunErrorInjector, RerunMode

    r = cfg.rerun_state_machine
    rsm_mod.destroy_rerun_state_machine()
    rsm_log = logging.getLogger("megatron.core.rerun_state_machine")
    level = rsm_log.level
    rsm_log.setLevel(logging.ERROR)  # its "initialized in mode ..." notice is a WARNING on every run
    try:
        machine = _machine_class()(
            state_save_func=_tracker_states, state_restore_func=_set_tracker_states,
            mode=RerunMode[MODES[r.rerun_mode]],
            error_injector=RerunErrorInjector(r.error_injection_rate, RerunDiagnostic(r.error_injection_type)),
        )
    finally:
        rsm_log.setLevel(level)
    logger = getattr(cfg, "logger", None)
    machine.REPORTING_INTERVAL_ITERATIONS = max(1, getattr(logger, "log_interval", 1) or 1)
    rsm_mod._set_rerun_state_machine(machine)  # megatron-core's initializer builds only its own class


def wrap_iterators(iterators: list) -> list:
    """The train iterators (one per model chunk, None where a chunk reads no data) wrapped in
    megatron-core's ``RerunDataIterator``, which keeps a step's micro-batches to replay them;
    unchanged when the machine is disabled (it never replays then, and a user's forward step
    keeps the iterator it had)."""
    from megatron.core.rerun_state_machine import RerunDataIterator, RerunMode, get_rerun_state_machine

    if get_rerun_state_machine().get_mode() == RerunMode.DISABLED:
        return iterators
    return [it if it is None or isinstance(it, RerunDataIterator) else RerunDataIterator(it) for it in iterators]


_WHAT = {
    16: ("the rerun on the same data reproduced it, so this node may be faulty or the result correct "
         "(EXIT_CODE_RESUME_TO_DISAMBIGUATE): resume the job from the checkpoint on another node, where the "
         "step runs once more and the job exits 17 whatever it finds; resumed on the same node it exits 16 again"),
    17: ("the rerun on the same data did not reproduce it (a transient fault of this node), or, resumed on another "
         "node, the third run settled it (EXIT_CODE_FAILED_ON_RESULT_VALIDATION): examine the node; to train on "
         "regardless, resume with --rerun_state_machine.rerun_mode=disabled"),
}


def rerun_decision(iteration: int, exit_code: int, asked_checkpoint: bool, saved_at: Optional[int]) -> str:
    """The one-paragraph message of a run that the machine stops with ``exit_code`` (collective):
    names the step, the ranks whose check failed, the checkpoint and what the code means."""
    from megatron.core.rerun_state_machine import get_rerun_state_machine

    rsm = get_rerun_state_machine()
    call = rsm.failed_validation_call
    mine = [torch.distributed.get_rank()] if call is not None else []
    failed = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(failed, (mine, call.caller.message if call is not None else None))
    ranks = sorted(r for m, _ in failed for r in m)
    messages = sorted({msg for _, msg in failed if msg})
    where = (f"saved a checkpoint at iteration {saved_at} (the step before it, now the latest)" if saved_at is not None
             else "no checkpoint saved (--checkpoint.save is not set)" if asked_checkpoint
             else "the checkpoint this run resumed from stays the latest")
    return (f"rerun state machine: iteration {iteration}, rank{'s' if len(ranks) != 1 else ''} "
            f"{', '.join(map(str, ranks)) or '?'}: the loss check failed ({'; '.join(messages) or 'unknown'}); "
            f"{_WHAT[exit_code]}; {where}; exiting with code {exit_code}")


def checkpoint_state() -> Optional[dict]:
    """What a checkpoint holds of the machine: its state when the step is to be rerun from this
    checkpoint (megatron-core's ``state_dict``), else None. Only that state is saved: one taken
    in the middle of an in-place rerun (Megatron-LM saves it too) would resume into a branch that
    restores RNG states the checkpoint does not hold."""
    from megatron.core.rerun_state_machine import RerunState, get_rerun_state_machine

    rsm = get_rerun_state_machine()
    if rsm.state != RerunState.WILL_RERUN_FROM_CHECKPOINT:
        return None
    return rsm.state_dict(None, "torch_dist")


def restore_from_checkpoint(cfg, path: Optional[str]) -> None:
    """Load the machine's state from the checkpoint at ``path`` (what load_checkpoint loaded) if it
    holds one (a step to rerun): only on a resume (--checkpoint.load, not finetune or pretrained
    weights); with --rerun_state_machine.rerun_mode=disabled the step trains normally."""
    from megatron.core import dist_checkpointing
    from megatron.core.rerun_state_machine import RerunMode, get_rerun_state_machine

    rsm, ck = get_rerun_state_machine(), cfg.checkpoint
    if path is None or not os.path.isfile(os.path.join(path, "metadata.json")):
        return  # nothing loaded, or not a dist checkpoint (a HuggingFace folder's base weights)
    if not ck.load or ck.finetune or not os.path.realpath(path).startswith(os.path.realpath(ck.load)):
        return  # weights only (--checkpoint.finetune, pretrained_checkpoint, a --peft run's base)
    common = dist_checkpointing.load_common_state_dict(path)
    if _KEY not in common or not rsm.validate_state_dict(common[_KEY]):
        return
    if rsm.get_mode() == RerunMode.DISABLED:
        if torch.distributed.get_rank() == 0:
            print(f"rerun state machine: the checkpoint holds iteration {common[_KEY]['current_iteration']} to rerun; "
                  "--rerun_state_machine.rerun_mode=disabled trains it normally", flush=True)
        return
    template = {_KEY: rsm.state_dict(None, "torch_dist", force=True)}
    loaded = dist_checkpointing.load(template, path)
    rsm.load_state_dict(loaded[_KEY])
