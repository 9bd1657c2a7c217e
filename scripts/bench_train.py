"""bridge-train vs a minimal hand-written megatron-core loop: step time, peak memory, whole job.

    python scripts/bench_train.py --nproc 2 --iters 40 --repeats 2 --job-iters 20 --job-repeats 5

Both train the same GPT (gpt_cpu_tiny's architecture) on the same megatron-core mock data with
the same process count, batch and optimizer, one after the other in this one invocation
(alternating, ``--repeats`` times; the best median of each side counts, which damps noise from
other load on the machine). Per-iteration time is the median over the iterations after
``--warmup``, as each loop itself reports it (bridge-train's Megatron-LM log line at
log_interval=1; the baseline times its loop body the same way, loss ``.item()`` included).
Peak memory is the largest max-RSS of any rank on CPU (CUDA max allocated on GPU).
Targets: time ratio <= 1.03, memory ratio <= 1.10.

The whole-job row times what a user waits for, start to exit: ``bridge-train --nproc-per-node N``
(the same run as CLI flags, see ``bench_flags``) against the baseline script under
``python -m torch.distributed.run --standalone --nproc-per-node N``, imports, rendezvous, setup
and teardown included. The two alternate (``--job-repeats`` pairs, order swapped every pair);
the ratio of the medians counts. Target: whole-job ratio <= 1.20. ``--only job`` runs just it;
``BRIDGE_TRAIN_START_METHOD=exec`` in the environment times fresh-interpreter workers instead of
forked ones (the figure before bridge-train forked them). OMP_NUM_THREADS is left as the caller
has it (both launchers default it to 1 per worker).

The LoRA row (``--only lora``) trains one wider model (gpt_cpu_tiny at hidden 512: ~17M
parameters, so gradients and Adam state are a sizeable share of memory) twice through
bridge-train from the same base checkpoint, made first by a one-iteration bridge-train run in a
temporary folder: full training, then ``--peft=lora`` (default targets, dim 32). It prints the
per-iteration median and the largest per-worker peak of each, and the ratios LoRA/full
(``--lora-iters``, ``--lora-repeats`` alternating pairs, best of each). Target: memory ratio < 1.0.

The straggler row (``--only straggler``) trains bench_config through bridge-train with
``--straggler`` off and on (a report every ``--straggler-interval`` iterations, 10 by default:
ten times the default's rate, so the all-gather's share shows) and prints the per-iteration
median and mean of each and their ratios on/off (``--repeats`` alternating pairs, best of each).
Target: ratio <= 1.02.

The ft row (``--only ft``) runs bench_flags through ``bridge-train --nproc-per-node N`` with
``--ft`` off and on: on, the workers run under nvidia-resiliency-ext's ft_launcher and send a
heartbeat to their rank monitor after every iteration; off, the plain launcher (both sides with
fresh-interpreter workers, BRIDGE_TRAIN_START_METHOD=exec, as ft_launcher starts them). It prints
the per-iteration median and mean from each job's log lines and the ratios on/off (``--repeats``
alternating pairs, best of each). Target: ratio <= 1.02.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TIME_RE = re.compile(r"^iteration\s+(\d+)/.*elapsed time per iteration \(ms\): ([0-9.]+)", re.M)


def bench_config(iters: int, **recipe):
    """The benchmarked run: gpt_cpu_tiny (``recipe`` overrides its arguments) on mock data, no
    evaluation, no checkpoints."""
    from megatron_bridge_cli.recipes.gpt import gpt_cpu_tiny

    cfg = gpt_cpu_tiny(train_iters=iters, **recipe)
    cfg.scheduler.lr_warmup_iters = 1
    cfg.train.eval_iters = 0
    cfg.train.eval_interval = None
    cfg.logger.log_interval = 1
    cfg.logger.log_memory = False
    cfg.dataset.data_path = None
    return cfg


LORA_MODEL = {"hidden_size": 512, "num_layers": 4}
"""The LoRA row's model: gpt_cpu_tiny's recipe arguments."""


def lora_config(kind: str, iters: int, base: str):
    """The LoRA row's runs. ``lora-base``: one iteration saving the base weights to ``base``;
    ``lora-full``: full training from them; ``lora``: --peft=lora from them (the same run but for
    the adapters)."""
    from megatron_bridge_cli.config import LoRAConfig

    cfg = bench_config(iters, **LORA_MODEL)
    if kind == "lora-base":
        cfg.checkpoint.save = base
        cfg.checkpoint.save_interval = iters
        cfg.checkpoint.save_optim = cfg.checkpoint.save_rng = False  # only the weights are needed
        return cfg
    cfg.checkpoint.pretrained_checkpoint = base  # both sides start from the same weights
    if kind == "lora":
        cfg.peft = LoRAConfig()
    return cfg


def straggler_config(kind: str, iters: int, interval: int):
    """The straggler row's runs: bench_config, with --straggler on for ``straggler-on``."""
    from megatron_bridge_cli.config import StragglerDetectionConfig

    cfg = bench_config(iters)
    if kind == "straggler-on":
        cfg.straggler = StragglerDetectionConfig(report_interval=interval)
    return cfg


def bench_flags(iters: int) -> list[str]:
    """``bench_config(iters)`` as bridge-train flags (the whole-job row checks they agree)."""
    return ["--recipe=gpt_cpu_tiny", f"--train.train_iters={iters}", "--scheduler.lr_warmup_iters=1",
            "--train.eval_iters=0", "--train.eval_interval=null", "--logger.log_interval=1",
            "--logger.log_memory=false", "--dataset.data_path=null"]


def _peak_mb() -> float:
    import resource

    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _write(out_dir: str, name: str, times_ms: list[float]) -> None:
    rank = int(os.environ.get("RANK", 0))
    Path(out_dir, f"{name}.rank{rank}.json").write_text(json.dumps({"times_ms": times_ms, "peak_mb": _peak_mb()}))


# --------------------------------------------------------------------------- the two workers
def worker_bridge(iters: int, out_dir: str, kind: str = "bridge", base: str | None = None) -> None:
    """bridge-train's run_training on bench_config (kind ``bridge``) or a LoRA-row config."""
    from megatron_bridge_cli.training.entry import run_training

    if kind.startswith("straggler"):
        cfg = straggler_config(kind, iters, int(base))  # (the report interval travels as --base)
    else:
        cfg = bench_config(iters) if kind == "bridge" else lora_config(kind, iters, base)
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = run_training(cfg)
    sys.stdout.write(buf.getvalue()[-2000:])
    times = [float(m.group(2)) for m in TIME_RE.finditer(buf.getvalue())]
    _write(out_dir, kind, times)
    if rc:
        raise SystemExit(rc)


def worker_baseline(iters: int, out_dir: str) -> None:
    """What a user would write by hand with megatron-core (cf. its run_simple_mcore_train_loop)."""
    import datetime

    import torch
    from megatron.core import parallel_state, tensor_parallel
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDatasetConfig, MockGPTDataset
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler
    from megatron.core.pipeline_parallel import get_forward_backward_func
    from megatron.core.transformer import TransformerConfig

    from megatron_bridge_cli.data.tokenizers import ByteLevelTokenizer

    cpu = not torch.cuda.is_available()
    if cpu:
        from megatron_bridge_cli.training.cpu_compat import apply_cpu_compat

        apply_cpu_compat()
    else:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    torch.distributed.init_process_group("gloo" if cpu else "nccl", timeout=datetime.timedelta(minutes=5))
    parallel_state.initialize_model_parallel(1, 1)
    torch.manual_seed(1234)
    tensor_parallel.model_parallel_cuda_manual_seed(1234)

    ref = bench_config(iters)  # same sizes as the bridge run, spelled out by hand below
    m, t = ref.model, ref.train
    seq, gbs, mbs = m.seq_length, t.global_batch_size, t.micro_batch_size
    dp = torch.distributed.get_world_size()
    config = TransformerConfig(
        num_layers=m.num_layers, hidden_size=m.hidden_size, num_attention_heads=m.num_attention_heads,
        ffn_hidden_size=m.ffn_hidden_size, normalization="RMSNorm", activation_func=torch.nn.functional.silu,
        gated_linear_unit=True, add_bias_linear=False, hidden_dropout=0.0, attention_dropout=0.0,
    )
    model = GPTModel(
        config=config, transformer_layer_spec=get_gpt_layer_local_spec(normalization="RMSNorm"),
        vocab_size=384, max_sequence_length=seq, position_embedding_type="rope",
        share_embeddings_and_output_weights=True,
    )
    if not cpu:
        model = model.cuda()
    model = DistributedDataParallel(config=config, ddp_config=DistributedDataParallelConfig(), module=model)
    o = ref.optimizer
    optimizer = get_megatron_optimizer(
        OptimizerConfig(optimizer="adam", lr=o.lr, min_lr=o.min_lr, weight_decay=o.weight_decay,
                        adam_beta1=0.9, adam_beta2=o.adam_beta2, adam_eps=o.adam_eps, clip_grad=1.0),
        [model],
    )
    scheduler = OptimizerParamScheduler(
        optimizer, init_lr=0.0, max_lr=o.lr, min_lr=o.min_lr, lr_warmup_steps=gbs, lr_decay_steps=iters * gbs,
        lr_decay_style="cosine", start_wd=o.weight_decay, end_wd=o.weight_decay, wd_incr_steps=iters * gbs,
        wd_incr_style="constant",
    )
    config.grad_scale_func = optimizer.scale_loss
    config.finalize_model_grads_func = finalize_model_grads

    data_config = GPTDatasetConfig(
        random_seed=1234, sequence_length=seq, split="969,30,1", tokenizer=ByteLevelTokenizer(),
        reset_position_ids=False, reset_attention_mask=False, eod_mask_loss=False,
    )
    train_ds = BlendedMegatronDatasetBuilder(MockGPTDataset, [iters * gbs, 0, 0], lambda: True, data_config).build()[0]
    rank = torch.distributed.get_rank()

    def batches():
        for start in range(0, iters * gbs, mbs * dp):
            items = [train_ds[start + rank * mbs + i] for i in range(mbs)]
            yield {k: torch.stack([it[k] for it in items]) for k in items[0]}

    data = batches()

    def forward_step(data_iterator, model):
        b = next(data_iterator)
        if not cpu:
            b = {k: v.cuda(non_blocking=True) for k, v in b.items()}
        out = model(b["tokens"], b["position_ids"], b["attention_mask"], labels=b["labels"])

        def loss_func(output):
            mask = b["loss_mask"].view(-1).float()
            total = torch.stack([(output.float().view(-1) * mask).sum(), mask.sum()])
            return total[0].clone(), total[1].to(torch.int), {"lm loss": total.detach()}

        return out, loss_func

    fwd_bwd = get_forward_backward_func()
    times = []
    for it in range(iters):
        if not cpu:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        model.zero_grad_buffer()
        optimizer.zero_grad()
        losses = fwd_bwd(forward_step_func=forward_step, data_iterator=data, model=[model],
                         num_microbatches=gbs // (mbs * dp), seq_length=seq, micro_batch_size=mbs, forward_only=False)
        optimizer.step()
        scheduler.step(increment=gbs)
        total = torch.stack([d["lm loss"] for d in losses]).sum(0)
        torch.distributed.all_reduce(total)
        loss = (total[0] / total[1]).item()
        if not cpu:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1000)
        if rank == 0:
            print(f"baseline iteration {it + 1} | lm loss: {loss:.6E} | ms: {times[-1]:.1f}", flush=True)
    _write(out_dir, "baseline", times)
    parallel_state.destroy_model_parallel()
    torch.distributed.destroy_process_group()


# --------------------------------------------------------------------------- the driver
def run_side(kind: str, nproc: int, iters: int, out_dir: str, base: str | None = None) -> dict:
    for f in Path(out_dir).glob(f"{kind}.rank*.json"):
        f.unlink()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           __file__, "--worker", kind, "--iters", str(iters), "--out", out_dir] + (["--base", base] if base else [])
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    proc = subprocess.run(["timeout", "600"] + cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{kind} run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    ranks = [json.loads(f.read_text()) for f in sorted(Path(out_dir).glob(f"{kind}.rank*.json"))]
    times = next(r["times_ms"] for r in ranks if r["times_ms"])  # the reporting rank's
    return {"times_ms": times, "peak_mb": max(r["peak_mb"] for r in ranks)}


def _job_env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def run_job(kind: str, nproc: int, iters: int, out_dir: str) -> float:
    """Wall seconds of one whole job, from the command's start to its exit."""
    if kind == "bridge":
        cmd = [sys.executable, "-m", "megatron_bridge_cli", "--nproc-per-node", str(nproc), *bench_flags(iters)]
        done = re.compile(rf"^iteration\s+{iters}/", re.M)
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               __file__, "--worker", "baseline", "--iters", str(iters), "--out", out_dir]
        done = re.compile(rf"^baseline iteration {iters} ", re.M)
    t0 = time.perf_counter()
    proc = subprocess.run(["timeout", "600"] + cmd, env=_job_env(), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode or not done.search(proc.stdout):
        raise SystemExit(f"{kind} job failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return wall


def check_flags(iters: int, nproc: int) -> None:
    """The flags of the whole-job row must give the config the step-time table trains."""
    import importlib

    from megatron_bridge_cli.cli.main import main as bridge_main

    finalize = importlib.import_module("megatron_bridge_cli.config.finalize")  # the module, not the function

    class Seen(Exception):
        pass

    def capture(cfg, world_size):
        raise Seen(cfg.to_yaml())

    real, finalize.validate = finalize.validate, capture  # _launch validates right before launching
    try:
        bridge_main(["--nproc-per-node", str(nproc), *bench_flags(iters)])
        raise SystemExit("bench_flags: bridge-train did not reach its launch step")
    except Seen as seen:
        if str(seen) != bench_config(iters).to_yaml():
            raise SystemExit("bench_flags(iters) and bench_config(iters) describe different runs")
    finally:
        finalize.validate = real


def bench_whole_job(nproc: int, iters: int, repeats: int, out_dir: str) -> float:
    """Interleaved whole-job repetitions; prints the row and returns the median ratio."""
    check_flags(iters, nproc)
    walls = {"bridge": [], "baseline": []}
    for rep in range(repeats):
        for kind in ("bridge", "baseline") if rep % 2 == 0 else ("baseline", "bridge"):
            walls[kind].append(run_job(kind, nproc, iters, out_dir))
            print(f"  job {rep + 1} {kind:8s}: {walls[kind][-1]:6.2f} s", flush=True)
    med = {k: statistics.median(v) for k, v in walls.items()}
    pairs = statistics.median(b / a for b, a in zip(walls["bridge"], walls["baseline"]))
    ratio = med["bridge"] / med["baseline"]
    print(f"\nwhole job: {nproc} processes, {iters} iterations, median of {repeats} (wall s, start to exit)")
    print(f"bridge-train --nproc-per-node {nproc}   {med['bridge']:6.2f}")
    print(f"torchrun + megatron-core script  {med['baseline']:6.2f}")
    print(f"whole-job ratio {ratio:.3f} (median of pair ratios {pairs:.3f})  (target <= 1.20) "
          f"{'ok' if ratio <= 1.20 else 'ABOVE TARGET'}")
    return ratio


def bench_lora(nproc: int, iters: int, warmup: int, repeats: int) -> float:
    """Full training vs --peft=lora of one model from one base checkpoint; prints the row and
    returns the memory ratio LoRA/full."""
    results = {"lora-full": [], "lora": []}
    with tempfile.TemporaryDirectory() as out:
        base = str(Path(out, "base"))
        run_side("lora-base", nproc, 1, out, base)
        for rep in range(repeats):
            for kind in ("lora-full", "lora") if rep % 2 == 0 else ("lora", "lora-full"):
                r = run_side(kind, nproc, iters, out, base)
                med = statistics.median(r["times_ms"][warmup:])
                results[kind].append((med, r["peak_mb"]))
                print(f"  run {rep + 1} {kind:9s}: median {med:8.1f} ms/iter, peak {r['peak_mb']:8.1f} MB", flush=True)
    best = {k: (min(v[0] for v in vals), max(v[1] for v in vals)) for k, vals in results.items()}
    unit = "CUDA max allocated" if _cuda() else "max RSS"
    dims = ", ".join(f"{k}={v}" for k, v in LORA_MODEL.items())
    print(f"\nLoRA vs full training: gpt_cpu_tiny ({dims}), {nproc} processes, {iters} iterations "
          f"(median after {warmup}), best of {repeats}")
    print(f"{'':12s}{'ms/iter':>10s}{'peak MB per worker (' + unit + ')':>39s}")
    for k, label in (("lora-full", "full"), ("lora", "lora")):
        print(f"{label:12s}{best[k][0]:10.1f}{best[k][1]:39.1f}")
    tr, mr = best["lora"][0] / best["lora-full"][0], best["lora"][1] / best["lora-full"][1]
    print(f"LoRA/full time ratio   {tr:.3f}")
    print(f"LoRA/full memory ratio {mr:.3f}  (target < 1.0) {'ok' if mr < 1.0 else 'ABOVE TARGET'}")
    return mr


def on_off_rows(label: str, off: str, on: str, run, repeats: int, warmup: int, title: str) -> tuple[dict, float]:
    """Alternating off/on jobs (order swapped every pair), ``run(kind)`` giving one job's
    per-iteration ms; prints each run, the best median and mean of each side and their ratios
    on/off against the 1.02 target. Returns the best (median, mean) per side and the median ratio."""
    results: dict[str, list] = {off: [], on: []}
    for rep in range(repeats):
        for kind in (off, on) if rep % 2 == 0 else (on, off):
            times = run(kind)[warmup:]
            results[kind].append((statistics.median(times), statistics.mean(times)))
            print(f"  run {rep + 1} {kind:13s}: median {results[kind][-1][0]:8.1f} ms/iter, "
                  f"mean {results[kind][-1][1]:8.1f}", flush=True)
    best = {k: (min(v[0] for v in vals), min(v[1] for v in vals)) for k, vals in results.items()}
    median_ratio, mean_ratio = best[on][0] / best[off][0], best[on][1] / best[off][1]
    print(f"\n{title}, best of {repeats}")
    print(f"{'':16s}{'median ms/iter':>16s}{'mean ms/iter':>14s}")
    for k in (off, on):
        print(f"{k:16s}{best[k][0]:16.1f}{best[k][1]:14.1f}")
    print(f"{label} on/off ratio  median {median_ratio:.3f}  mean {mean_ratio:.3f}  (target <= 1.02) "
          f"{'ok' if max(median_ratio, mean_ratio) <= 1.02 else 'ABOVE TARGET'}")
    return best, median_ratio


def bench_straggler(nproc: int, iters: int, warmup: int, repeats: int, interval: int) -> float:
    """Step time with --straggler off and on; prints the row and returns the median ratio on/off."""
    with tempfile.TemporaryDirectory() as out:
        _, ratio = on_off_rows(
            "straggler", "straggler-off", "straggler-on",
            lambda kind: run_side(kind, nproc, iters, out, str(interval))["times_ms"], repeats, warmup,
            f"straggler detection: {nproc} processes, {iters} iterations (after {warmup}), a report every "
            f"{interval} iterations")
    return ratio


HEARTBEAT_RE = re.compile(r"^ft: rank 0 sent (\d+) heartbeats, ([0-9.]+) ms each on average", re.M)


def run_ft_side(kind: str, nproc: int, iters: int) -> tuple[list[float], float | None]:
    """Per-iteration ms of one bridge-train job, --ft on (``ft-on``) or off, from its log lines, and
    the mean ms of one heartbeat (rank 0's own measurement; None with --ft off)."""
    cmd = [sys.executable, "-m", "megatron_bridge_cli", "--nproc-per-node", str(nproc), *bench_flags(iters)]
    if kind == "ft-on":
        cmd.append("--ft")
    env = dict(_job_env(), BRIDGE_TRAIN_START_METHOD="exec", OMP_NUM_THREADS="1")
    proc = subprocess.run(["timeout", "600"] + cmd, env=env, capture_output=True, text=True)
    times = {int(m.group(1)): float(m.group(2)) for m in TIME_RE.finditer(proc.stdout)}
    if proc.returncode or sorted(times) != list(range(1, iters + 1)):
        raise SystemExit(f"{kind} job failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    hb = HEARTBEAT_RE.search(proc.stdout)
    return [times[i] for i in sorted(times)], float(hb.group(2)) if hb else None


def bench_ft(nproc: int, iters: int, warmup: int, repeats: int) -> float:
    """Step time with ft heartbeats off and on; prints the row and returns the median ratio on/off."""
    heartbeat_ms: list[float] = []

    def run(kind: str) -> list[float]:
        times, hb = run_ft_side(kind, nproc, iters)
        if hb is not None:
            heartbeat_ms.append(hb)
        return times

    best, ratio = on_off_rows("ft", "ft-off", "ft-on", run, repeats, warmup,
                              f"ft heartbeats: {nproc} processes, {iters} iterations (after {warmup}), a heartbeat "
                              "per iteration")
    # The A/B ratio above moves with other load on the machine; what ft adds to a step is the
    # heartbeat call, which rank 0 times itself: step + heartbeat over step, load-independent.
    hb = statistics.median(heartbeat_ms)
    print(f"ft heartbeat: {hb:.3f} ms per iteration (median of {len(heartbeat_ms)} jobs' means); "
          f"(step + heartbeat) / step = {(best['ft-off'][0] + hb) / best['ft-off'][0]:.4f}")
    return ratio


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--iters", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5, help="first iterations left out of the median")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--job-iters", type=int, default=20, help="iterations of the whole-job row")
    p.add_argument("--job-repeats", type=int, default=5, help="bridge/baseline pairs of the whole-job row")
    p.add_argument("--lora-iters", type=int, default=12, help="iterations of each LoRA-row run")
    p.add_argument("--lora-repeats", type=int, default=1, help="full/LoRA pairs of the LoRA row")
    p.add_argument("--straggler-interval", type=int, default=10, help="--straggler.report_interval of the straggler row")
    p.add_argument("--only", choices=["steps", "job", "lora", "straggler", "ft"],
                   help="run only the step-time table, the whole-job row, the LoRA row, the straggler row or the "
                        "ft heartbeat row")
    p.add_argument("--worker", choices=["bridge", "baseline", "lora-base", "lora-full", "lora", "straggler-off",
                                        "straggler-on"], help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--base", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker in ("bridge", "lora-base", "lora-full", "lora", "straggler-off", "straggler-on"):
        worker_bridge(a.iters, a.out, a.worker, a.base)
        return 0
    if a.worker == "baseline":
        worker_baseline(a.iters, a.out)
        return 0
    if a.only in (None, "job"):
        with tempfile.TemporaryDirectory() as out:
            bench_whole_job(a.nproc, a.job_iters, a.job_repeats, out)
    if a.only in (None, "lora"):
        bench_lora(a.nproc, a.lora_iters, a.warmup, a.lora_repeats)
    if a.only in (None, "straggler"):
        bench_straggler(a.nproc, a.iters, a.warmup, a.repeats, a.straggler_interval)
    if a.only in (None, "ft"):
        bench_ft(a.nproc, a.iters, a.warmup, a.repeats)
    if a.only in ("job", "lora", "straggler", "ft"):
        return 0
    results = {"bridge": [], "baseline": []}
    with tempfile.TemporaryDirectory() as out:
        for rep in range(a.repeats):
            for kind in ("bridge", "baseline") if rep % 2 == 0 else ("baseline", "bridge"):
                r = run_side(kind, a.nproc, a.iters, out)
                med = statistics.median(r["times_ms"][a.warmup:])
                results[kind].append((med, r["peak_mb"]))
                print(f"  run {rep + 1} {kind:8s}: median {med:8.1f} ms/iter, peak {r['peak_mb']:8.1f} MB", flush=True)
    best = {k: (min(v[0] for v in vals), max(v[1] for v in vals)) for k, vals in results.items()}
    unit = "CUDA max allocated" if _cuda() else "max RSS"
    print(f"\n{a.nproc} processes, {a.iters} iterations (median after {a.warmup}), best of {a.repeats}")
    print(f"{'':12s}{'ms/iter':>10s}{'peak MB (' + unit + ')':>28s}")
    for k in ("bridge", "baseline"):
        print(f"{k:12s}{best[k][0]:10.1f}{best[k][1]:28.1f}")
    tr, mr = best["bridge"][0] / best["baseline"][0], best["bridge"][1] / best["baseline"][1]
    print(f"time ratio   {tr:.3f}  (target <= 1.03) {'ok' if tr <= 1.03 else 'ABOVE TARGET'}")
    print(f"memory ratio {mr:.3f}  (target <= 1.10) {'ok' if mr <= 1.10 else 'ABOVE TARGET'}")
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    sys.exit(main())
