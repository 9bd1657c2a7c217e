"""The configuration tree of bridge-train. Imports nothing from cli/ or training/."""

from megatron_bridge_cli.config.checkpoint import CheckpointConfig
from megatron_bridge_cli.config.container import SECTION_KINDS, ConfigContainer
from megatron_bridge_cli.config.data import (
    FinetuningDatasetConfig,
    GPTDatasetConfig,
    MockGPTDatasetConfig,
    T5DatasetConfig,
)
from megatron_bridge_cli.config.dist import (
    CommOverlapConfig,
    DistributedDataParallelConfig,
    DistributedInitConfig,
)
from megatron_bridge_cli.config.finalize import finalize, validate
from megatron_bridge_cli.config.logger import LoggerConfig
from megatron_bridge_cli.config.models import (
    GPTModelProvider,
    MambaModelProvider,
    T5ModelProvider,
)
from megatron_bridge_cli.config.optimizer import OptimizerConfig
from megatron_bridge_cli.config.peft import DoRAConfig, LoRAConfig
from megatron_bridge_cli.config.precision import (
    MIXED_PRECISION_PRESETS,
    MixedPrecisionConfig,
)
from megatron_bridge_cli.config.profiling import ProfilingConfig
from megatron_bridge_cli.config.resilience import (
    FaultToleranceConfig,
    InProcessRestartConfig,
    NVRxStragglerDetectionConfig,
    RerunStateMachineConfig,
    StragglerDetectionConfig,
)
from megatron_bridge_cli.config.rng import RNGConfig
from megatron_bridge_cli.config.scheduler import SchedulerConfig
from megatron_bridge_cli.config.tokenizer import TokenizerConfig
from megatron_bridge_cli.config.training import TrainingConfig

__all__ = [
    "CheckpointConfig", "CommOverlapConfig", "ConfigContainer", "DistributedDataParallelConfig",
    "DistributedInitConfig", "DoRAConfig", "FaultToleranceConfig", "FinetuningDatasetConfig", "GPTDatasetConfig",
    "GPTModelProvider", "InProcessRestartConfig", "LoRAConfig", "LoggerConfig",
    "MIXED_PRECISION_PRESETS", "MambaModelProvider", "MixedPrecisionConfig", "MockGPTDatasetConfig",
    "NVRxStragglerDetectionConfig", "OptimizerConfig", "ProfilingConfig", "RNGConfig",
    "RerunStateMachineConfig", "SECTION_KINDS", "SchedulerConfig", "StragglerDetectionConfig",
    "T5DatasetConfig", "T5ModelProvider", "TokenizerConfig", "TrainingConfig", "finalize", "validate",
]
