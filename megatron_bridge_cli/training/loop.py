"""The training loop: megatron-core forward-backward schedules, optimizer and scheduler steps,
periodic evaluation, checkpoints and exit conditions.

One step (Megatron-LM's ``train_step``): zero the DDP gradient buffers, run the schedule
``get_forward_backward_func()`` picks for this layout (no pipelining, 1F1B, or interleaved
1F1B with virtual stages) over ``num_microbatches`` micro-batches, ``optimizer.step()``
(gradient clipping, loss scaling and the distributed optimizer's all-gather inside), then the
scheduler by ``global_batch_size`` samples. The loss function returns ``[sum of token losses,
token count]`` per micro-batch, so the reported loss is the exact per-token mean over the
global batch whatever the data-parallel size.

Around the model's forward step (GPT and T5 alike, ``_guarded_step``): Megatron-LM's loss
checks through megatron-core's rerun state machine (--rerun_state_machine.check_for_nan_in_loss
/ check_for_spiky_loss). ``train_step`` runs the forward-backward pass inside the machine's
``while should_run_forward_backward(iterators)`` loop (Megatron-LM's ``train_step``), the train
iterators wrapped in ``RerunDataIterator``: once when disabled; again on the same micro-batches
and RNG states when --rerun_state_machine.rerun_mode=validate_results rejects a loss; twice per
step in report_stats. When ``should_checkpoint_and_exit`` says stop (a NaN/Inf settled in
validate_results), the step is not applied: ``RerunExit`` makes the loop save a checkpoint of
the iteration before, print which iteration and ranks failed, and ``run_training`` return the
machine's exit code (16 or 17; training/rerun.py). Evaluation runs with the machine disabled. ``model.enable_autocast`` (--mixed_precision.autocast_enabled) runs the
pass under torch.autocast on CPU (``_cpu_autocast``; on CUDA megatron-core's schedule does it).
``--logger.timing_log_level`` 1 and 2 print megatron-core's per-phase timers after each log
line; ``--logger.log_params_norm`` adds the parameters' L2 norm to it.

Around each step, hooks that never change what a step computes: ``--profiling`` records the
window ``[profile_step_start, profile_step_end)`` (training/profiling.py), ``--straggler`` times
the step on every rank and prints the per-rank comparison (training/straggler.py), and
``--nvrx_straggler`` runs it inside nvidia-resiliency-ext's detection section
(training/nvrx_straggler.py; its stop_if_detected ends the run as an exit condition does).
"""

from __future__ import annotations

import contextlib
import gc
import math
import signal
import time
import warnings
from functools import partial
from typing import Optional

import torch

from megatron_bridge_cli.errors import RunFailure
from megatron_bridge_cli.training import fault_tolerance as ft_hooks
from megatron_bridge_cli.training.checkpointing import Checkpointer
from megatron_bridge_cli.training.metrics import (
    Reporter,
    eval_log_line,
    num_floating_point_operations,
    params_norm,
    peak_memory_mb,
    timers_text,
    training_log_line,
)
from megatron_bridge_cli.training.moe_losses import reduce_moe_losses
from megatron_bridge_cli.training.setup import Built, on_cpu, unwrap

__all__ = ["train", "evaluate", "ExitSignal", "NonFiniteLoss", "RerunExit"]

SPIKY_LOSS_FACTOR = 10
"""A loss this many times the largest of the first 100 checked is a spike (Megatron-LM's pretrain_gpt)."""


class NonFiniteLoss(RunFailure, RuntimeError):
    """The loss of a micro-batch was NaN or Inf and --rerun_state_machine.check_for_nan_in_loss is on."""


class RerunExit(Exception):
    """megatron-core's rerun state machine stops the run before this step's optimizer update
    (``should_checkpoint_and_exit``): ``exit_code`` is its EXIT_CODE_*, ``checkpoint`` whether to
    save one first. The loop saves and reports; run_training returns the code."""

    def __init__(self, exit_code: int, checkpoint: bool):
        super().__init__(exit_code)
        self.exit_code, self.checkpoint = exit_code, checkpoint


class ExitSignal:
    """Remembers that the exit signal arrived; the loop acts on it between iterations."""

    def __init__(self, sig: signal.Signals):
        self.sig, self.received = sig, False
        self._previous = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.received = True

    def restore(self) -> None:
        signal.signal(self.sig, self._previous)


# --------------------------------------------------------------------------- one micro-batch
def _to_device(batch: dict) -> dict:
    if on_cpu():
        return batch
    return {k: v.cuda(non_blocking=True) for k, v in batch.items()}


def loss_func(loss_mask: torch.Tensor, output_tensor: torch.Tensor):
    """Token-summed loss, token count, and ``[sum, count]`` for reporting (Megatron-LM's form)."""
    from megatron.core import parallel_state as ps

    losses = output_tensor.float().view(-1)
    mask = loss_mask.view(-1).float()
    total = torch.stack([torch.sum(losses * mask), mask.sum()])
    if ps.get_context_parallel_world_size() > 1:
        torch.distributed.all_reduce(total, group=ps.get_context_parallel_group())
    num_tokens = total[1].clone().detach().to(torch.int)
    return total[0].clone(), num_tokens, {"lm loss": total.clone().detach()}


def forward_step(data_iterator, model):
    """Read a micro-batch (only the chunks that embed tokens or compute the loss read one) and
    run the model chunk on it."""
    gpt = unwrap(model)
    batch = None
    if (gpt.pre_process or gpt.post_process) and data_iterator is not None:
        timers = gpt.config.timers
        with _timed(timers, "batch-generator", 2):
            batch = _to_device(next(data_iterator))
        if gpt.config.context_parallel_size > 1:
            from megatron.core.utils import get_batch_on_this_cp_rank

            batch = get_batch_on_this_cp_rank(batch)  # this rank's share of the sequence
    tokens = batch["tokens"] if batch is not None and gpt.pre_process else None
    position_ids = batch["position_ids"] if batch is not None and gpt.pre_process else None
    labels = batch["labels"] if batch is not None and gpt.post_process else None
    attention_mask = batch.get("attention_mask") if batch is not None else None
    output = model(tokens, position_ids, attention_mask, labels=labels)
    loss_mask = batch["loss_mask"] if batch is not None and gpt.post_process else None
    return output, partial(loss_func, loss_mask)


def _timed(timers, name: str, level: int):
    """megatron-core timer ``name`` around a block (nothing when timing is off)."""
    if timers is None:
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def timed():
        timers(name, log_level=level).start()
        try:
            yield
        finally:
            timers(name).stop()

    return timed()


def guard_loss(loss: torch.Tensor, rerun_cfg) -> None:
    """Megatron-LM's checks of a micro-batch's local loss (``pretrain_gpt.loss_func``), through
    megatron-core's rerun state machine: in its 'disabled' mode ``validate_result`` rejects,
    raising on NaN/Inf and warning on a spike; in 'validate_results' a rejected loss marks the
    step for a rerun (NaN/Inf fatal, a spike not), in 'report_determinism_stats' every loss is
    recorded for comparison with the rerun's (training/rerun.py)."""
    from megatron.core.rerun_state_machine import RerunMode, get_rerun_state_machine

    rsm = get_rerun_state_machine()
    # A copy: the schedule divides the returned loss in place afterwards, which would change the
    # value the machine keeps to compare with a rerun's.
    loss = loss.detach().clone()
    # Where megatron-core records without rejecting (report_stats) or does not validate yet (the
    # first step of a process in validate_results), a NaN/Inf stops the run as in disabled mode.
    mode = rsm.get_mode()
    direct = mode == RerunMode.REPORT_DETERMINISM_STATS or (
        mode == RerunMode.VALIDATE_RESULTS and not rsm.first_iteration_complete)
    if rerun_cfg.check_for_nan_in_loss:
        for reject, what in ((torch.isnan, "NaN"), (torch.isinf, "Inf")):
            try:
                if direct and bool(reject(loss)):
                    raise RuntimeError(what)
                rsm.validate_result(result=loss, rejection_func=reject, tolerance=0.0, fatal=True,
                                    message=f"found {what} in local forward loss calculation")
            except RuntimeError:
                raise NonFiniteLoss(
                    f"rank {torch.distributed.get_rank()}, iteration {rsm.current_iteration}: the loss is {what} "
                    "(checked by --rerun_state_machine.check_for_nan_in_loss); lower --optimizer.lr or "
                    "--optimizer.clip_grad, check the data, or resume from an earlier checkpoint"
                ) from None
    if rerun_cfg.check_for_spiky_loss:
        rsm.validate_result(
            result=loss, tolerance=0.0, fatal=False, message="Spiky loss",
            rejection_func=partial(rsm.is_unexpectedly_large, threshold=SPIKY_LOSS_FACTOR, context="loss"),
        )


def _guarded_step(step, cfg):
    """``step`` with its loss function's result checked (guard_loss)."""
    rerun = cfg.rerun_state_machine
    if not (rerun.check_for_nan_in_loss or rerun.check_for_spiky_loss):
        return step

    def checked_loss(loss_fn):
        def loss_with_checks(*args, **kwargs):
            result = loss_fn(*args, **kwargs)
            guard_loss(result[0], rerun)
            return result

        return loss_with_checks

    def wrapped(data_iterator, model):
        output, loss_fn = step(data_iterator, model)
        return output, checked_loss(loss_fn)

    return wrapped


def _cpu_autocast(cfg):
    """torch.autocast on CPU for model.enable_autocast (--mixed_precision.autocast_enabled).

    On CUDA megatron-core's schedule autocasts each forward step, and its linear layers'
    backward re-enters that autocast (``custom_bwd``). Both are tied to the "cuda" device, so
    on CPU the whole forward-backward pass runs under CPU autocast instead: the same casts."""
    m = cfg.model
    if m.enable_autocast and on_cpu():
        # torch's note that a bf16 input to an fp32-weight norm takes the unfused kernel: expected here
        warnings.filterwarnings("ignore", message=".*Mismatch dtype between input and weight.*")
        return torch.autocast("cpu", dtype=m.autocast_dtype)
    return contextlib.nullcontext()


def _reduce_losses(losses_reduced: list) -> Optional[float]:
    """Per-token mean loss of the global batch (on the last stage; None elsewhere)."""
    from megatron.core import parallel_state as ps

    if not losses_reduced or not ps.is_pipeline_last_stage(ignore_virtual=True):
        return None
    total = torch.stack([_sum_count(d) for d in losses_reduced]).sum(dim=0)
    torch.distributed.all_reduce(total, group=ps.get_data_parallel_group(with_context_parallel=True))
    return (total[0] / total[1].clamp(min=1)).item()


# --------------------------------------------------------------------------- train / eval steps
def _step_for(cfg, built: Built):
    """The forward step (the user's, or the model kind's) and the (encoder, decoder) lengths
    the schedule is told."""
    from megatron_bridge_cli.config.models import T5ModelProvider

    d = cfg.dataset
    if isinstance(cfg.model, T5ModelProvider):  # validation pairs it with --dataset=t5
        from megatron_bridge_cli.training.t5_step import forward_step as t5_forward_step

        return _users(built.forward_step) or t5_forward_step, d.sample_length, d.decoder_sample_length
    return _users(built.forward_step) or forward_step, d.sample_length, d.sample_length


def _users(step):
    """A user's forward step whose reported values are copied as its loss function returns
    them: megatron-core divides the returned loss in place (by the micro-batch count), which
    would change a reported ``loss.detach()`` (a view of it) too."""
    if step is None:
        return None

    def copying_loss(loss_fn):
        def loss_with_copies(*args, **kwargs):
            *head, reported = loss_fn(*args, **kwargs)
            copies = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in reported.items()}
            return (*head, copies)

        return loss_with_copies

    def wrapped(data_iterator, model):
        output, loss_fn = step(data_iterator, model)
        return output, copying_loss(loss_fn)

    return wrapped


def _sum_count(reported: dict) -> torch.Tensor:
    """A micro-batch's reported loss ("lm loss", else the first entry) as ``[sum, count]``: the
    built-in steps report that pair; a user's loss function may report a plain (averaged)
    value, which counts once."""
    value = reported["lm loss"] if "lm loss" in reported else next(iter(reported.values()))
    value = torch.as_tensor(value).detach().float().reshape(-1)
    if value.numel() == 2:
        return value
    return torch.stack([value.mean(), torch.ones((), dtype=value.dtype, device=value.device)])


def _run_schedule(cfg, built: Built, iterators: list, forward_backward, num_microbatches: int,
                  micro_batch_size: int, forward_only: bool):
    """One pass of megatron-core's pipeline schedule over ``num_microbatches`` micro-batches."""
    step, seq_length, decoder_seq_length = _step_for(cfg, built)
    with _cpu_autocast(cfg):
        return forward_backward(
            forward_step_func=_guarded_step(step, cfg),
            data_iterator=iterators if len(iterators) > 1 else iterators[0],  # one per model chunk
            model=built.model,
            num_microbatches=num_microbatches,
            seq_length=seq_length,
            micro_batch_size=micro_batch_size,
            decoder_seq_length=decoder_seq_length,
            forward_only=forward_only,
        )


def train_step(cfg, built: Built, iterators: list, forward_backward, iteration: int):
    """One optimizer step; returns (loss, update successful, grad norm, zeros in grads)."""
    from megatron.core.rerun_state_machine import RerunState, get_rerun_state_machine

    t = cfg.train
    rsm = get_rerun_state_machine()
    if rsm.state == RerunState.NOT_RUNNING_YET:  # (not when resumed to rerun a step: the checkpoint names it)
        rsm.current_iteration = iteration  # the machine counts it up to the step's number: its messages name it
    # Once, or again on the same micro-batches and RNG states (training/rerun.py): a failed check
    # in validate_results, every step in report_stats.
    while rsm.should_run_forward_backward(iterators):
        for chunk in built.model:
            chunk.zero_grad_buffer()
        built.optimizer.zero_grad()
        losses = _run_schedule(cfg, built, iterators, forward_backward, t.num_microbatches, t.micro_batch_size,
                               forward_only=False)
    should_checkpoint, should_exit, exit_code = rsm.should_checkpoint_and_exit()  # (False, False, 0): go on
    if should_exit:
        raise RerunExit(exit_code, should_checkpoint)
    with _timed(cfg.model.timers, "optimizer", 1):
        update_successful, grad_norm, num_zeros = built.optimizer.step()
    if update_successful:
        built.scheduler.step(increment=t.global_batch_size)
    return _reduce_losses(losses), update_successful, grad_norm, num_zeros


def evaluate(cfg, built: Built, iterators: list, forward_backward) -> Optional[float]:
    """Mean loss over ``eval_iters`` batches (forward only); None off the last stage."""
    from megatron.core import parallel_state as ps

    t = cfg.train
    eval_mbs = t.eval_micro_batch_size or t.micro_batch_size
    for chunk in built.model:
        chunk.eval()
    totals = []
    timers, cfg.model.timers = cfg.model.timers, None  # the timers report training phases (as Megatron-LM's)
    from megatron.core.rerun_state_machine import RerunMode, get_rerun_state_machine

    rsm = get_rerun_state_machine()
    rerun_mode, rsm.mode = rsm.mode, RerunMode.DISABLED  # evaluation is not rerun (as in Megatron-LM)
    try:
        with torch.no_grad():
            for _ in range(t.eval_iters):
                out = _run_schedule(cfg, built, iterators, forward_backward, t.eval_num_microbatches, eval_mbs,
                                    forward_only=True)
                if out and ps.is_pipeline_last_stage(ignore_virtual=True):
                    totals.append(torch.stack([_sum_count(d) for d in out]).sum(dim=0))
    finally:
        cfg.model.timers = timers
        rsm.mode = rerun_mode
    for chunk in built.model:
        chunk.train()
    if not totals:
        return None
    total = torch.stack(totals).sum(dim=0)
    torch.distributed.all_reduce(total, group=ps.get_data_parallel_group(with_context_parallel=True))
    return (total[0] / total[1].clamp(min=1)).item()


def _report_eval(cfg, reporter: Reporter, prefix: str, loss: Optional[float], iteration: int, tag: str) -> None:
    if loss is None:
        return
    reporter.print("-" * 100)
    reporter.print(eval_log_line(prefix, loss))
    reporter.print("-" * 100)
    reporter.scalars({f"lm loss {tag}": loss, f"lm loss {tag} ppl": math.exp(min(20.0, loss))}, iteration)


# --------------------------------------------------------------------------- the loop
def _all_ranks_agree(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any rank (so all ranks stop together)."""
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device="cpu" if on_cpu() else "cuda")
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item())


def _timer() -> float:
    if not on_cpu():
        torch.cuda.synchronize()
    return time.perf_counter()


def train(cfg, built: Built, data, reporter: Reporter, checkpointer: Checkpointer) -> str:
    """Train until a stop condition; returns why it stopped ('done', 'exit_interval',
    'exit_duration', 'signal', 'straggler')."""
    from megatron.core import parallel_state as ps
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from megatron_bridge_cli.training.nvrx_straggler import NVRxStragglers
    from megatron_bridge_cli.training.profiling import StepProfiler
    from megatron_bridge_cli.training.rerun import rerun_decision, wrap_iterators
    from megatron_bridge_cli.training.straggler import StragglerReporter

    t, lg, ck, st = cfg.train, cfg.logger, cfg.checkpoint, built.state
    data.train = wrap_iterators(data.train)  # a step's micro-batches replayable (the rerun state machine)
    forward_backward = get_forward_backward_func()
    flops_per_iter = num_floating_point_operations(cfg, t.global_batch_size)
    tokens_per_iter = t.global_batch_size * cfg.dataset.sample_length
    world = torch.distributed.get_world_size()
    exit_signal = ExitSignal(t.exit_signal) if t.exit_signal_handler else None
    if t.manual_gc:
        gc.disable()
        gc.collect()
    start = time.time()
    interval_start, interval_iters, reported_memory = _timer(), 0, False
    timers, timed_iters = cfg.model.timers, 0  # megatron-core Timers (build_optimizer), None at level 0
    stop = "done"
    for chunk in built.model:
        chunk.train()
    rank = torch.distributed.get_rank()
    profiler, stragglers, nvrx = StepProfiler(cfg, rank), StragglerReporter(cfg, rank, world), NVRxStragglers(cfg, rank)
    try:
        while st.iteration < t.total_iters and not t.skip_train:
            profiler.step(st.iteration + 1)  # the log's number of the iteration about to run
            ft_hooks.before_iteration(st.iteration + 1)  # --ft.simulate_fault
            stragglers.begin()
            try:
                with nvrx.section():
                    loss, ok, grad_norm, num_zeros = train_step(cfg, built, data.train, forward_backward, st.iteration)
            except RerunExit as rerun:  # the step is not applied: a checkpoint holds the iteration before it
                if rerun.checkpoint and ck.save:
                    checkpointer.save(built)
                message = rerun_decision(st.iteration + 1, rerun.exit_code, rerun.checkpoint,
                                         st.iteration if rerun.checkpoint and ck.save else None)
                print_rank0(message)
                raise
            aux_losses = reduce_moe_losses(cfg)  # MoE router losses (collective; {} when dense)
            st.iteration += 1
            ft_hooks.after_iteration()  # heartbeat to ft_launcher's rank monitor (--ft)
            stragglers.end(st.iteration)  # collective every --straggler.report_interval iterations
            nvrx.after_step(st.iteration)
            st.consumed_train_samples += t.global_batch_size
            st.skipped_iterations += 0 if ok else 1
            if loss is not None and not math.isfinite(loss):
                st.nan_iterations += 1
            interval_iters += 1
            timed_iters += 1
            if t.manual_gc and t.manual_gc_interval and st.iteration % t.manual_gc_interval == 0:
                gc.collect()

            if st.iteration % lg.log_interval == 0 or st.iteration % lg.tensorboard_log_interval == 0:
                now = _timer()
                iter_s = (now - interval_start) / interval_iters
                lr = built.optimizer.param_groups[0]["lr"]
                scale = float(built.optimizer.get_loss_scale())
                # Collective over the model-parallel ranks, which all get here at the same iteration.
                p_norm = params_norm(built.model, moe=bool(cfg.model.num_moe_experts)) if lg.log_params_norm else None
                if st.iteration % lg.tensorboard_log_interval == 0:
                    values = {
                        "learning-rate": lr, "batch-size": t.global_batch_size, "loss-scale": scale,
                        "iteration-time": iter_s, "throughput/tokens-per-sec": tokens_per_iter / iter_s,
                        "throughput/tflops-per-gpu": flops_per_iter / (iter_s * world * 1e12),
                    }
                    if loss is not None:
                        values["lm loss"] = loss
                        values.update(aux_losses)
                    if grad_norm is not None:
                        values["grad-norm"] = grad_norm
                    if num_zeros is not None:
                        values["num-zeros"] = num_zeros
                    if p_norm is not None:
                        values["params-norm"] = p_norm
                    if lg.log_memory:
                        values.update(peak_memory_mb())
                    reporter.scalars(values, st.iteration)
                if st.iteration % lg.log_interval == 0:
                    reporter.print(training_log_line(
                        iteration=st.iteration, total_iters=t.total_iters, consumed=st.consumed_train_samples,
                        iter_ms=iter_s * 1000,
                        tokens_per_s=tokens_per_iter / iter_s if lg.log_throughput else None,
                        tflops_per_gpu=flops_per_iter / (iter_s * world * 1e12) if lg.log_throughput else None,
                        lr=lr, global_batch=t.global_batch_size, loss=loss, aux_losses=aux_losses, loss_scale=scale,
                        grad_norm=grad_norm, skipped=st.skipped_iterations, nan=st.nan_iterations,
                        num_zeros=num_zeros, params_norm=p_norm,
                    ))
                    if timers is not None:  # collective: every rank logs at the same iterations
                        text = timers_text(timers, timed_iters)
                        if text:
                            reporter.print(text)
                        timed_iters = 0
                    if lg.log_memory and not reported_memory:
                        reported_memory = True
                        # one line per model-parallel rank (the data-parallel replicas hold the same), as Megatron-LM
                        if ps.get_data_parallel_rank(with_context_parallel=True) == 0:
                            mem = " | ".join(f"{k}: {v:.1f}" for k, v in peak_memory_mb().items())
                            print(f"[Rank {torch.distributed.get_rank()}] (after {st.iteration} iterations) "
                                  f"memory | {mem} |", flush=True)
                    interval_start, interval_iters = _timer(), 0

            if data.has_valid and t.eval_interval and st.iteration % t.eval_interval == 0:
                loss_v = evaluate(cfg, built, data.valid, forward_backward)
                st.consumed_valid_samples += t.eval_iters * (t.eval_global_batch_size or t.global_batch_size)
                _report_eval(cfg, reporter, f"iteration {st.iteration}", loss_v, st.iteration, "validation")
                interval_start, interval_iters = _timer(), 0

            checkpointer.poll()
            saved = False
            if ck.save and ck.save_interval and st.iteration % ck.save_interval == 0:
                checkpointer.save(built)
                saved = True
                ft_hooks.after_save()  # heartbeat; --ft.calc_ft_timeouts learns and saves the timeouts
                interval_start, interval_iters = _timer(), 0
            # Exit conditions: every rank decides the same way (collectives follow).
            if exit_signal is not None and _all_ranks_agree(exit_signal.received):
                stop = "signal"
            elif t.exit_duration_in_mins and _all_ranks_agree((time.time() - start) / 60 > t.exit_duration_in_mins):
                stop = "exit_duration"
            elif t.exit_interval and st.iteration % t.exit_interval == 0:
                stop = "exit_interval"
            elif nvrx.stop_requested:  # --nvrx_straggler.stop_if_detected (agreed by all ranks)
                stop = "straggler"
            if stop != "done":
                if ck.save and not saved:
                    checkpointer.save(built)
                    saved = True
                print_rank0(f"exiting after iteration {st.iteration} ({stop.replace('_', ' ')})")
                return stop

        if ck.save and st.iteration > 0 and not (ck.save_interval and st.iteration % ck.save_interval == 0):
            checkpointer.save(built)
    finally:
        profiler.close()
        stragglers.close()
        nvrx.close()
        if exit_signal is not None:
            exit_signal.restore()
        if t.manual_gc:
            gc.enable()

    if data.has_valid:
        loss_v = evaluate(cfg, built, data.valid, forward_backward)
        _report_eval(cfg, reporter, f"iteration {st.iteration} on validation set", loss_v, st.iteration, "validation")
    if data.has_test:
        loss_t = evaluate(cfg, built, data.test, forward_backward)
        _report_eval(cfg, reporter, f"iteration {st.iteration} on test set", loss_t, st.iteration, "test")
    return stop


def print_rank0(msg: str) -> None:
    if torch.distributed.get_rank() == 0:
        print(msg, flush=True)
