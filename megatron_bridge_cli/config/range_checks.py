"""Value ranges: a number outside its field's range is named before anything computes with it.

Without these, a negative layer count reaches megatron-core's ``__post_init__`` and comes back
as "math domain error", a zero interval as a ZeroDivisionError mid-run. One table, one rule
per field; fields of sections that are off (None) are skipped. Every float anywhere in the
tree must also be a number (NaN never is a valid setting).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, NamedTuple

__all__ = ["check_ranges", "RANGES"]


class Rule(NamedTuple):
    test: Callable[[float], bool]
    text: str


POSITIVE = Rule(lambda v: v >= 1, "a whole number >= 1")
NON_NEGATIVE = Rule(lambda v: v >= 0, "a number >= 0")
POSITIVE_REAL = Rule(lambda v: 0 < v < math.inf, "a finite number > 0")
NON_NEGATIVE_REAL = Rule(lambda v: 0 <= v < math.inf, "a finite number >= 0")
PROBABILITY = Rule(lambda v: 0 <= v <= 1, "a probability in [0, 1]")
BETA = Rule(lambda v: 0 <= v < 1, "in [0, 1)")
FRACTION = Rule(lambda v: 0 < v <= 1, "in (0, 1]")
KEEP = Rule(lambda v: v == -1 or v >= 1, "-1 (keep all) or a whole number >= 1")
AT_LEAST_ONE = Rule(lambda v: v >= 1, "at least 1")
ONE_OR_MORE = Rule(lambda v: v >= 1, "1 or more")
ZERO_OR_MORE = Rule(lambda v: v >= 0, "0 or more")
SECONDS = Rule(lambda v: v > 0, "positive")
ABOVE_ONE = Rule(lambda v: v > 1, "above 1 (a factor of the median step time)")
INJECTION_RATE = Rule(lambda v: v >= 0, "0 (never) or a positive N (each check rejected with probability 1/N)")

RANGES: dict[str, Rule] = {
    **{f"model.{n}": POSITIVE for n in (
        "num_layers", "hidden_size", "ffn_hidden_size", "kv_channels", "num_query_groups",
        "seq_length", "vocab_size", "make_vocab_size_divisible_by", "num_moe_experts", "moe_router_topk",
        "moe_ffn_hidden_size", "encoder_num_layers", "encoder_seq_length", "expert_model_parallel_size",
        "expert_tensor_parallel_size", "virtual_pipeline_model_parallel_size", "rotary_base",
    )},
    **{f"model.{n}": PROBABILITY for n in ("hidden_dropout", "attention_dropout")},
    **{f"model.{n}": POSITIVE_REAL for n in ("layernorm_epsilon", "init_method_std")},
    **{f"model.{n}": NON_NEGATIVE for n in ("num_attention_heads", "recompute_num_layers", "num_layers_in_first_pipeline_stage",
                                             "num_layers_in_last_pipeline_stage")},
    "model.rotary_percent": FRACTION,
    **{f"train.{n}": POSITIVE for n in (
        "global_batch_size", "micro_batch_size", "train_iters", "train_samples", "eval_interval",
        "eval_global_batch_size", "eval_micro_batch_size", "exit_interval",
    )},
    **{f"train.{n}": NON_NEGATIVE for n in ("eval_iters", "manual_gc_interval")},
    "train.exit_duration_in_mins": POSITIVE_REAL,
    **{f"optimizer.{n}": NON_NEGATIVE_REAL for n in ("lr", "min_lr", "weight_decay", "clip_grad")},
    **{f"optimizer.{n}": BETA for n in ("adam_beta1", "adam_beta2")},
    **{f"optimizer.{n}": POSITIVE_REAL for n in ("adam_eps", "initial_loss_scale")},
    **{f"scheduler.{n}": NON_NEGATIVE for n in (
        "lr_warmup_iters", "lr_warmup_samples", "lr_wsd_decay_iters", "lr_wsd_decay_samples",
    )},
    **{f"scheduler.{n}": POSITIVE for n in ("lr_decay_iters", "lr_decay_samples")},
    **{f"scheduler.{n}": NON_NEGATIVE_REAL for n in ("lr_warmup_init", "start_weight_decay", "end_weight_decay")},
    **{f"dataset.{n}": POSITIVE for n in ("seq_length", "decoder_seq_length")},
    "dataset.num_workers": NON_NEGATIVE,
    **{f"dataset.{n}": PROBABILITY for n in ("masking_probability", "short_sequence_probability")},
    **{f"logger.{n}": POSITIVE for n in ("log_interval", "tensorboard_log_interval", "tensorboard_queue_size")},
    "tokenizer.vocab_size": POSITIVE,
    "tokenizer.vocab_extra_ids": NON_NEGATIVE,
    "checkpoint.save_interval": POSITIVE,
    "checkpoint.ckpt_step": NON_NEGATIVE,
    "checkpoint.most_recent_k": KEEP,
    "dist.distributed_timeout_minutes": POSITIVE_REAL,
    "peft.dim": POSITIVE,
    "peft.alpha": POSITIVE_REAL,
    "peft.dropout": PROBABILITY,
    **{f"profiling.{n}": NON_NEGATIVE for n in ("profile_step_start", "profile_step_end")},
    "rerun_state_machine.error_injection_rate": INJECTION_RATE,
    **{f"ft.{n}": SECONDS for n in ("initial_heartbeat_timeout", "heartbeat_timeout", "check_interval",
                                    "safety_factor")},
    "ft.simulated_fault_iteration": ONE_OR_MORE,
    "ft.simulated_fault_base_delay": ZERO_OR_MORE,
    "straggler.report_interval": AT_LEAST_ONE,
    "straggler.threshold": ABOVE_ONE,
    "nvrx_straggler.report_time_interval": SECONDS,
}


def _section_of(cfg, path: str):
    obj = cfg
    for part in path.split(".")[:-1]:
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _nan_problems(cfg) -> list[str]:
    problems = []
    for section in dataclasses.fields(cfg):
        obj = getattr(cfg, section.name, None)
        if not dataclasses.is_dataclass(obj):
            continue
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name, None) if f.init else None
            if isinstance(value, float) and math.isnan(value):
                problems.append(f"--{section.name}.{f.name} is NaN; give a number")
    return problems


def check_ranges(cfg) -> list[str]:
    """A problem for every field outside its range (unset Optional fields are skipped)."""
    problems = _nan_problems(cfg)
    for path, rule in RANGES.items():
        section = _section_of(cfg, path)
        value = getattr(section, path.rsplit(".", 1)[1], None) if section is not None else None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            continue
        if not rule.test(value):
            problems.append(f"--{path} ({value}) must be {rule.text}")
    return problems
