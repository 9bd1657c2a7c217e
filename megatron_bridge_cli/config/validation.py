"""Checks of a ConfigContainer. Each returns problems as text naming the flag to change.

validate() runs every check and reports all problems together, so one edit-run cycle fixes
them all. Checks only read; they never change a value.
"""

from __future__ import annotations

import importlib.util

from megatron_bridge_cli.config.diagnostics_checks import check_diagnostics
from megatron_bridge_cli.config.models.mamba import (
    MAMBA_INSTALL_HINT,
    MambaModelProvider,
    mamba_missing_packages,
)
from megatron_bridge_cli.config.models.provider import transformer_engine_available
from megatron_bridge_cli.config.models.t5 import T5ModelProvider
from megatron_bridge_cli.config.moe_checks import check_moe
from megatron_bridge_cli.config.resilience_checks import check_resilience
from megatron_bridge_cli.config.t5_checks import check_t5
from megatron_bridge_cli.config.unsupported_checks import check_unsupported
from megatron_bridge_cli.errors import ConfigError
from megatron_bridge_cli.targets import resolve_target

__all__ = ["collect_problems", "parallel_product", "check_vocab"]


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def parallel_product(model) -> int:
    """TP x PP x CP: the ranks one model replica spans."""
    return model.tensor_model_parallel_size * model.pipeline_model_parallel_size * model.context_parallel_size


def check_parallelism(cfg, world_size: int) -> list[str]:
    m, problems = cfg.model, []
    for name in ("tensor_model_parallel_size", "pipeline_model_parallel_size", "context_parallel_size"):
        if getattr(m, name) < 1:
            problems.append(f"--model.{name} ({getattr(m, name)}) must be at least 1")
    if problems:
        return problems
    mp = parallel_product(m)
    if world_size % mp:
        problems.append(
            f"world size ({world_size}) is not divisible by --model.tensor_model_parallel_size "
            f"({m.tensor_model_parallel_size}) x --model.pipeline_model_parallel_size "
            f"({m.pipeline_model_parallel_size}) x --model.context_parallel_size ({m.context_parallel_size}) = {mp}"
        )
    if m.num_attention_heads and m.num_attention_heads % m.tensor_model_parallel_size:
        problems.append(
            f"--model.num_attention_heads ({m.num_attention_heads}) is not divisible by "
            f"--model.tensor_model_parallel_size ({m.tensor_model_parallel_size})"
        )
    if m.sequence_parallel and m.tensor_model_parallel_size == 1:
        problems.append("--model.sequence_parallel needs --model.tensor_model_parallel_size > 1")
    if m.sequence_parallel and not transformer_engine_available():
        problems.append("--model.sequence_parallel needs Transformer Engine norms: pip install '.[te]' on a GPU machine")
    vp = m.virtual_pipeline_model_parallel_size or 1
    stages = m.pipeline_model_parallel_size * vp
    uneven = m.num_layers_in_first_pipeline_stage or m.num_layers_in_last_pipeline_stage
    if stages > 1 and not uneven and m.num_layers % stages:
        problems.append(
            f"--model.num_layers ({m.num_layers}) is not divisible by --model.pipeline_model_parallel_size "
            f"({m.pipeline_model_parallel_size}) x --model.virtual_pipeline_model_parallel_size ({vp}) = {stages}"
        )
    if m.virtual_pipeline_model_parallel_size and m.pipeline_model_parallel_size == 1:
        problems.append("--model.virtual_pipeline_model_parallel_size needs --model.pipeline_model_parallel_size > 1")
    return problems


def check_batch(cfg, world_size: int) -> list[str]:
    t = cfg.train
    problems: list[str] = []
    mp = parallel_product(cfg.model)
    if mp < 1 or world_size % mp:
        return problems  # reported by check_parallelism; DP is undefined
    dp = world_size // mp
    pairs = [("global_batch_size", t.global_batch_size, "micro_batch_size", t.micro_batch_size)]
    if t.eval_global_batch_size is not None or t.eval_micro_batch_size is not None:
        pairs.append(("eval_global_batch_size", t.eval_global_batch_size, "eval_micro_batch_size", t.eval_micro_batch_size))
    for gbs_flag, gbs, mbs_flag, mbs in pairs:
        gbs = t.global_batch_size if gbs is None else gbs
        mbs = t.micro_batch_size if mbs is None else mbs
        if mbs < 1 or gbs < 1:
            problems.append(f"--train.{gbs_flag} ({gbs}) and --train.{mbs_flag} ({mbs}) must be positive")
        elif gbs % (mbs * dp):
            problems.append(
                f"--train.{gbs_flag} ({gbs}) is not divisible by --train.{mbs_flag} ({mbs}) x "
                f"data-parallel size ({dp} = world size {world_size} / TP x PP x CP {mp})"
            )
    if cfg.model.pipeline_model_parallel_size > 1 and t.eval_micro_batch_size not in (None, t.micro_batch_size):
        problems.append(
            f"--train.eval_micro_batch_size ({t.eval_micro_batch_size}) must equal --train.micro_batch_size "
            f"({t.micro_batch_size}) with pipeline parallelism (the pipeline's tensor shapes are fixed at setup)"
        )
    return problems


def check_run_length(cfg) -> list[str]:
    t, s, problems = cfg.train, cfg.scheduler, []
    if (t.train_iters is None) == (t.train_samples is None):
        which = "both are set" if t.train_iters is not None else "neither is set"
        problems.append(f"set exactly one of --train.train_iters and --train.train_samples ({which})")
    if t.train_iters is not None and t.train_samples is None:
        if s.lr_warmup_samples or s.lr_decay_samples is not None or s.lr_wsd_decay_samples is not None:
            problems.append("--scheduler.lr_*_samples need --train.train_samples; with --train.train_iters use --scheduler.lr_*_iters")
    if t.train_samples is not None and t.train_iters is None:
        if s.lr_warmup_iters or s.lr_decay_iters is not None or s.lr_wsd_decay_iters is not None:
            problems.append("--scheduler.lr_*_iters need --train.train_iters; with --train.train_samples use --scheduler.lr_*_samples")
    if s.lr_warmup_fraction is not None and (s.lr_warmup_iters or s.lr_warmup_samples):
        problems.append("set only one of --scheduler.lr_warmup_fraction and --scheduler.lr_warmup_iters/samples")
    if s.lr_warmup_fraction is not None and not 0 <= s.lr_warmup_fraction < 1:
        problems.append(f"--scheduler.lr_warmup_fraction ({s.lr_warmup_fraction}) must be in [0, 1)")
    return problems


def check_schedule(cfg) -> list[str]:
    """Needs the derived scheduler steps (run after derivation)."""
    s, o, problems = cfg.scheduler, cfg.optimizer, []
    if s.lr_warmup_steps is not None and s.lr_decay_steps is not None and s.lr_warmup_steps >= s.lr_decay_steps > 0:
        unit = "iters" if cfg.train.train_iters is not None else "samples"
        warm = "lr_warmup_fraction" if s.lr_warmup_fraction is not None else f"lr_warmup_{unit}"
        problems.append(
            f"--scheduler.{warm} ({getattr(s, warm)}) must be shorter than the decay "
            f"(--scheduler.lr_decay_{unit}, or the whole run when unset): warmup {s.lr_warmup_steps} >= "
            f"decay {s.lr_decay_steps} scheduler steps"
        )
    if o.lr is None:
        problems.append("--optimizer.lr is not set")
    elif o.min_lr is not None and o.min_lr > o.lr:
        problems.append(f"--optimizer.min_lr ({o.min_lr}) is larger than --optimizer.lr ({o.lr})")
    if o.lr is not None and s.lr_warmup_init > o.lr:
        problems.append(f"--scheduler.lr_warmup_init ({s.lr_warmup_init}) is larger than --optimizer.lr ({o.lr})")
    return problems


def check_vocab(cfg) -> list[str]:
    """Needs the derived vocabulary size (run after derivation)."""
    m = cfg.model
    if m.vocab_size is None or m.tensor_model_parallel_size < 1:
        return []
    rows = m.compute_padded_vocab_size(m.vocab_size)
    if rows % m.tensor_model_parallel_size:
        return [f"the embedding's {rows} rows (--model.vocab_size {m.vocab_size}, --model.should_pad_vocab="
                f"{str(m.should_pad_vocab).lower()}) do not split over --model.tensor_model_parallel_size "
                f"({m.tensor_model_parallel_size}); pad it with --model.should_pad_vocab=true"]
    return []


def check_data(cfg) -> list[str]:
    m, d, problems = cfg.model, cfg.dataset, []
    if d.seq_length is not None and d.seq_length != m.seq_length and not isinstance(m, T5ModelProvider):
        problems.append(f"--model.seq_length ({m.seq_length}) != --dataset.seq_length ({d.seq_length})")
    if d.data_path and (d.train_data_path or d.valid_data_path or d.test_data_path):
        problems.append("set either --dataset.data_path or --dataset.{train,valid,test}_data_path, not both")
    parts = d.split.replace("/", ",").split(",")
    if not all(p.strip().replace(".", "", 1).isdigit() for p in parts) or len(parts) > 3:
        problems.append(f"--dataset.split ({d.split!r}) must be up to three comma-separated numbers, e.g. 969,30,1")
    elif not any(float(p) > 0 for p in parts):
        problems.append(f"--dataset.split ({d.split!r}) gives every split a share of 0; e.g. 969,30,1")
    if m.vocab_size is None and cfg.tokenizer.tokenizer_type == "NullTokenizer" and cfg.tokenizer.vocab_size is None:
        problems.append("the vocabulary size is unknown: set --model.vocab_size or --tokenizer.vocab_size")
    return problems


def check_precision(cfg) -> list[str]:
    problems = []
    for section in ("model", "optimizer", "mixed_precision"):
        obj = getattr(cfg, section)
        if obj is not None and obj.bf16 and obj.fp16:
            problems.append(f"--{section}.bf16 and --{section}.fp16 are both on; choose one")
    mp = cfg.mixed_precision
    fp8 = cfg.model.fp8 or (mp is not None and mp.fp8)
    if fp8 and not transformer_engine_available():
        problems.append("FP8 (--mixed_precision.fp8 / --model.fp8) needs Transformer Engine: pip install '.[te]' on a GPU machine")
    for name in ("fp8_quantizer_factory", "fp4_quantizer_factory"):
        path = getattr(cfg.model, name, None)
        if path:  # megatron-core imports and calls it: the same allow-list as YAML's _target_
            try:
                resolve_target(path, f"--model.{name}")
            except ConfigError as e:
                problems.append(str(e))
    if cfg.model.layer_spec == "transformer_engine" and not transformer_engine_available():
        problems.append("--model.layer_spec=transformer_engine needs Transformer Engine: pip install '.[te]', or use auto/local")
    return problems


def check_features(cfg) -> list[str]:
    problems: list[str] = []
    if cfg.optimizer.use_distributed_optimizer != cfg.ddp.use_distributed_optimizer:
        # megatron-core's DDP must lay out the grad buffers the optimizer shards; half of it fails at step 1
        problems.append(
            f"--optimizer.use_distributed_optimizer ({str(cfg.optimizer.use_distributed_optimizer).lower()}) and "
            f"--ddp.use_distributed_optimizer ({str(cfg.ddp.use_distributed_optimizer).lower()}) must agree; set both"
        )
    if cfg.peft is not None and not cfg.checkpoint.pretrained_checkpoint:
        # adapter checkpoints hold no base weights, so a resume (--checkpoint.load) needs them too
        problems.append("--peft needs base weights: set --checkpoint.pretrained_checkpoint (also when resuming "
                        "with --checkpoint.load: PEFT checkpoints hold only the adapters)")
    if cfg.logger.tensorboard_dir and not _installed("tensorboard"):
        problems.append("--logger.tensorboard_dir needs TensorBoard: pip install '.[tensorboard]'")
    if cfg.logger.wandb_project and not _installed("wandb"):
        problems.append("--logger.wandb_project needs Weights & Biases: pip install '.[wandb]'")
    for section in ("ft", "nvrx_straggler", "inprocess_restart"):
        if getattr(cfg, section) is not None and not _installed("nvidia_resiliency_ext"):
            problems.append(f"--{section} needs nvidia-resiliency-ext: pip install nvidia-resiliency-ext (GPU clusters)")
    if isinstance(cfg.model, MambaModelProvider):
        missing = mamba_missing_packages()
        if missing:
            problems.append(
                f"--model=mamba needs {', '.join(missing)}, which install only with CUDA: {MAMBA_INSTALL_HINT}"
            )
    ck = cfg.checkpoint
    if ck.save_interval is not None and ck.save_interval < 1:
        problems.append(f"--checkpoint.save_interval ({ck.save_interval}) must be positive")
    if ck.async_save and ck.ckpt_format != "torch_dist":
        problems.append("--checkpoint.async_save needs --checkpoint.ckpt_format=torch_dist")
    return problems


def collect_problems(cfg, world_size: int) -> list[str]:
    """Problems detectable from user settings alone (before any derivation)."""
    return (
        check_parallelism(cfg, world_size)
        + check_batch(cfg, world_size)
        + check_run_length(cfg)
        + check_data(cfg)
        + check_precision(cfg)
        + check_features(cfg)
        + check_t5(cfg)
        + check_moe(cfg, world_size)
        + check_unsupported(cfg)
        + check_resilience(cfg, world_size)
        + check_diagnostics(cfg, world_size)
    )
