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
    """megatron-core's rerun state machine: re-run suspicious steps to tell faults from data
    (training/rerun.py; exit codes in the README's "Rerun state machine (NaN checks)")."""

    rerun_mode: Literal["disabled", "validate_results", "report_stats"] = "disabled"
    """disabled: a NaN/Inf loss stops the run (exit 1). validate_results: a step whose loss fails a
    check is rerun on the same data; a spike goes on, a NaN/Inf saves a checkpoint and exits 17 (not
    reproduced: transient fault) or 16 (reproduced: resume on another node). report_stats (megatron-core's
    report_determinism_stats): every step runs twice and rank 0 prints determinism stats every
    --logger.log_interval iterations (about 2x the step time)."""

    check_for_nan_in_loss: bool = True
    """Check each micro-batch's loss for NaN/Inf: stop (disabled), or rerun the step (validate_results)."""

    check_for_spiky_loss: bool = False
    """Check for a loss 10x the largest of the first 100 checked: a warning (disabled), or a rerun
    of the step that then goes on (validate_results)."""

    error_injection_rate: int = 0
    """validate_results only: reject each check with probability 1/N on purpose (megatron-core's
    RerunErrorInjector), to test the machinery and job scripts; 0: never; 1: the first check of a
    process's second step on every rank."""

    error_injection_type: Literal["correct_result", "transient_error", "persistent_error"] = "transient_error"
    """What the injected rejection pretends to be: transient_error (the rerun differs),
    persistent_error or correct_result (the rerun reproduces it; they differ on another node)."""


@dataclass
class FaultToleranceConfig(StrictFields):
    """Hang detection and job restart via nvidia-resiliency-ext's fault-tolerance package.

    The job must run under its ft_launcher: ``bridge-train --nproc-per-node N --ft`` starts it
    (with --max-restarts), or run ``ft_launcher ... -m megatron_bridge_cli --ft ...`` yourself."""

    enable_ft_package: bool = True
    """Send a heartbeat to the ft_launcher's rank monitor after every iteration and checkpoint save;
    a rank silent for longer than the timeout is killed and the workers restart from the latest
    checkpoint. false keeps only the simulated fault (e.g. with --max-restarts, no ft_launcher)."""

    calc_ft_timeouts: bool = False
    """Learn the heartbeat timeouts from observed intervals (x safety_factor) at every checkpoint
    save and at the end; they are saved to ft_state.json in --checkpoint.save and reused after a restart."""

    initial_heartbeat_timeout: float = 600.0
    """Seconds allowed from a rank's start to its first heartbeat (setup and checkpoint load);
    what bridge-train passes to ft_launcher (under your own ft_launcher: its --ft-initial-rank-heartbeat-timeout)."""

    heartbeat_timeout: float = 300.0
    """Seconds allowed between heartbeats (an iteration, an evaluation or a save) before the rank counts
    as hung; what bridge-train passes to ft_launcher (yours: --ft-rank-heartbeat-timeout)."""

    check_interval: float = 5.0
    """Seconds between the rank monitor's timeout checks (ft_launcher's --ft-workload-check-interval)."""

    safety_factor: float = 5.0
    """calc_ft_timeouts sets each timeout to the longest observed interval times this (ft_launcher's --ft-safety-factor)."""

    simulate_fault: bool = False
    """Inject a fault (for testing the restart path), in the job's first attempt only (a restarted
    job trains on): at --ft.simulated_fault_iteration, else simulated_fault_base_delay seconds
    after training starts."""

    simulated_fault_type: Literal["rank_hung", "rank_killed", "rank_error", "random"] = "random"
    """rank_hung stops the rank (SIGSTOP: only a timeout finds it); rank_killed kills it (SIGKILL);
    rank_error raises an exception in it (what --inprocess_restart recovers from); random: hung or killed."""

    simulated_fault_rank: Optional[int] = None
    """Global rank that fails (None: one drawn from --rng.seed)."""

    simulated_fault_base_delay: int = 0
    """Seconds after training starts before the simulated fault (when simulated_fault_iteration is unset)."""

    simulated_fault_iteration: Optional[int] = None
    """The fault happens as this iteration (1-based) begins, after iteration - 1 have trained."""


@dataclass
class StragglerDetectionConfig(StrictFields):
    """Report ranks whose step time lags the others (wall-clock step times, all-gathered; no extra package)."""

    report_interval: int = 100
    """Every this many iterations, rank 0 prints one line with every rank's mean step time, the slowest and fastest."""

    threshold: float = 1.5
    """A rank is a straggler when its step time exceeds the median by this factor."""

    disable_on_start: bool = False
    """Start with reports off; SIGUSR2 sent to the training processes switches them on (and off again)."""


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
