#!/usr/bin/env python
"""Soak test: a long 2-process CPU run holds its memory and its disk use.

    python scripts/soak.py                       # 2,000 iterations, eval + checkpoint every 100, keep 3
    python scripts/soak.py --iters 500 --data mock -- --model.num_layers=4   # extra flags after --

Runs ``bridge-train --nproc-per-node 2`` (forked workers, gloo) on a tiny GPT with evaluation
every ``--eval-interval`` and a checkpoint every ``--save-interval`` iterations, keeping the last
``--most-recent-k``, on real text (Python's stdlib sources, byte-level, as ``make demo``) or mock
data. While it runs, a sampler reads every ``--sample-s`` seconds:
- the resident memory (RSS) of each worker process and their sum (psutil);
- the checkpoint folder: its size on disk and the ``iter_*`` folders in it (``.tmp`` ones are
  saves in flight, ``.deleting`` ones are being pruned).

At the end it prints, and judges:
- RSS per worker at iteration ``--baseline-iter`` (200) and at the end of training, each the
  median of the samples over ``--window`` iterations (memory swings inside an iteration and
  during a save; the median of a window compares like with like), and the growth between them.
  Target: < ``--growth-target`` % (5) for every worker and for the sum. The end window closes
  at the last training iteration (before the final validation/test evaluation).
- the largest number of ``iter_*`` folders seen at once. Target: at most most_recent_k + 1 (the
  one being written).
- the largest size of the checkpoint folder. Target: at most (most_recent_k + 1) x the size of
  one finished checkpoint (+ 5%, plus the tracker file).
- the folders left at the end. Target: exactly most_recent_k.
- training iterations per second (from the log lines' wall-clock arrival) and the job's exit code.
The exit code is 0 when every target holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
ITER_RE = re.compile(r"^iteration\s+(\d+)/\s*(\d+) \|")
ITER_DIR_RE = re.compile(r"^iter_\d{7}(\.tmp|\.deleting)?$")

# The tiny model: 2 layers of width 64, 64-token sequences, 8 samples per step (2 per rank
# x 2 micro-batches x DP 2): 20-35 iterations/s on 2 CPU cores, 2,000 iterations in 1-2 minutes.
MODEL_FLAGS = [
    "--model.num_layers=2", "--model.hidden_size=64", "--model.ffn_hidden_size=256",
    "--model.num_attention_heads=4", "--model.seq_length=64",
    "--train.global_batch_size=8", "--train.micro_batch_size=2",
    "--scheduler.lr_warmup_iters=20", "--dataset.num_workers=0",
]


@dataclass
class Sample:
    t: float
    iteration: int
    rss: dict[int, int]  # worker pid -> bytes
    ckpt_bytes: int
    iter_dirs: int
    tmp_dirs: int  # .tmp and .deleting


@dataclass
class Watch:
    """What the output reader and the sampler share."""

    iteration: int = 0
    iter_times: dict[int, float] = field(default_factory=dict)  # iteration -> arrival time of its log line
    samples: list[Sample] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)


def _dir_usage(root: Path) -> tuple[int, int, int]:
    """(bytes, finished iter_* folders, folders in flight) of a folder that changes under us.
    In flight: ``iter_*.tmp`` (a save being written), ``iter_*.deleting`` (one being pruned)."""
    total, finished, tmp = 0, 0, 0
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return 0, 0, 0
    for name in names:
        if ITER_DIR_RE.match(name):
            if name.endswith((".tmp", ".deleting")):
                tmp += 1
            else:
                finished += 1
    for dirpath, _, files in os.walk(root):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512  # on disk, as du counts
            except FileNotFoundError:  # removed by the rotation while we walked
                pass
    return total, finished, tmp


def _workers(launcher: psutil.Process) -> list[psutil.Process]:
    """The launcher's worker processes: its children, less multiprocessing's helpers."""
    out = []
    try:
        children = launcher.children()
    except psutil.Error:
        return out
    for child in children:
        try:
            if "multiprocessing" not in " ".join(child.cmdline()):
                out.append(child)
        except psutil.Error:
            pass
    return out


def _sample_loop(proc: subprocess.Popen, ckpt: Path, watch: Watch, every: float) -> None:
    launcher = psutil.Process(proc.pid)
    while not watch.done.is_set():
        rss = {}
        for worker in _workers(launcher):
            try:
                rss[worker.pid] = worker.memory_info().rss
            except psutil.Error:
                pass
        size, finished, tmp = _dir_usage(ckpt)
        if rss:
            watch.samples.append(Sample(time.time(), watch.iteration, rss, size, finished, tmp))
        watch.done.wait(every)


def _read_output(proc: subprocess.Popen, log, watch: Watch, echo: bool) -> None:
    for line in proc.stdout:
        log.write(line)
        if echo:
            sys.stdout.write(line)
        m = ITER_RE.match(line)
        if m:
            watch.iteration = int(m.group(1))
            watch.iter_times[watch.iteration] = time.time()


def _median_rss(samples: list[Sample], lo: int, hi: int, pids: list[int]) -> dict:
    """Median RSS per worker (and of the sum) over samples taken at iterations in [lo, hi]."""
    window = [s for s in samples if lo <= s.iteration <= hi and all(p in s.rss for p in pids)]
    if not window:
        return {}
    out = {p: statistics.median(s.rss[p] for s in window) for p in pids}
    out["sum"] = statistics.median(sum(s.rss[p] for p in pids) for s in window)
    out["n"] = len(window)
    return out


def _slope(samples: list[Sample], lo: int, hi: int, pids: list[int]) -> str:
    """Least-squares slope of the RSS sum over iterations [lo, hi]: a leak shows as a steady
    slope, allocator steps as a few jumps that the growth figure already bounds."""
    points = [(s.iteration, sum(s.rss[p] for p in pids)) for s in samples
              if lo <= s.iteration <= hi and all(p in s.rss for p in pids)]
    if len(points) < 2 or len({x for x, _ in points}) < 2:
        return "n/a"
    mx, my = statistics.fmean(x for x, _ in points), statistics.fmean(y for _, y in points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
    return f"{slope * 1000 / 1024:+.0f} KiB per 1000 iterations (least squares, iterations {lo}-{hi})"


def _prepare_data(args, workdir: Path) -> list[str]:
    if args.data == "mock":
        return []
    prefix = workdir / "data" / "stdlib_text_document"
    if not prefix.with_suffix(".bin").exists():
        prefix.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(ROOT / "scripts" / "preprocess_data.py"), "--python-stdlib-mb",
                        str(args.data_mb), "--output-prefix", str(prefix)], check=True, cwd=ROOT)
    return [f"--dataset.data_path={prefix}"]


def _mb(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=2000, help="training iterations (default 2000)")
    parser.add_argument("--eval-interval", type=int, default=100)
    parser.add_argument("--eval-iters", type=int, default=4, help="batches per evaluation")
    parser.add_argument("--save-interval", type=int, default=100)
    parser.add_argument("--most-recent-k", type=int, default=3)
    parser.add_argument("--log-interval", type=int, default=10)
    parser.add_argument("--data", choices=["stdlib", "mock"], default="stdlib",
                        help="stdlib: Python's stdlib sources, byte-level (as make demo); mock: megatron-core mock data")
    parser.add_argument("--data-mb", type=float, default=4, help="MB of stdlib text to preprocess")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--sample-s", type=float, default=0.25, help="seconds between samples")
    parser.add_argument("--baseline-iter", type=int, default=200, help="iteration the growth is measured from")
    parser.add_argument("--window", type=int, default=100, help="iterations each RSS median covers")
    parser.add_argument("--growth-target", type=float, default=5.0, help="largest RSS growth in %% that passes")
    parser.add_argument("--workdir", type=Path, help="where data, checkpoints and the log go (default: a temp dir)")
    parser.add_argument("--echo", action="store_true", help="also print the job's output as it runs")
    parser.add_argument("extra", nargs="*", help="more bridge-train flags (after --)")
    args = parser.parse_args(argv)
    if args.iters < args.baseline_iter + 2 * args.window:
        parser.error(f"--iters ({args.iters}) must be at least --baseline-iter + 2 x --window "
                     f"({args.baseline_iter + 2 * args.window})")

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bridge-train-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    ckpt, log_path = workdir / "checkpoints", workdir / "soak.log"
    if ckpt.exists() and any(ckpt.iterdir()):
        parser.error(f"{ckpt} is not empty: the soak starts from scratch (choose another --workdir)")
    cmd = [
        sys.executable, "-m", "megatron_bridge_cli", "--nproc-per-node", str(args.nproc), *MODEL_FLAGS,
        *_prepare_data(args, workdir),
        f"--train.train_iters={args.iters}", f"--train.eval_interval={args.eval_interval}",
        f"--train.eval_iters={args.eval_iters}", f"--logger.log_interval={args.log_interval}",
        f"--checkpoint.save={ckpt}", f"--checkpoint.save_interval={args.save_interval}",
        f"--checkpoint.most_recent_k={args.most_recent_k}", *args.extra,
    ]
    print("soak:", " ".join(cmd[1:]), flush=True)
    print(f"soak: log {log_path}", flush=True)

    watch = Watch()
    start = time.time()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                bufsize=1)
        sampler = threading.Thread(target=_sample_loop, args=(proc, ckpt, watch, args.sample_s), daemon=True)
        sampler.start()
        try:
            _read_output(proc, log, watch, args.echo)
            rc = proc.wait()
        except KeyboardInterrupt:
            proc.terminate()
            rc = proc.wait()
        finally:
            watch.done.set()
            sampler.join()
    wall = time.time() - start
    _write_samples(watch.samples, workdir / "samples.csv")
    return report(args, watch, ckpt, rc, wall)


def _write_samples(samples: list[Sample], path: Path) -> None:
    """One row per sample: time, iteration, RSS of each worker (by pid), checkpoint folder."""
    pids = sorted({p for s in samples for p in s.rss})
    with open(path, "w") as f:
        f.write(",".join(["t_s", "iteration", *[f"rss_{p}" for p in pids], "ckpt_bytes", "iter_dirs", "in_flight"]) + "\n")
        for s in samples:
            row = [f"{s.t - samples[0].t:.2f}", str(s.iteration), *[str(s.rss.get(p, "")) for p in pids],
                   str(s.ckpt_bytes), str(s.iter_dirs), str(s.tmp_dirs)]
            f.write(",".join(row) + "\n")
    print(f"soak: samples in {path}", flush=True)


def report(args, watch: Watch, ckpt: Path, rc: int, wall: float) -> int:
    samples, k = watch.samples, args.most_recent_k
    results: list[tuple[str, bool, str]] = []
    results.append(("job exit code", rc == 0, f"{rc}"))
    last = max(watch.iter_times, default=0)
    results.append(("iterations trained", last == args.iters, f"{last} of {args.iters}"))

    # Memory: the workers present through the whole measured span.
    pids = sorted({p for s in samples for p in s.rss})
    base = _median_rss(samples, args.baseline_iter, args.baseline_iter + args.window, pids)
    end = _median_rss(samples, args.iters - args.window, args.iters - 1, pids)
    print()
    print(f"soak: {len(samples)} samples every {args.sample_s:g} s over {wall:.0f} s; workers (pid) {pids}")
    if base and end:
        for key in pids + ["sum"]:
            growth = 100.0 * (end[key] - base[key]) / base[key]
            name = f"RSS worker {pids.index(key)} (pid {key})" if key != "sum" else "RSS sum of workers"
            print(f"  {name}: {_mb(base[key])} at iterations {args.baseline_iter}-{args.baseline_iter + args.window} "
                  f"(median of {base['n']}), {_mb(end[key])} at {args.iters - args.window}-{args.iters - 1} "
                  f"(median of {end['n']}): growth {growth:+.2f}%")
            results.append((f"{name} growth < {args.growth_target:g}%", growth < args.growth_target, f"{growth:+.2f}%"))
        peak = max(sum(s.rss.values()) for s in samples)
        print(f"  RSS sum, largest sample: {_mb(peak)}; trend {_slope(samples, args.baseline_iter, args.iters - 1, pids)}")
    else:
        results.append(("RSS samples in both windows", False, f"baseline {base.get('n', 0)}, end {end.get('n', 0)}"))

    # Disk.
    max_dirs = max((s.iter_dirs + s.tmp_dirs for s in samples), default=0)
    max_bytes = max((s.ckpt_bytes for s in samples), default=0)
    final_bytes, final_dirs, final_tmp = _dir_usage(ckpt)
    finished = sorted(p for p in ckpt.glob("iter_*") if not p.name.endswith((".tmp", ".deleting"))) if ckpt.exists() else []
    one = _dir_usage(finished[-1])[0] if finished else 0
    bound = (k + 1) * one * 1.05 + 64 * 1024
    print(f"  checkpoint folder: largest {_mb(max_bytes)} with up to {max_dirs} iter_* folders at once; "
          f"one checkpoint {_mb(one)}; at the end {_mb(final_bytes)} in {final_dirs} folders "
          f"({', '.join(p.name for p in finished)})")
    results.append((f"iter_* folders at once <= most_recent_k + 1 = {k + 1}", 0 < max_dirs <= k + 1, f"{max_dirs}"))
    results.append((f"checkpoint folder <= (k + 1) x one checkpoint = {_mb(bound)}", 0 < max_bytes <= bound,
                    _mb(max_bytes)))
    results.append((f"iter_* folders at the end == most_recent_k = {k}", final_dirs == k and final_tmp == 0,
                    f"{final_dirs} (+{final_tmp} in flight)"))

    # Speed: between the first and last logged iteration (setup and final evaluation excluded).
    its = sorted(watch.iter_times)
    if len(its) >= 2:
        span = watch.iter_times[its[-1]] - watch.iter_times[its[0]]
        rate = (its[-1] - its[0]) / span if span > 0 else float("nan")
        print(f"  speed: {rate:.2f} iterations/s from iteration {its[0]} to {its[-1]} "
              f"(evaluation and checkpoint saves included); whole job {wall:.0f} s")

    print()
    failed = 0
    for name, ok, value in results:
        print(f"  {'PASS' if ok else 'FAIL'}  {name}: {value}")
        failed += not ok
    print(f"\nsoak: {'PASS' if not failed else f'FAIL ({failed} target(s) missed)'}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
