"""finalize(): the one step that derives every dependent value, then validates.

Layers (recipe < YAML < flags) and Python overrides only set user fields. finalize() works on
a deep copy, so the user's container keeps its own values and can be changed and finalized
again: derived values are always fresh, and finalizing a finalized container changes nothing.
Derived values go to ``init=False`` fields (no flag, not saved in YAML), except the ones
megatron-core derives itself in TransformerConfig/OptimizerConfig/DDPConfig ``__post_init__``.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from typing import Optional

import torch

from megatron_bridge_cli.config.moe_checks import derive_moe
from megatron_bridge_cli.config.precision import precision_assignments
from megatron_bridge_cli.config.range_checks import check_ranges
from megatron_bridge_cli.config.strict import relax
from megatron_bridge_cli.config.validation import (
    check_schedule,
    check_vocab,
    collect_problems,
    parallel_product,
)
from megatron_bridge_cli.errors import ValidationError

__all__ = ["finalize", "validate", "BYTE_LEVEL_VOCAB_SIZE"]

log = logging.getLogger(__name__)

BYTE_LEVEL_VOCAB_SIZE = 257
"""256 byte values plus end-of-document."""


def _set_unless_explicit(cfg, section: str, name: str, value, reason: str) -> None:
    """Set cfg.<section>.<name> unless the user set it explicitly; warn when they disagree."""
    obj = getattr(cfg, section)
    current = getattr(obj, name)
    if current == value:
        return
    path = f"{section}.{name}"
    if path in cfg.explicit_paths:
        log.warning("--%s=%s (explicit) overrides %s, which implies %s", path, current, reason, value)
        return
    setattr(obj, name, value)


def apply_mixed_precision(cfg) -> None:
    if cfg.mixed_precision is None:
        return
    for section, name, value in precision_assignments(cfg.mixed_precision):
        _set_unless_explicit(cfg, section, name, value, "the --mixed_precision settings")


def comm_overlap_from_layout(cfg, world_size: int) -> dict:
    """What --comm_overlap's unset (None) fields take from the layout, as Megatron-Bridge does:
    overlap the gradient reduce when there is data parallelism (DP > 1), the parameter all-gather
    too when the distributed optimizer shards them, and pipeline p2p under the interleaved
    schedule (which then sends unbatched). bucket_size stays megatron-core's."""
    m = cfg.model
    mp = parallel_product(m)
    if mp < 1 or world_size % mp:
        return {}  # reported by validation
    dp = world_size // mp
    interleaved = m.pipeline_model_parallel_size > 1 and bool(m.virtual_pipeline_model_parallel_size)
    return {"overlap_grad_reduce": dp > 1, "overlap_param_gather": dp > 1 and cfg.ddp.use_distributed_optimizer,
            "overlap_p2p_comm": interleaved, "batch_p2p_comm": False if interleaved else None}


def apply_comm_overlap(cfg, world_size: Optional[int] = None) -> None:
    """--comm_overlap's values into ddp/model (explicit --ddp.* / --model.* values win, with a
    warning); with ``world_size``, unset fields come from the layout (comm_overlap_from_layout)."""
    co = cfg.comm_overlap
    if co is None:
        return
    targets = {
        "overlap_grad_reduce": "ddp", "overlap_param_gather": "ddp", "bucket_size": "ddp",
        "overlap_p2p_comm": "model", "batch_p2p_comm": "model",
    }
    layout = comm_overlap_from_layout(cfg, world_size) if world_size is not None else {}
    for name, section in targets.items():
        value = getattr(co, name)
        if value is None:
            value = layout.get(name)
        if value is not None:
            _set_unless_explicit(cfg, section, name, value, f"--comm_overlap.{name}")
    for name in ("tp_comm_overlap", "defer_embedding_wgrad_compute"):
        _set_unless_explicit(cfg, "model", name, getattr(co, name), f"--comm_overlap.{name}")


def derive_parallelism(cfg, world_size: int) -> list[str]:
    m, problems = cfg.model, []
    if m.pipeline_model_parallel_size > 1 and m.pipeline_dtype is None:
        m.pipeline_dtype = m.params_dtype
    gloo = cfg.dist.distributed_backend == "gloo" or (
        cfg.dist.distributed_backend is None and not torch.cuda.is_available()
    )
    if gloo and m.virtual_pipeline_model_parallel_size and m.batch_p2p_comm:
        # Batched isend/irecv on gloo reorders messages of the interleaved schedule and silently
        # corrupts gradients; unbatched p2p is correct.
        if "model.batch_p2p_comm" in cfg.explicit_paths:
            problems.append("--model.batch_p2p_comm must be false for interleaved pipeline parallel on gloo")
        else:
            log.warning("setting --model.batch_p2p_comm=false: interleaved pipeline parallel on gloo needs it")
            m.batch_p2p_comm = False
    t = cfg.train
    t.data_parallel_size = world_size // parallel_product(m)
    t.num_microbatches = t.global_batch_size // (t.micro_batch_size * t.data_parallel_size)
    eval_gbs = t.eval_global_batch_size or t.global_batch_size
    eval_mbs = t.eval_micro_batch_size or t.micro_batch_size
    t.eval_num_microbatches = eval_gbs // (eval_mbs * t.data_parallel_size)
    return problems


def derive_run_length(cfg) -> None:
    """Total iterations and scheduler lengths, counted in samples as OptimizerParamScheduler does."""
    t, s, o = cfg.train, cfg.scheduler, cfg.optimizer
    gbs = t.global_batch_size
    if t.train_iters is not None:
        t.total_iters = t.train_iters
        s.lr_decay_steps = (s.lr_decay_iters or t.train_iters) * gbs
        s.wd_incr_steps = t.train_iters * gbs
        s.wsd_decay_steps = s.lr_wsd_decay_iters * gbs if s.lr_wsd_decay_iters is not None else None
        warmup = s.lr_warmup_iters * gbs
    else:
        t.total_iters = t.train_samples // gbs
        s.lr_decay_steps = s.lr_decay_samples or t.train_samples
        s.wd_incr_steps = t.train_samples
        s.wsd_decay_steps = s.lr_wsd_decay_samples
        warmup = s.lr_warmup_samples
    s.lr_warmup_steps = int(s.lr_warmup_fraction * s.lr_decay_steps) if s.lr_warmup_fraction is not None else warmup
    _fit_warmup(cfg)
    if o.min_lr is None:
        o.min_lr = 0.0  # OptimizerParamScheduler asserts min_lr is a number


_WARMUP_PATHS = ("scheduler.lr_warmup_iters", "scheduler.lr_warmup_samples", "scheduler.lr_warmup_fraction")


def _fit_warmup(cfg) -> None:
    """A recipe's warmup (set for a full-length run) that does not fit a short run becomes a
    tenth of the decay, so a 10-iteration smoke run of any recipe works. A warmup the user set
    explicitly is theirs: check_schedule reports it instead."""
    s, t = cfg.scheduler, cfg.train
    if s.lr_warmup_steps is None or s.lr_warmup_steps < s.lr_decay_steps or s.lr_decay_steps <= 0:
        return
    if any(p in cfg.explicit_paths for p in _WARMUP_PATHS):
        return
    if t.train_iters is not None:
        unit, old = "iters", s.lr_warmup_iters
        new = (s.lr_decay_steps // t.global_batch_size) // 10
        s.lr_warmup_iters, s.lr_warmup_steps = new, new * t.global_batch_size
    else:
        unit, old = "samples", s.lr_warmup_samples
        new = s.lr_decay_steps // 10
        s.lr_warmup_samples, s.lr_warmup_steps = new, new
    if s.lr_warmup_fraction is not None:
        unit, old = "fraction", s.lr_warmup_fraction
        s.lr_warmup_fraction = None
    log.warning("the recipe's warmup (--scheduler.lr_warmup_%s=%s) does not fit this run's learning-rate decay; "
                "warming up for %s %s instead (set it explicitly to choose)", unit, old, new,
                "iterations" if t.train_iters is not None else "samples")


def derive_vocab_and_data(cfg, tokenizer_vocab_size: Optional[int] = None) -> None:
    m, tok = cfg.model, cfg.tokenizer
    if m.vocab_size is None:
        if tokenizer_vocab_size is not None:  # read from the tokenizer's files by the caller
            m.vocab_size = tokenizer_vocab_size
        elif tok.tokenizer_type == "ByteLevelTokenizer":
            m.vocab_size = BYTE_LEVEL_VOCAB_SIZE + tok.added_tokens()  # + T5 special tokens
        elif tok.tokenizer_type == "NullTokenizer" and tok.vocab_size is not None:
            m.vocab_size = tok.vocab_size + 1 + tok.added_tokens()  # + end-of-document (+ T5 special tokens)
    cfg.dataset.derive_lengths(m)


def run_megatron_checks(cfg) -> list[str]:
    """megatron-core's own __post_init__ derivations and checks, turned into problems."""
    problems = []
    for section in ("model", "optimizer", "ddp"):
        try:
            getattr(cfg, section).finalize()
        except (ValueError, AssertionError, RuntimeError, TypeError) as e:
            problems.append(f"--{section}: {e}")
    return problems


def finalize(cfg, world_size: int = 1, tokenizer_vocab_size: Optional[int] = None):
    """Return a derived and validated copy of ``cfg`` for ``world_size`` ranks.

    ``tokenizer_vocab_size``: the ids of the tokenizer's files (T5's special tokens included),
    which this package does not load; an unset --model.vocab_size is derived from it. The
    pre-flight (training/preflight.py ``prepare``) passes it.

    Raises ValidationError listing every problem found.
    """
    cfg = copy.deepcopy(cfg)
    for section in [cfg] + [getattr(cfg, f.name) for f in dataclasses.fields(cfg)]:
        relax(section)  # the finalized copy goes to megatron-core, which adds attributes of its own
    out_of_range = check_ranges(cfg)
    problems = out_of_range + collect_problems(cfg, world_size)
    if out_of_range:  # derivations would compute with them (and fail obscurely)
        raise ValidationError(problems)
    apply_mixed_precision(cfg)
    apply_comm_overlap(cfg, world_size)
    derive_moe(cfg)
    # Each derivation runs only when its inputs are sane, so one bad value does not hide others.
    mp, t = parallel_product(cfg.model), cfg.train
    if mp >= 1 and world_size % mp == 0 and t.micro_batch_size >= 1 and t.global_batch_size >= 1:
        problems += derive_parallelism(cfg, world_size)
    if (t.train_iters is None) != (t.train_samples is None) and t.global_batch_size >= 1:
        derive_run_length(cfg)
        problems += check_schedule(cfg)
    derive_vocab_and_data(cfg, tokenizer_vocab_size)
    problems += check_vocab(cfg)
    if not problems:  # megatron-core stops at its first problem: let ours speak first
        problems += run_megatron_checks(cfg)
    if problems:
        raise ValidationError(problems)
    return cfg


def validate(cfg, world_size: int = 1) -> None:
    """Raise ValidationError with every problem of ``cfg`` at ``world_size``; change nothing."""
    finalize(cfg, world_size)
