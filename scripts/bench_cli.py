#!/usr/bin/env python
"""How much does the CLI itself cost? Each command side by side with `import megatron.core`.

The floor is `python -c "import megatron.core"`: anything that needs real config values
(`--dry-run`, training) cannot start faster than the import of the library its config classes
subclass; target: `--dry-run` within 1.15x of it. `--help`, `--help model`, one completion
request (argcomplete's protocol, as a TAB press runs it) and an unknown-flag error are served
from the cached flag schema without importing torch; target: under 0.3 s wall each (more than
10x faster than anything that imports megatron-core). Each repetition runs every command
back to back in a rotating order (interleaved, so drifting machine load hits all alike); the
first round warms the page cache and the schema cache and is not counted. Reported: median
and best wall time, the ratio to the floor (median of the per-round ratios, robust on a busy
machine) and CPU time.

    .venv/bin/python scripts/bench_cli.py [--reps 7] [--check]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def bridge_train() -> list[str]:
    """The console script next to this interpreter, else `python -m megatron_bridge_cli`."""
    script = Path(sys.executable).with_name("bridge-train")
    return [str(script)] if script.exists() else [sys.executable, "-m", "megatron_bridge_cli"]


FAST_TARGET_S = 0.3
"""Wall-time target of the commands served from the schema cache."""

DRY_RUN_TARGET = 1.15
"""Ratio target of --dry-run to the import floor."""


def commands(tmp: str) -> dict[str, tuple[list[str], dict, int]]:
    """name -> (command, extra environment, expected exit code)."""
    line = "bridge-train --model.num_la"
    completion = {"_ARGCOMPLETE": "1", "COMP_LINE": line, "COMP_POINT": str(len(line)),
                  "_ARGCOMPLETE_STDOUT_FILENAME": os.path.join(tmp, "completions")}
    return {
        "import megatron.core": ([sys.executable, "-c", "import megatron.core"], {}, 0),
        "--dry-run": (bridge_train() + ["--dry-run"], {}, 0),
        "--help": (bridge_train() + ["--help"], {}, 0),
        "--help model": (bridge_train() + ["--help", "model"], {}, 0),
        "completion (TAB)": (bridge_train(), completion, 0),
        "unknown-flag error": (bridge_train() + ["--model.num_layer=3"], {}, 2),
    }


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd: list[str], env: dict, expected_rc: int = 0) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child) of one run."""
    cpu, start = _child_cpu(), time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != expected_rc:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr}")
    return elapsed, _child_cpu() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=7, help="counted repetitions (after one warm-up round)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()

    base_env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    with tempfile.TemporaryDirectory() as tmp:
        base_env["BRIDGE_TRAIN_CACHE_DIR"] = os.path.join(tmp, "cache")  # cold at first, then warm
        cmds = commands(tmp)
        names = list(cmds)
        wall: dict[str, list[float]] = {n: [] for n in names}
        cpu: dict[str, list[float]] = {n: [] for n in names}
        for rep in range(args.reps + 1):
            order = names[rep % len(names):] + names[:rep % len(names)]  # rotate who goes first
            measured = {}
            for n in order:
                cmd, extra, rc = cmds[n]
                measured[n] = timed(cmd, {**base_env, **extra}, rc)
            if rep == 0:
                continue  # warm-up (and the schema cache's one build)
            for n in names:
                wall[n].append(measured[n][0])
                cpu[n].append(measured[n][1])
            print(f"round {rep}: " + ", ".join(f"{n} {measured[n][0]:.2f}s" for n in names), flush=True)

    floor = names[0]
    load = os.getloadavg()[0]
    print(f"\n{os.cpu_count()} CPUs (1-min load average at the end {load:.1f}; above the CPU count the "
          f"wall times mostly measure other processes), {args.reps} interleaved repetitions, "
          f"python {sys.version.split()[0]}")
    print(f"{'command':<22}{'wall median':>12}{'best':>7}{'paired ratio':>14}{'cpu median':>12}  target")
    missed = []
    for n in names:
        med, best = statistics.median(wall[n]), min(wall[n])
        paired = statistics.median(t / f for t, f in zip(wall[n], wall[floor]))
        cpu_med = statistics.median(cpu[n])
        if n == floor:
            target = "(floor)"
        elif n == "--dry-run":
            ok = paired <= DRY_RUN_TARGET
            target = f"ratio <= {DRY_RUN_TARGET}: {'ok' if ok else 'MISSED'}"
        else:
            ok = med < FAST_TARGET_S
            target = f"< {FAST_TARGET_S} s: {'ok' if ok else 'MISSED'} ({1 / paired:.0f}x faster than the floor)"
        if "MISSED" in target:
            missed.append(n)
        print(f"{n:<22}{med:>11.3f}s{best:>6.3f}s{paired:>14.3f}{cpu_med:>11.3f}s  {target}")
    print("\npaired ratio = median of per-round wall(cmd) / wall(floor); cpu = user+sys of the process\n"
          + (f"missed: {', '.join(missed)}" if missed else "every target met"))
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
