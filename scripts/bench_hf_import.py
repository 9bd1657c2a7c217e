"""Benchmark: import a HuggingFace checkpoint of about 1 GB into 2 ranks at TP=2.

    python scripts/bench_hf_import.py [--layers 12] [--keep DIR]

Writes a random Llama-architecture model (fp32, hidden 1024, GQA 16/4 heads, SwiGLU 4096,
vocabulary 32,000; about 1 GB in 2 safetensors shards) with the project's own HF writer,
then runs two 2-process jobs over gloo on the same (page-cached) files, side by side:

* raw:    each rank reads every other tensor whole (safetensors ``get_tensor``) into buffers it
          allocated and touched before the clock starts: the cost of bringing the bytes into
          resident memory with the same parallelism, nothing else;
* import: each rank builds its TP=2 half of the megatron-core model and fills it with
          ``hf.load.load_hf_weights`` (slices read through the memory map, q/k/v interleaved,
          gate/up fused, copied into the parameters). The model is built as training builds it,
          initialized, so its memory is resident before the clock starts (on these VMs a
          first-touch page fault costs about 5x the copy: a model built without initialization
          and filled by the import took 5x longer, all of it in those faults).

It prints the GB/s of each, the ratio import/raw (target <= 1.3x), and each rank's peak RSS
next to the full model's size (target: below it; no rank materializes the whole model).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HIDDEN, HEADS, KV_HEADS, FFN, VOCAB = 1024, 16, 4, 4096, 32000


def hf_config(layers: int) -> dict:
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
            "intermediate_size": FFN, "num_hidden_layers": layers, "num_attention_heads": HEADS,
            "num_key_value_heads": KV_HEADS, "vocab_size": VOCAB, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
            "max_position_embeddings": 4096, "tie_word_embeddings": False, "hidden_act": "silu", "dtype": "float32"}


def write_model(folder: Path, layers: int) -> int:
    """Random tensors under Llama's names; returns the bytes written."""
    import torch

    from megatron_bridge_cli.hf.export import write_hf_folder

    d, kv = HIDDEN // HEADS, KV_HEADS * (HIDDEN // HEADS)
    g = torch.Generator().manual_seed(0)
    t = {"model.embed_tokens.weight": (VOCAB, HIDDEN), "lm_head.weight": (VOCAB, HIDDEN), "model.norm.weight": (HIDDEN,)}
    for i in range(layers):
        p = f"model.layers.{i}."
        t |= {p + "input_layernorm.weight": (HIDDEN,), p + "post_attention_layernorm.weight": (HIDDEN,),
              p + "self_attn.q_proj.weight": (HEADS * d, HIDDEN), p + "self_attn.k_proj.weight": (kv, HIDDEN),
              p + "self_attn.v_proj.weight": (kv, HIDDEN), p + "self_attn.o_proj.weight": (HIDDEN, HEADS * d),
              p + "mlp.gate_proj.weight": (FFN, HIDDEN), p + "mlp.up_proj.weight": (FFN, HIDDEN),
              p + "mlp.down_proj.weight": (HIDDEN, FFN)}
    tensors = {name: torch.randn(shape, generator=g) * 0.02 for name, shape in t.items()}
    total = sum(x.numel() * 4 for x in tensors.values())
    write_hf_folder(tensors, hf_config(layers), str(folder), shard_bytes=total // 2 + 1)
    return total


# ------------------------------------------------------------------------------ workers
def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakMemory:
    """Samples /proc/self/status every 2 ms in a thread: the peaks of private (anonymous) memory
    and of file-backed resident pages (the memory-mapped safetensors: shared, clean page cache)."""

    def __init__(self):
        import threading

        self.anon = self.file = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        with open("/proc/self/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        self.anon = max(self.anon, int(fields["RssAnon"].split()[0]) / 1024)
        self.file = max(self.file, int(fields["RssFile"].split()[0]) / 1024)

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            self._sample()

    def __enter__(self):
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def worker(mode: str, folder: str, out: str) -> None:
    import torch

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    extra = {}
    if mode == "raw":
        from megatron_bridge_cli.hf.load import SafetensorsReader

        reader = SafetensorsReader(folder)
        names = sorted(reader.weight_map)[rank::world]
        # destinations allocated and touched before the clock starts, like the import's model
        # (built and initialized first): both sides time bytes from the files into resident memory
        kept = [torch.zeros(reader.shape(name), dtype=torch.float32) for name in names]
        torch.distributed.barrier()
        t0 = time.perf_counter()
        for name, dst in zip(names, kept):
            dst.copy_(reader(name))
            reader.release()
        n = sum(t.numel() * 4 for t in kept)
        torch.distributed.barrier()
        seconds = time.perf_counter() - t0
    else:
        from megatron.core import parallel_state as ps
        from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

        from megatron_bridge_cli.config.models.gpt import GPTModelProvider
        from megatron_bridge_cli.hf.load import load_hf_weights
        from megatron_bridge_cli.training.cpu_compat import apply_cpu_compat

        apply_cpu_compat()
        ps.initialize_model_parallel(world, 1)
        model_parallel_cuda_manual_seed(1)
        provider = GPTModelProvider.from_hf(folder)
        provider.tensor_model_parallel_size = world
        # built as training builds it (initialized, then overwritten by the import): its memory is
        # already touched when the timed import starts, as in a real run
        model = provider.provide()
        rss0 = _rss_mb() * 1024  # the model built, nothing loaded yet
        torch.distributed.barrier()
        t0 = time.perf_counter()
        with PeakMemory() as mem:
            load_hf_weights([model], provider, folder)
            torch.distributed.barrier()
        seconds = time.perf_counter() - t0
        n = sum(p.numel() * 4 for p in model.parameters())
        extra = {"peak_anon_mb": mem.anon, "peak_file_mb": mem.file}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with open(f"{out}.{rank}", "w") as f:
        json.dump({"seconds": seconds, "bytes": n, "peak_rss_mb": peak / 1024, "start_rss_mb": rss0 / 1024, **extra}, f)
    torch.distributed.destroy_process_group()


def launch(mode: str, folder: Path, out: Path) -> list[dict]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", __file__,
                    "--worker", mode, str(folder), str(out)], check=True, env=env, cwd=ROOT,
                   stdout=subprocess.DEVNULL)
    return [json.loads(Path(f"{out}.{r}").read_text()) for r in range(2)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=12, help="decoder layers (12: about 1 GB in fp32)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating raw/import pairs (best of each)")
    parser.add_argument("--keep", help="write the model here and keep it (default: a temporary folder)")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return 0
    tmp = Path(args.keep or tempfile.mkdtemp(prefix="bench_hf_"))
    folder = tmp / "model"
    t0 = time.perf_counter()
    total = write_model(folder, args.layers)
    print(f"wrote {total / 1e9:.2f} GB ({args.layers} layers, fp32) to {folder} in {time.perf_counter() - t0:.1f}s")
    launch("raw", folder, tmp / "warm")  # bring the files into the page cache for both timed runs
    runs: dict[str, list] = {"raw": [], "import": []}
    for rep in range(args.repeats):  # alternating, order swapped every pair; the best of each counts
        for mode in ("raw", "import") if rep % 2 == 0 else ("import", "raw"):
            runs[mode].append(launch(mode, folder, tmp / f"{mode}{rep}"))
    seconds = {m: [max(r["seconds"] for r in ranks) for ranks in rs] for m, rs in runs.items()}
    raw_s, imp_s = min(seconds["raw"]), min(seconds["import"])
    imp = runs["import"][seconds["import"].index(imp_s)]
    print(f"raw read, 2 ranks:        {raw_s:6.2f} s  {total / raw_s / 1e9:5.2f} GB/s  "
          f"(runs: {', '.join(f'{x:.2f}' for x in seconds['raw'])})")
    print(f"import at TP=2, 2 ranks:  {imp_s:6.2f} s  {total / imp_s / 1e9:5.2f} GB/s  "
          f"(runs: {', '.join(f'{x:.2f}' for x in seconds['import'])})")
    print(f"ratio import / raw:       {imp_s / raw_s:6.2f}x  (target <= 1.3x)")
    print(f"full model: {total / 2**20:.0f} MB; each rank's shard {imp[0]['bytes'] / 2**20:.0f} MB")
    for rank, r in enumerate(imp):
        print(f"rank {rank}: peak RSS {r['peak_rss_mb']:6.0f} MB, of which the import added "
              f"{r['peak_rss_mb'] - r['start_rss_mb']:4.0f} MB (process and built model before it: "
              f"{r['start_rss_mb']:.0f} MB); peak private memory {r['peak_anon_mb']:4.0f} MB, peak memory-mapped "
              f"file pages {r['peak_file_mb']:4.0f} MB (target: peak RSS below the full model's {total / 2**20:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
