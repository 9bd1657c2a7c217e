"""ConfigContainer: the one typed tree a training run is described by."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Optional, TextIO

from megatron_bridge_cli import serialization
from megatron_bridge_cli.config.checkpoint import CheckpointConfig
from megatron_bridge_cli.config.data import DATASET_KINDS, DatasetConfigBase
from megatron_bridge_cli.config.dist import (
    CommOverlapConfig,
    DistributedDataParallelConfig,
    DistributedInitConfig,
)
from megatron_bridge_cli.config.logger import LoggerConfig
from megatron_bridge_cli.config.models import MODEL_KINDS, ModelProviderBase
from megatron_bridge_cli.config.optimizer import OptimizerConfig
from megatron_bridge_cli.config.peft import PEFT_KINDS, LoRAConfig
from megatron_bridge_cli.config.precision import (
    MIXED_PRECISION_PRESETS,
    MixedPrecisionConfig,
)
from megatron_bridge_cli.config.profiling import PROFILING_KINDS, ProfilingConfig
from megatron_bridge_cli.config.resilience import (
    FaultToleranceConfig,
    InProcessRestartConfig,
    NVRxStragglerDetectionConfig,
    RerunStateMachineConfig,
    StragglerDetectionConfig,
)
from megatron_bridge_cli.config.rng import RNGConfig
from megatron_bridge_cli.config.scheduler import SchedulerConfig
from megatron_bridge_cli.config.strict import StrictFields
from megatron_bridge_cli.config.tokenizer import TokenizerConfig
from megatron_bridge_cli.config.training import TrainingConfig
from megatron_bridge_cli.errors import ConfigError

__all__ = ["ConfigContainer", "SECTION_KINDS", "EXPLICIT_KEY"]

EXPLICIT_KEY = "_explicit_"
"""Optional top-level YAML key listing ``explicit_paths`` (bridge-train --print-config writes it),
so a printed config reloads with the same protection against presets."""


@dataclass
class ConfigContainer(StrictFields):
    """Everything a run needs. Build it in Python, load it from YAML, or let bridge-train
    layer recipe < YAML files < flags; then finalize() derives and validates it."""

    model: ModelProviderBase
    """Model architecture and parallelism (a GPT, T5 or Mamba provider; switch with --model=t5)."""

    train: TrainingConfig
    """Batch sizes, run length, evaluation and exit conditions."""

    optimizer: OptimizerConfig
    """megatron-core optimizer: learning rate, weight decay, Adam betas, clipping, distributed optimizer."""

    scheduler: SchedulerConfig
    """Learning-rate warmup/decay and weight-decay schedule."""

    dataset: DatasetConfigBase
    """Training data: GPT or T5 span-corruption samples from indexed .bin/.idx files, or mock data."""

    logger: LoggerConfig
    """Console, TensorBoard and W&B logging."""

    tokenizer: TokenizerConfig
    """Tokenizer (also tells the model its vocabulary size)."""

    checkpoint: CheckpointConfig
    """Checkpoint saving and loading."""

    dist: DistributedInitConfig = field(default_factory=DistributedInitConfig)
    """torch.distributed initialization."""

    ddp: DistributedDataParallelConfig = field(default_factory=DistributedDataParallelConfig)
    """megatron-core DistributedDataParallel (gradient buffers, overlap, optimizer sharding)."""

    rng: RNGConfig = field(default_factory=RNGConfig)
    """Random seeds."""

    rerun_state_machine: RerunStateMachineConfig = field(default_factory=RerunStateMachineConfig)
    """megatron-core rerun state machine (NaN / spiky loss checks)."""

    mixed_precision: Optional[MixedPrecisionConfig] = None
    """Precision applied to model, optimizer and ddp together (--mixed_precision=bf16_mixed)."""

    comm_overlap: Optional[CommOverlapConfig] = None
    """Communication/computation overlap settings (--comm_overlap=default)."""

    peft: Optional[LoRAConfig] = None
    """Parameter-efficient finetuning (--peft=lora or --peft=dora)."""

    profiling: Optional[ProfilingConfig] = None
    """Profiling (--profiling=pytorch or --profiling=nsys)."""

    ft: Optional[FaultToleranceConfig] = None
    """Fault tolerance via nvidia-resiliency-ext (--ft=default)."""

    straggler: Optional[StragglerDetectionConfig] = None
    """Straggler detection from megatron-core timers (--straggler=default)."""

    nvrx_straggler: Optional[NVRxStragglerDetectionConfig] = None
    """Straggler detection via nvidia-resiliency-ext (--nvrx_straggler=default)."""

    inprocess_restart: Optional[InProcessRestartConfig] = None
    """In-process restart via nvidia-resiliency-ext (--inprocess_restart=default)."""

    # ------------------------------------------------------------------ explicit values
    @property
    def explicit_paths(self) -> set[str]:
        """Dotted paths ('model.bf16') the user set in a YAML file or flag.

        Later steps (precision presets, finalize) never overwrite these. Not a dataclass
        field, so it is neither a flag nor part of the YAML.
        """
        paths = self.__dict__.get("_explicit_paths")
        if paths is None:
            paths = self.__dict__["_explicit_paths"] = set()
        return paths

    # ------------------------------------------------------------------ YAML
    def to_yaml(self, path: Optional[str] = None) -> str:
        """YAML of the whole container; written atomically to ``path`` when given."""
        if path is not None:
            serialization.dump_yaml(self, path)
        return serialization.to_yaml_str(self)

    def print_yaml(self, file: Optional[TextIO] = None) -> None:
        """Print the container as YAML (the format from_yaml reads) to ``file`` or stdout."""
        (file or sys.stdout).write(self.to_yaml())

    @classmethod
    def from_yaml(cls, path: str) -> "ConfigContainer":
        """Load a container written by to_yaml (safe loading, allow-listed ``_target_`` only)."""
        data = serialization.load_yaml_file(path)
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path!r} must hold a mapping of sections, got {type(data).__name__}")
        data = {k: v for k, v in data.items() if k != "_target_"}
        explicit = data.pop(EXPLICIT_KEY, None) or []
        if not (isinstance(explicit, list) and all(isinstance(p, str) for p in explicit)):
            raise ConfigError(f"config file {path!r}: {EXPLICIT_KEY} must be a list of dotted paths")
        try:
            cfg = serialization.decode_dataclass(cls, data, where="")
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
        cfg.explicit_paths.update(explicit)
        return cfg

    def finalize(self, world_size: int = 1) -> "ConfigContainer":
        """Derived, validated copy of this container (see config.finalize)."""
        from megatron_bridge_cli.config.finalize import finalize

        return finalize(self, world_size)


def _single(cls):
    return {"default": cls}


SECTION_KINDS = {
    "model": MODEL_KINDS,
    "dataset": DATASET_KINDS,
    "mixed_precision": MIXED_PRECISION_PRESETS,
    "comm_overlap": _single(CommOverlapConfig),
    "peft": PEFT_KINDS,
    "profiling": PROFILING_KINDS,
    "ft": _single(FaultToleranceConfig),
    "straggler": _single(StragglerDetectionConfig),
    "nvrx_straggler": _single(NVRxStragglerDetectionConfig),
    "inprocess_restart": _single(InProcessRestartConfig),
}
"""Sections that can be switched on or swapped by name (``--peft=lora``): name -> factory."""
