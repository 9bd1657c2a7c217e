#!/usr/bin/env python
"""How much does the CLI itself cost? `bridge-train --dry-run` and `--help` against the floor.

The floor is `python -c "import megatron.core"`: bridge-train cannot start faster than the
import of the library its config classes subclass. Each repetition runs the three commands
back to back in a rotating order (interleaved, so drifting machine load hits all of them
alike); the first round warms the page cache and is not counted. Reported per command: the
median and best wall time, and the ratio to the floor, both as median(cmd) / median(floor)
and as the median of the per-repetition ratios (paired, the more robust figure on a busy
machine). Target: ratio <= 1.15.

    .venv/bin/python scripts/bench_cli.py [--reps 7] [--target 1.15] [--check]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def bridge_train() -> list[str]:
    """The console script next to this interpreter, else `python -m megatron_bridge_cli`."""
    script = Path(sys.executable).with_name("bridge-train")
    return [str(script)] if script.exists() else [sys.executable, "-m", "megatron_bridge_cli"]


def commands() -> dict[str, list[str]]:
    return {
        "import megatron.core": [sys.executable, "-c", "import megatron.core"],
        "bridge-train --dry-run": bridge_train() + ["--dry-run"],
        "bridge-train --help": bridge_train() + ["--help"],
    }


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child) of one run."""
    cpu, start = _child_cpu(), time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr}")
    return elapsed, _child_cpu() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=7, help="counted repetitions (after one warm-up round)")
    parser.add_argument("--target", type=float, default=1.15, help="ratio to the floor that passes")
    parser.add_argument("--check", action="store_true", help="exit 1 when a paired ratio exceeds --target")
    args = parser.parse_args()

    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    cmds = commands()
    names = list(cmds)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for rep in range(args.reps + 1):
        order = names[rep % len(names):] + names[:rep % len(names)]  # rotate who goes first
        measured = {n: timed(cmds[n], env) for n in order}
        if rep == 0:
            continue  # warm-up
        for n in names:
            wall[n].append(measured[n][0])
            cpu[n].append(measured[n][1])
        print(f"round {rep}: " + ", ".join(f"{n} {measured[n][0]:.2f}s" for n in names), flush=True)

    floor = names[0]
    load = os.getloadavg()[0]
    print(f"\n{os.cpu_count()} CPUs (1-min load average at the end {load:.1f}; above the CPU count the "
          f"wall times mostly measure other processes), {args.reps} interleaved repetitions, "
          f"python {sys.version.split()[0]}")
    print(f"{'command':<24}{'wall median':>12}{'best':>7}{'ratio':>7}{'paired':>8}"
          f"{'cpu median':>12}{'ratio':>7}")
    worst = 0.0
    for n in names:
        med, best = statistics.median(wall[n]), min(wall[n])
        ratio = med / statistics.median(wall[floor])
        paired = statistics.median(t / f for t, f in zip(wall[n], wall[floor]))
        cpu_med = statistics.median(cpu[n])
        cpu_ratio = cpu_med / statistics.median(cpu[floor])
        if n != floor:
            worst = max(worst, paired)
        print(f"{n:<24}{med:>11.2f}s{best:>6.2f}s{ratio:>7.3f}{paired:>8.3f}{cpu_med:>11.2f}s{cpu_ratio:>7.3f}")
    verdict = "within" if worst <= args.target else "ABOVE"
    print(f"\nratio = median wall / median floor wall; paired = median of per-round ratios; cpu = user+sys "
          f"of the process (robust when the machine is shared)\nworst paired wall ratio {worst:.3f}: "
          f"{verdict} the target {args.target}")
    return 1 if args.check and worst > args.target else 0


if __name__ == "__main__":
    raise SystemExit(main())
