"""Process groups and communication: init settings, megatron-core DDP, overlap knobs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from megatron.core.distributed import DistributedDataParallelConfig as McoreDDPConfig

from megatron_bridge_cli.config.models.provider import DeferredPostInit
from megatron_bridge_cli.config.strict import StrictFields

__all__ = ["DistributedInitConfig", "DistributedDataParallelConfig", "CommOverlapConfig"]


@dataclass
class DistributedInitConfig(StrictFields):
    """How torch.distributed is initialized."""

    distributed_backend: Optional[Literal["nccl", "gloo"]] = None
    """Collective backend. None picks nccl when CUDA is available, else gloo."""

    distributed_timeout_minutes: float = 10
    """Collective timeout in minutes (fractions allowed, e.g. 0.5); a rank that waits longer
    fails the job instead of hanging."""

    use_gloo_process_groups: bool = True
    """Also create gloo groups for CPU-side collectives (checkpoint metadata)."""

    lazy_init: bool = False
    """Skip process-group creation (the caller has done it)."""


@dataclass
class DistributedDataParallelConfig(StrictFields, DeferredPostInit, McoreDDPConfig):
    """megatron-core DistributedDataParallelConfig (gradient buffers, bucketing, overlap,
    distributed optimizer sharding). Every field is megatron-core's; checks run at finalize()."""


@dataclass
class CommOverlapConfig(StrictFields):
    """Overlap of communication with computation (GPU runs; most of it needs NCCL and TE)."""

    tp_comm_overlap: bool = False
    """Overlap tensor-parallel communication with GEMMs (needs TE and sequence parallel)."""

    overlap_grad_reduce: Optional[bool] = None
    """Overlap the data-parallel gradient reduce with backward. None: on when data-parallel size > 1."""

    overlap_param_gather: Optional[bool] = None
    """Overlap the distributed optimizer's parameter all-gather with forward. None: on when data-parallel
    size > 1 and --ddp.use_distributed_optimizer is on."""

    overlap_p2p_comm: Optional[bool] = None
    """Overlap pipeline send/receive with compute. None: on for the interleaved schedule (pipeline
    parallel with virtual stages), else model's."""

    batch_p2p_comm: Optional[bool] = None
    """Batch pipeline send/receive into one call. None: off for the interleaved schedule (overlap needs
    separate calls), else model's."""

    bucket_size: Optional[int] = None
    """Gradient bucket size in elements. None keeps ddp's (megatron-core: max(40M, 1M x DP))."""

    defer_embedding_wgrad_compute: bool = False
    """Defer the embedding weight-gradient GEMM to overlap it with the pipeline flush."""
