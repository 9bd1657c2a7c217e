"""``bridge-train --nproc-per-node N --ft``: start the workers under nvidia-resiliency-ext's ft_launcher.

ft_launcher is torchrun with a rank monitor process per worker: a worker whose heartbeats stop
(training/fault_tolerance.py sends them) is killed after the timeout, and the worker group is
restarted like a failed one, up to ``--max-restarts`` times. No launcher of our own: the same
command line as torchrun's (training/launch.torchrun_args) plus the ``--ft-*`` timeouts of the
--ft section goes through ft_launcher's own parser and ``run``. The workers are fresh
interpreters (``python -m megatron_bridge_cli``): ft_launcher's agent starts them itself.

The same job, started by hand (every --ft-* option of ft_launcher is available there):

    ft_launcher --standalone --nproc-per-node 2 --max-restarts 3 \\
        --ft-initial-rank-heartbeat-timeout 600 --ft-rank-heartbeat-timeout 300 \\
        -m megatron_bridge_cli ft=default --checkpoint.save ckpt --checkpoint.save_interval 100 ...

(``ft=default`` or any ``--ft.FIELD=VALUE`` switches the section on; a bare ``--ft`` there would be
taken by ft_launcher's own parser as an abbreviation of its ``--ft-*`` options.)
"""

from __future__ import annotations

import signal
import sys
from typing import Optional, Sequence

from megatron_bridge_cli.config.resilience import FaultToleranceConfig
from megatron_bridge_cli.training.launch import failure_message, launcher_pid, torchrun_args

__all__ = ["launch_with_ft", "ft_launcher_args"]

WORKERS_STOP_TIMEOUT = 5
"""Seconds between SIGTERM and SIGKILL when ft_launcher stops workers to restart them (its default,
30, is mostly spent waiting on ranks blocked in a collective with the hung one)."""


def ft_launcher_args(ft: FaultToleranceConfig, *, nproc_per_node: int, nnodes: int = 1, node_rank: int = 0,
                     master_addr: Optional[str] = None, master_port: Optional[int] = None, max_restarts: int = 0,
                     argv: Sequence[str] = ()) -> list[str]:
    """ft_launcher's command line (without ``ft_launcher``) for these settings and the --ft section."""
    base = torchrun_args(nproc_per_node=nproc_per_node, nnodes=nnodes, node_rank=node_rank, master_addr=master_addr,
                         master_port=master_port, max_restarts=max_restarts, argv=argv)
    cut = base.index("--module")
    return base[:cut] + [
        f"--ft-initial-rank-heartbeat-timeout={ft.initial_heartbeat_timeout}",
        f"--ft-rank-heartbeat-timeout={ft.heartbeat_timeout}",
        f"--ft-workload-check-interval={ft.check_interval}",
        f"--ft-safety-factor={ft.safety_factor}",
        "--ft-enable-nic-monitor=false",  # InfiniBand link files; nothing to watch elsewhere
        f"--workers-stop-timeout={WORKERS_STOP_TIMEOUT}",
    ] + base[cut:]


def launch_with_ft(ft: FaultToleranceConfig, **where) -> int:
    """Run the job under ft_launcher; return its exit code (0, or 1 when the restarts ran out)."""
    from nvidia_resiliency_ext.fault_tolerance import launcher as ftl
    from nvidia_resiliency_ext.fault_tolerance._torch_elastic_compat.multiprocessing.api import SignalException
    from nvidia_resiliency_ext.fault_tolerance._torch_elastic_compat.multiprocessing.errors import ChildFailedError

    # ft_launcher's parser matches abbreviations even among the script's arguments (a bare --ft
    # reads as an ambiguous --ft-*), so the worker's argv is put in after parsing
    argv = list(where.pop("argv", ()))
    args = ftl.parse_args(ft_launcher_args(ft, argv=[], **where))
    args.training_script_args = argv
    try:
        with launcher_pid():  # workers die with the launcher (launch.die_with_launcher)
            ftl.run(args)
        return 0
    except ChildFailedError as e:
        rank, first = e.get_first_failure()
        message, code = failure_message(rank, first.exitcode, restarts=where.get("max_restarts", 0))
        sys.stdout.flush()
        print(message, file=sys.stderr, flush=True)
        return code
    except SignalException as e:
        return 128 + int(getattr(e, "sigval", signal.SIGTERM))
