"""Who am I in the job: rank, world size and rendezvous address from torchrun or Slurm.

torchrun sets RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT. Under ``srun`` (without
torchrun) Slurm sets SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID and the node list; the master is
the first host of SLURM_JOB_NODELIST. Anything else is a single process.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Mapping, Optional

__all__ = ["WorldInfo", "detect_world", "first_slurm_host", "is_rank_zero"]

DEFAULT_MASTER_PORT = 29500


@dataclass(frozen=True)
class WorldInfo:
    """This process's place in the job."""

    rank: int
    local_rank: int
    world_size: int
    master_addr: str
    master_port: int
    launcher: str
    """'torchrun', 'slurm' or 'single'."""


def first_slurm_host(nodelist: str) -> str:
    """First host of a Slurm node list: 'gpu[003-005,007],cpu1' -> 'gpu003'."""
    first = re.split(r",(?![^\[]*\])", nodelist.strip())[0]
    match = re.match(r"^([^\[]+)\[([^\]]+)\]", first)
    if not match:
        return first
    prefix, ranges = match.groups()
    return prefix + ranges.split(",")[0].split("-")[0]


def detect_world(environ: Optional[Mapping[str, str]] = None) -> WorldInfo:
    """Read the launcher's environment variables (torchrun first, then Slurm)."""
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return WorldInfo(
            rank=int(env["RANK"]),
            local_rank=int(env.get("LOCAL_RANK", 0)),
            world_size=int(env["WORLD_SIZE"]),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=int(env.get("MASTER_PORT", DEFAULT_MASTER_PORT)),
            launcher="torchrun",
        )
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or "127.0.0.1"
        return WorldInfo(
            rank=int(env["SLURM_PROCID"]),
            local_rank=int(env.get("SLURM_LOCALID", 0)),
            world_size=int(env["SLURM_NTASKS"]),
            master_addr=env.get("MASTER_ADDR") or first_slurm_host(nodelist),
            master_port=int(env.get("MASTER_PORT", DEFAULT_MASTER_PORT)),
            launcher="slurm",
        )
    return WorldInfo(0, 0, 1, "127.0.0.1", int(env.get("MASTER_PORT", DEFAULT_MASTER_PORT)), "single")


def is_rank_zero(environ: Optional[Mapping[str, str]] = None) -> bool:
    """True in the process that should print (global rank 0)."""
    return detect_world(environ).rank == 0
