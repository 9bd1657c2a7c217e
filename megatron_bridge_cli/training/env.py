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

from megatron_bridge_cli.errors import ConfigError

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


def _int_var(env: Mapping[str, str], name: str, default: Optional[int] = None, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise ConfigError(
            f"environment variable {name}={raw!r} is not a whole number >= {minimum}; it is set by the "
            "launcher (torchrun, srun): unset it to run a single process, or fix the job script"
        )
    return value


def detect_world(environ: Optional[Mapping[str, str]] = None, rendezvous: bool = True) -> WorldInfo:
    """Read the launcher's environment variables (torchrun first, then Slurm).

    Raises ConfigError for malformed values and for a multi-process world with nowhere to meet
    (WORLD_SIZE > 1 without MASTER_ADDR outside Slurm: guessing 127.0.0.1 there would make
    every rank on another node wait forever; ``rendezvous=False`` skips that check, for callers
    that only want to know the rank)."""
    env = os.environ if environ is None else environ
    port = _int_var(env, "MASTER_PORT", DEFAULT_MASTER_PORT, minimum=1)
    if "RANK" in env and "WORLD_SIZE" in env:
        world_size = _int_var(env, "WORLD_SIZE", minimum=1)
        rank = _int_var(env, "RANK")
        if rank >= world_size:
            raise ConfigError(f"environment variable RANK={rank} is not below WORLD_SIZE={world_size}")
        master = env.get("MASTER_ADDR", "").strip()
        if rendezvous and world_size > 1 and not master:
            raise ConfigError(
                f"WORLD_SIZE={world_size} but MASTER_ADDR is not set: every rank needs the address of "
                "rank 0's host; launch with torchrun (or bridge-train --nproc-per-node N), or export "
                "MASTER_ADDR and MASTER_PORT in the job script"
            )
        return WorldInfo(rank, _int_var(env, "LOCAL_RANK", 0), world_size, master or "127.0.0.1", port, "torchrun")
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or "127.0.0.1"
        return WorldInfo(
            rank=_int_var(env, "SLURM_PROCID"),
            local_rank=_int_var(env, "SLURM_LOCALID", 0),
            world_size=_int_var(env, "SLURM_NTASKS", minimum=1),
            master_addr=env.get("MASTER_ADDR") or first_slurm_host(nodelist),
            master_port=port,
            launcher="slurm",
        )
    return WorldInfo(0, 0, 1, "127.0.0.1", port, "single")


def is_rank_zero(environ: Optional[Mapping[str, str]] = None) -> bool:
    """True in the process that should print (global rank 0). Lenient on purpose: with a
    malformed or incomplete launcher environment, better to print twice than never (the run
    itself then stops on detect_world's error)."""
    env = os.environ if environ is None else environ
    try:
        return detect_world(env, rendezvous=False).rank == 0
    except ConfigError:
        return True
