"""``bridge-train --nproc-per-node N``: start N local workers through torch.distributed.run.

No launcher of our own: the arguments are handed to torchrun's own parser and ``run()``, so
rendezvous, worker monitoring and failure handling are torchrun's (one failing worker ends
the job: torchrun terminates the others and reports the failure). Each worker runs
``python -m megatron_bridge_cli <argv>``.
"""

from __future__ import annotations

import signal
import sys
from typing import Optional, Sequence

__all__ = ["launch_workers", "torchrun_args"]


def torchrun_args(*, nproc_per_node: int, nnodes: int = 1, node_rank: int = 0, master_addr: Optional[str] = None,
                  master_port: Optional[int] = None, argv: Sequence[str] = ()) -> list[str]:
    """The torchrun command line (without ``torchrun``) for these settings."""
    args = [f"--nproc-per-node={nproc_per_node}", f"--nnodes={nnodes}", f"--node-rank={node_rank}"]
    if nnodes == 1 and master_addr is None and master_port is None:
        args.append("--standalone")  # a free local port, no clash with other jobs on the machine
    else:
        args += [f"--master-addr={master_addr or '127.0.0.1'}", f"--master-port={master_port or 29500}"]
    return args + ["--module", "megatron_bridge_cli", *argv]


def launch_workers(*, nproc_per_node: int, nnodes: int = 1, node_rank: int = 0, master_addr: Optional[str] = None,
                   master_port: Optional[int] = None, argv: Sequence[str] = ()) -> int:
    """Run the job; return its exit code (0, or the first failed worker's non-zero code)."""
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    args = torchrun.parse_args(torchrun_args(
        nproc_per_node=nproc_per_node, nnodes=nnodes, node_rank=node_rank,
        master_addr=master_addr, master_port=master_port, argv=list(argv),
    ))
    try:
        torchrun.run(args)
        return 0
    except ChildFailedError as e:
        _, first = e.get_first_failure()
        code = first.exitcode
        print(f"bridge-train: worker (rank {first.rank}) failed with exit code {code}", file=sys.stderr)
        return code if isinstance(code, int) and code > 0 else 1
    except SignalException as e:
        # torchrun forwarded the signal to the workers and stopped them.
        return 128 + int(getattr(e, "sigval", signal.SIGTERM))
