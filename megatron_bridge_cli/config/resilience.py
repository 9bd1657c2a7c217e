"""Surviving failures: rerun checks, fault tolerance, straggler detection, in-process restart.

These sections are None unless switched on (``--ft``, ``--straggler``, ...). ft, nvrx_straggler
and inprocess_restart drive NVIDIA Resiliency Extension (nvidia-resiliency-ext), a GPU-cluster
package; asking for them without it installed is a validation error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from megatron_bridge_cli.config.strict import StrictFields

__all__ = [
    "RerunStateMachineConfig",
    "FaultToleranceConfig",
    "StragglerDetectionConfig",
    "NVRxStragglerDetectionConfig",
    "InProcessRestartConfig",
]


@dataclass
class RerunStateMachineConfig(StrictFields):
    """megatron-core's rerun state machine: re-run suspicious steps to tell faults from data."""

    rerun_mode: Literal["disabled", "validate_results", "report_stats"] = "disabled"
    """disabled; validate_results re-runs a step whose loss is NaN/spiky to check it is reproducible;
    report_stats measures run-to-run variability."""

    check_for_nan_in_loss: bool = True
    """Fail (or re-run, in validate_results mode) when the loss is NaN."""

    check_for_spiky_loss: bool = False
    """Treat a loss far above the recent maximum as suspicious."""

    error_injection_rate: int = 0
    """Inject an error once every this many checks (0: never), to test the machinery."""

    error_injection_type: Literal["correct_result", "transient_error", "persistent_error"] = "transient_error"
    """Kind of injected error."""


@dataclass
class FaultToleranceConfig(StrictFields):
    """Hang detection and job restart via nvidia-resiliency-ext's fault-tolerance package."""

    enable_ft_package: bool = True
    """Send heartbeats to the fault-tolerance rank monitor."""

    calc_ft_timeouts: bool = False
    """Learn timeouts from observed step times and store them with the checkpoint."""

    simulate_fault: bool = False
    """Inject a fault (for testing the restart path)."""

    simulated_fault_type: Literal["rank_hung", "rank_killed", "random"] = "random"
    """Kind of simulated fault."""

    simulated_fault_rank: Optional[int] = None
    """Rank that fails (None: random)."""

    simulated_fault_base_delay: int = 0
    """Seconds before the simulated fault."""


@dataclass
class StragglerDetectionConfig(StrictFields):
    """Report ranks whose step time lags the others (megatron-core timers, no extra package)."""

    report_interval: int = 100
    """Check for stragglers every this many iterations."""

    threshold: float = 1.5
    """A rank is a straggler when its step time exceeds the median by this factor."""

    disable_on_start: bool = False
    """Start disabled; enable later via a signal."""


@dataclass
class NVRxStragglerDetectionConfig(StrictFields):
    """Straggler detection of nvidia-resiliency-ext (GPU kernel timing)."""

    report_time_interval: float = 300.0
    """Seconds between straggler reports."""

    calc_relative_gpu_perf: bool = True
    """Score each GPU relative to the others."""

    calc_individual_gpu_perf: bool = True
    """Score each GPU against its own history."""

    num_gpu_perf_scores_to_print: int = 5
    """How many best and worst scores to print."""

    gpu_relative_perf_threshold: float = 0.7
    """Relative performance below which a GPU is reported."""

    gpu_individual_perf_threshold: float = 0.7
    """Individual performance below which a GPU is reported."""

    stop_if_detected: bool = False
    """Stop training when a straggler is detected."""

    enable_logging: bool = True
    """Log the reports."""


@dataclass
class InProcessRestartConfig(StrictFields):
    """Restart training inside the same processes after a fault (nvidia-resiliency-ext)."""

    active_world_size: Optional[int] = None
    """Ranks that train; the rest are warm spares. None uses all."""

    granularity: Literal["node", "rank"] = "node"
    """Unit that is excluded after a fault."""

    max_iterations: Optional[int] = None
    """Most restarts before giving up (None: unlimited)."""

    soft_timeout: float = 60.0
    """Seconds without progress before a rank is considered hung (soft)."""

    hard_timeout: float = 90.0
    """Seconds without progress before a hung rank is killed."""

    heartbeat_interval: float = 30.0
    """Seconds between heartbeats."""

    heartbeat_timeout: float = 60.0
    """Seconds of missed heartbeats before a rank is considered dead."""

    barrier_timeout: float = 120.0
    """Timeout of the restart barrier."""

    completion_timeout: float = 120.0
    """Timeout of the completion barrier."""

    monitor_process_interval: float = 1.0
    """Polling interval of the monitor process."""

    empty_cuda_cache: bool = True
    """Free cached CUDA memory on restart."""
