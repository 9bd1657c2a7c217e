"""Loading: ``load_checkpoint(cfg, built)`` restores what ``--checkpoint.load`` /
``--checkpoint.pretrained_checkpoint`` name, from the folder validation chose
(checkpoint_files.resolve), and turns what can go wrong with the files into one message.
"""

from __future__ import annotations

import os
from typing import Optional

import torch

from megatron_bridge_cli.errors import ConfigError
from megatron_bridge_cli.hf.directory import is_hf_directory
from megatron_bridge_cli.training import torch_adam_state
from megatron_bridge_cli.training.checkpoint_files import defect, iteration_dir, resolve, saved_iterations, tensor_shapes
from megatron_bridge_cli.training.checkpoint_state import (
    RUN_CONFIG, layout, model_keys, rank0_print, restore_rng, sharded_state_dict,
)
from megatron_bridge_cli.training.optim_layout import adopt_own_commons, optimizer_count, own_commons, saved_step
from megatron_bridge_cli.training.setup import Built, TrainingState, unwrap

__all__ = ["load_checkpoint"]


def load_checkpoint(cfg, built: Built) -> Optional[str]:
    """Load what ``--checkpoint.load`` / ``pretrained_checkpoint`` name into ``built``.

    Resume (load): model, optimizer, scheduler, RNG, iteration and consumed samples.
    ``finetune`` or ``pretrained_checkpoint``: model weights only, from iteration 0.
    Returns the folder loaded, or None when starting from scratch.

    The folder is the one validation chose (checkpoint_files.resolve). A checkpoint this model
    does not fit, or one whose shards cannot be read, raises ConfigError on every rank (exit 2:
    the folder the flag names is at fault and another value of it is the remedy; the same
    command would fail again). With ``--checkpoint.fallback_to_previous`` an unreadable one gives
    way to the newest older one that reads.
    """
    ck = cfg.checkpoint
    if cfg.peft is not None:
        return _load_peft(cfg, built)
    flag, model_only = "checkpoint.load", ck.finetune
    choice = resolve(flag, ck.load, ck.ckpt_step, required=ck.exit_on_missing_checkpoint,
                     fallback=ck.fallback_to_previous)
    if choice.path is None and choice.problem is None and is_hf_directory(ck.pretrained_checkpoint):
        return _load_hf(cfg, built)
    if choice.path is None and choice.problem is None and ck.pretrained_checkpoint:
        flag, model_only = "checkpoint.pretrained_checkpoint", True
        choice = resolve(flag, ck.pretrained_checkpoint, required=True, fallback=ck.fallback_to_previous)
    if choice.problem:  # validation reported it already, unless the folder changed since
        raise ConfigError(choice.problem)
    if choice.path is None:
        if ck.load:
            rank0_print(f"no checkpoint in {ck.load}: training from scratch")
        return None
    root = ck.load if flag == "checkpoint.load" else ck.pretrained_checkpoint
    return _load_chosen(cfg, built, choice, flag, root, model_only, "all")


def _load_peft(cfg, built: Built) -> Optional[str]:
    """--peft: the base weights from pretrained_checkpoint (always: adapter checkpoints do not
    hold them), then, resuming, the adapters, their optimizer state and the rest from load."""
    from megatron_bridge_cli.training.peft import init_magnitudes

    ck = cfg.checkpoint
    if is_hf_directory(ck.pretrained_checkpoint):
        path = _load_hf(cfg, built)
    else:
        base = resolve("checkpoint.pretrained_checkpoint", ck.pretrained_checkpoint, required=True,
                       fallback=ck.fallback_to_previous)
        if base.problem:
            raise ConfigError(base.problem)
        path = _load_chosen(cfg, built, base, "checkpoint.pretrained_checkpoint", ck.pretrained_checkpoint, True,
                            "base")
    init_magnitudes(built.model)  # DoRA's m from the loaded weights (a resume overwrites it)
    built.optimizer.reload_model_params()
    choice = resolve("checkpoint.load", ck.load, ck.ckpt_step, required=ck.exit_on_missing_checkpoint,
                     fallback=ck.fallback_to_previous)
    if choice.problem:
        raise ConfigError(choice.problem)
    if choice.path is None:
        if ck.load:
            rank0_print(f"no checkpoint in {ck.load}: training the adapters from scratch")
        return path
    return _load_chosen(cfg, built, choice, "checkpoint.load", ck.load, ck.finetune, "adapters")


def _load_hf(cfg, built: Built) -> str:
    """Base weights from a HuggingFace folder: each rank streams the slices it owns."""
    from megatron_bridge_cli.hf.load import load_hf_weights

    path = cfg.checkpoint.pretrained_checkpoint
    n = load_hf_weights([unwrap(chunk) for chunk in built.model], cfg.model, path)
    if built.optimizer is not None:
        built.optimizer.reload_model_params()  # fp32 main copies of the imported weights
    rank0_print(f"  loaded HuggingFace weights from {path} ({n} tensors on this rank)")
    return path


def _load_chosen(cfg, built: Built, choice, flag: str, root: str, model_only: bool, part: str) -> Optional[str]:
    """Load the folder ``choice`` names (falling back to older ones where asked)."""
    ck = cfg.checkpoint
    path, skipped = choice.path, list(choice.skipped)
    while True:
        if skipped:
            rank0_print(f"warning: --checkpoint.fallback_to_previous: {skipped[0][0]} cannot be loaded "
                        f"({skipped[0][1]}); loading {path} instead"
                        + (f" (also skipped {', '.join(p for p, _ in skipped[1:])})" if len(skipped) > 1 else ""))
        failure = _try_load(cfg, built, path, model_only, flag, root, part)  # the same on every rank
        if failure is None:
            break
        older = _older_loadable(root, path, skipped) if ck.fallback_to_previous and ck.ckpt_step is None else None
        if older is None:
            raise ConfigError(f"--{flag}={root}: the checkpoint {path} cannot be read: {failure}" + (
                "" if ck.fallback_to_previous else
                "; --checkpoint.fallback_to_previous loads the newest older one that can be read"))
        skipped.insert(0, (path, failure))
        path = older
    what = ("base weights" if part == "base" else "model weights") if model_only else f"iteration {built.state.iteration}"
    rank0_print(f"  loaded checkpoint {path} ({what})")
    return path


def _older_loadable(root: str, path: str, skipped: list) -> Optional[str]:
    """The newest checkpoint under ``root`` older than ``path`` that passes the file checks."""
    name = os.path.basename(os.path.normpath(path))
    if not name.startswith("iter_") or not name[5:].isdigit():
        return None
    for it in saved_iterations(root):
        if it < int(name[5:]):
            why = defect(iteration_dir(root, it))
            if why is None:
                return iteration_dir(root, it)
            skipped.append((iteration_dir(root, it), why))
    return None


def _agree(problem: Optional[str]) -> Optional[str]:
    """The first rank's problem, on every rank (so that all ranks raise or go on together)."""
    problems = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(problems, problem)
    return next((p for p in problems if p), None)


def _first_line(e: BaseException) -> str:
    """What went wrong in a failed read, in a phrase: torch's CheckpointException (a
    BaseException) carries each rank's own exception, whose first line says it."""
    ranks = ""
    failures = getattr(e, "failures", None)
    if isinstance(failures, dict) and failures:
        ranks = f" on rank(s) {', '.join(map(str, sorted(failures)))}"
        first = next(iter(failures.values()))
        e = first[0] if isinstance(first, tuple) else first
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if text.startswith("Weights only load failed"):  # torch's advice to unpickle unsafely does not apply
        text = "a tensor's bytes are not a torch tensor"
    return f"{type(e).__name__}{ranks}: {text}"[:300]


_SHAPE_SETTINGS = ("num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "num_query_groups",
                   "kv_channels", "vocab_size", "seq_length", "max_position_embeddings", "gated_linear_unit",
                   "add_bias_linear", "add_qkv_bias", "num_moe_experts", "moe_ffn_hidden_size",
                   "make_vocab_size_divisible_by", "position_embedding_type", "share_embeddings_and_output_weights")


def _settings_that_differ(cfg, path: str) -> str:
    """' (--model.X is A in the checkpoint's run_config.yaml, B here; ...)' or ''."""
    import yaml

    try:
        with open(os.path.join(path, RUN_CONFIG), encoding="utf-8") as f:
            saved = (yaml.safe_load(f) or {}).get("model") or {}
    except (OSError, ValueError, yaml.YAMLError, AttributeError):
        return ""
    diffs = [
        f"--model.{name} is {saved[name]} there, {getattr(cfg.model, name)} here" for name in _SHAPE_SETTINGS
        if saved.get(name) is not None and isinstance(saved[name], (int, float, str, bool))
        and hasattr(cfg.model, name) and saved[name] != getattr(cfg.model, name)
    ]
    return f" (run_config.yaml of the checkpoint: {'; '.join(diffs)})" if diffs else ""


def _shape_problem(sd: dict, keys: list[str], path: str) -> Optional[str]:
    """The first model tensor whose global shape differs from the checkpoint's (or is missing)."""
    from megatron.core.dist_checkpointing import ShardedTensor
    from megatron.core.dist_checkpointing.dict_utils import nested_values

    saved = tensor_shapes(path)
    if not saved:
        return None
    for key in keys:
        for item in nested_values(sd[key]):
            if not isinstance(item, ShardedTensor) or getattr(item, "allow_shape_mismatch", False):
                continue
            want, have = list(item.global_shape), saved.get(item.key)
            if have is None:
                return f"the checkpoint has no tensor {item.key} (shape {want} in this model)"
            if list(have) != want:
                return f"tensor {item.key} has shape {list(have)} in the checkpoint and {want} in this model"
    return None


def _try_load(cfg, built: Built, path: str, model_only: bool, flag: str, root: str,
              part: str = "all") -> Optional[str]:
    """Load ``path`` into ``built``; None, or why its files could not be read (this rank).
    A model that does not fit the checkpoint raises ConfigError (every rank, same text)."""
    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing.serialization import get_default_load_sharded_strategy
    from megatron.core.dist_checkpointing.strategies.fully_parallel import FullyParallelLoadStrategyWrapper
    from megatron.core import parallel_state as ps

    ck = cfg.checkpoint
    # Each failure is agreed on by all ranks right where it happens, so that they leave (or go on)
    # together: a rank returning alone would leave the others in a collective.
    try:
        common, failure = dist_checkpointing.load_common_state_dict(path), None
    except Exception as e:  # noqa: BLE001 - a damaged common.pt, whatever torch raises for it
        common, failure = None, _first_line(e)
    failure = _agree(failure)
    if failure:
        return failure
    meta = common.get("checkpoint_meta", {})
    if meta.get("peft") and part != "adapters":
        raise ConfigError(
            f"--{flag}={root}: {path} holds only {meta['peft'][:-6]} adapters (saved by a --peft run), not a model; "
            f"resume it with --peft and the run's --checkpoint.pretrained_checkpoint, or merge it into a full "
            f"checkpoint with scripts/merge_lora.py")
    if part == "adapters" and not meta.get("peft"):
        raise ConfigError(
            f"--{flag}={root}: {path} is a full checkpoint, not one of a --peft run; with --peft it belongs in "
            f"--checkpoint.pretrained_checkpoint (the base weights), and --checkpoint.load names the adapter run")
    saved = meta.get("layout", {})
    same_tp_pp = all(
        saved.get(k) == layout(cfg)[k] for k in ("tensor_model_parallel_size", "pipeline_model_parallel_size")
    )
    load_optim = ck.load_optim and not model_only and meta.get("has_optimizer", True)
    same_ep = saved.get("expert_model_parallel_size", 1) == layout(cfg)["expert_model_parallel_size"]
    if load_optim and cfg.optimizer.use_distributed_optimizer and not (same_tp_pp and same_ep):
        raise ConfigError(
            f"{path} was saved with TP={saved.get('tensor_model_parallel_size')}, "
            f"PP={saved.get('pipeline_model_parallel_size')}, EP={saved.get('expert_model_parallel_size', 1)}; "
            f"the distributed optimizer's state reshards only across data-parallel sizes. Load with "
            f"--checkpoint.load_optim=false to change TP/PP/EP."
        )
    load_rng = ck.load_rng and not model_only and meta.get("has_rng", True) and same_tp_pp
    if ck.load_rng and not model_only and not same_tp_pp:
        rank0_print("note: the checkpoint's TP/PP layout differs from this run's: RNG states not restored")
    repair = load_optim and torch_adam_state.needs_repair(built.optimizer)
    if repair:
        torch_adam_state.before_load(built.optimizer)
    sd = sharded_state_dict(cfg, built, optim=load_optim, rng=load_rng, is_loading=True, part=part)
    # Saved with another number of sub-optimizers (EP > 1 <-> EP = 1): see optim_layout.py.
    regroup = load_optim and meta.get("optimizers", optimizer_count(built.optimizer)) != optimizer_count(built.optimizer)
    commons = own_commons(sd["optimizer"]) if regroup else None
    strategy = None
    if ck.fully_parallel_load and ps.get_data_parallel_world_size(with_context_parallel=True) > 1:
        strategy = FullyParallelLoadStrategyWrapper(
            get_default_load_sharded_strategy(path), ps.get_data_parallel_group(with_context_parallel=True)
        )
    mismatch = _agree(_shape_problem(sd, model_keys(built.model), path))
    if mismatch:
        raise ConfigError(f"--{flag}={root}: this model does not fit the checkpoint {path}: {mismatch}"
                          f"{_settings_that_differ(cfg, path)}; build the model with the settings it was saved with")
    from torch.distributed.checkpoint.api import CheckpointException

    try:
        loaded, failure = dist_checkpointing.load(sd, path, strategy, strict=ck.dist_ckpt_strictness), None
    except (Exception, CheckpointException) as e:  # noqa: BLE001 - whatever reading a damaged shard raises
        loaded, failure = None, _first_line(e)
    failure = _agree(failure)
    if failure:
        return failure
    for key, chunk in zip(model_keys(built.model), built.model):
        # --peft loads its model in two parts (base, adapters): each leaves the other's keys out
        unwrap(chunk).load_state_dict(loaded[key], strict=part == "all")
    if load_optim:
        if regroup:
            loaded["optimizer"] = adopt_own_commons(loaded["optimizer"], commons, saved_step(common.get("optimizer")))
        if repair:
            torch_adam_state.load(built.optimizer, loaded["optimizer"])
        else:
            built.optimizer.load_state_dict(loaded["optimizer"])
    elif built.optimizer is not None:  # (an export builds no optimizer)
        built.optimizer.reload_model_params()  # main (fp32) params from the loaded weights
    if load_rng:
        restore_rng(loaded["rng_state"])
    if not model_only:
        built.scheduler.load_state_dict(common["opt_param_scheduler"])
        built.state = TrainingState(**common["train_state"])
    return None
