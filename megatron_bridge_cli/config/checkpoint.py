"""Saving and loading checkpoints (megatron-core dist_checkpointing)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from megatron_bridge_cli.config.strict import StrictFields

__all__ = ["CheckpointConfig"]


@dataclass
class CheckpointConfig(StrictFields):
    """Where and how often to save, and what to load."""

    save: Optional[str] = None
    """Save checkpoints to this folder (iter_NNNNNNN subfolders). None disables saving."""

    save_interval: Optional[int] = None
    """Save every this many iterations (a final checkpoint is always saved when save is set)."""

    load: Optional[str] = None
    """Resume from the latest checkpoint in this folder (model, optimizer, scheduler, RNG, data position)."""

    pretrained_checkpoint: Optional[str] = None
    """Initialize model weights from this checkpoint folder only (finetuning and PEFT start here):
    a bridge-train checkpoint, or a local HuggingFace model folder (config.json + *.safetensors;
    each rank reads only its own slices). Which kind it is is detected."""

    save_hf: Optional[str] = None
    """After the final checkpoint, also write the model as a HuggingFace folder here (config.json,
    sharded safetensors, the tokenizer files of an HF pretrained_checkpoint); needs save. Same as
    ``python -m megatron_bridge_cli.hf.export SAVE DIR`` after the run."""

    ckpt_step: Optional[int] = None
    """Load this iteration instead of the latest one."""

    most_recent_k: int = -1
    """Keep only the k most recent checkpoints (-1 keeps all)."""

    ckpt_format: Literal["torch_dist"] = "torch_dist"
    """On-disk format; torch_dist is megatron-core dist_checkpointing (reshardable)."""

    async_save: bool = False
    """Write checkpoints in the background while training goes on (torch_dist only)."""

    fully_parallel_save: bool = True
    """Spread the writing of replicated tensors over data-parallel ranks."""

    fully_parallel_load: bool = False
    """Spread the reading of replicated tensors over data-parallel ranks."""

    save_optim: bool = True
    """Save optimizer state."""

    save_rng: bool = True
    """Save RNG states."""

    load_optim: bool = True
    """Load optimizer state on resume."""

    load_rng: bool = True
    """Load RNG states on resume."""

    finetune: bool = False
    """Load only model weights from load and start at iteration 0."""

    dist_ckpt_strictness: Literal[
        "assume_ok_unexpected", "log_unexpected", "log_all", "raise_unexpected", "raise_all",
        "return_unexpected", "return_all", "ignore_all",
    ] = "assume_ok_unexpected"
    """How to treat checkpoint keys that do not match the model."""

    exit_on_missing_checkpoint: bool = False
    """Fail if load is set but holds no checkpoint (otherwise start from scratch)."""

    fallback_to_previous: bool = False
    """If the latest checkpoint in load (or pretrained_checkpoint) cannot be loaded (incomplete,
    truncated, corrupted, or the tracker file names a missing or garbled iteration), load the
    newest older one that can, with a warning naming the one skipped. Off by default: a bad
    latest checkpoint stops the run, naming it. Not applied with an explicit ckpt_step."""
