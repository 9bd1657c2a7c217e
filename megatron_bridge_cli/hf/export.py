"""Export: a bridge-train checkpoint (or a model in memory) as a HuggingFace folder.

    python -m megatron_bridge_cli.hf.export CHECKPOINT OUT [--step N] [--hf-source DIR] [--dtype D]

CHECKPOINT is a ``--checkpoint.save`` folder (its latest iteration, or ``--step``'s) or one
iteration folder; its run_config.yaml gives the model. One process rebuilds the model at TP=1,
PP=1 (dist checkpoints reshard on load) and writes OUT: ``config.json``, sharded safetensors
with ``model.safetensors.index.json``, and the tokenizer files of the HF folder the run started
from (``--checkpoint.pretrained_checkpoint``, or ``--hf-source``). transformers'
``AutoModelForCausalLM.from_pretrained(OUT)`` loads it. A --peft run is merged first
(scripts/merge_lora.py). ``--checkpoint.save_hf=DIR`` runs this after a run's final save.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from typing import Optional

import torch

from megatron_bridge_cli.errors import ConfigError

__all__ = ["write_hf_folder", "export_checkpoint", "export_after_run", "main"]

SHARD_BYTES = 2 * 1024 ** 3
"""Largest safetensors shard written (transformers' own default is 5 GB; smaller shards load in
parallel better)."""

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def write_hf_folder(tensors: dict[str, torch.Tensor], hf_config: dict, out: str, *,
                    source: Optional[str] = None, shard_bytes: int = SHARD_BYTES) -> list[str]:
    """Write ``tensors`` as sharded safetensors plus index and ``hf_config`` as config.json
    into ``out`` (made atomically: a temporary folder renamed at the end); copy the tokenizer
    files of ``source``. Returns the shard file names."""
    from safetensors.torch import save_file

    from megatron_bridge_cli.hf.directory import CONFIG_FILE, INDEX_FILE, TOKENIZER_FILES

    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name in sorted(tensors, key=_natural):
        nbytes = tensors[name].numel() * tensors[name].element_size()
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensors[name]
        size += nbytes
    tmp = out.rstrip("/") + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    files, weight_map = [], {}
    for i, shard in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, os.path.join(tmp, file), metadata={"format": "pt"})
        files.append(file)
        weight_map.update({name: file for name in shard})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    _write_json(os.path.join(tmp, INDEX_FILE), {"metadata": {"total_size": total}, "weight_map": weight_map})
    _write_json(os.path.join(tmp, CONFIG_FILE), hf_config)
    if source:
        for name in TOKENIZER_FILES:
            if os.path.isfile(os.path.join(source, name)):
                shutil.copy2(os.path.join(source, name), os.path.join(tmp, name))
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.replace(tmp, out)
    return files


def _natural(name: str):
    return [int(p) if p.isdigit() else p for p in name.replace(".", " . ").split()]


def _write_json(path: str, data: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")


def model_tensors(chunks: list, model_cfg, dtype: Optional[torch.dtype] = None,
                  gpt2: Optional[bool] = None) -> dict[str, torch.Tensor]:
    """HF tensors of a whole model (TP=1, PP=1: every chunk of one rank), in ``dtype``."""
    from megatron_bridge_cli.hf.families import GPT2, hf_config_for
    from megatron_bridge_cli.hf.load import global_param_names
    from megatron_bridge_cli.hf.weights import hf_tensors_from_megatron

    if gpt2 is None:
        gpt2 = hf_config_for(model_cfg)["architectures"][0] == GPT2
    state = {}
    for chunk in chunks:
        names = global_param_names(chunk)
        for local, param in chunk.named_parameters():
            state[names[local]] = param.detach()
    out = hf_tensors_from_megatron(state, model_cfg, gpt2)
    return {k: v.to(dtype) if dtype is not None else v for k, v in out.items()}


def _source_config(source: Optional[str]) -> Optional[dict]:
    from megatron_bridge_cli.hf.directory import is_hf_directory, read_hf_config

    return read_hf_config(source, "hf-source") if source and is_hf_directory(source) else None


def export_checkpoint(checkpoint: str, out: str, *, step: Optional[int] = None, source: Optional[str] = None,
                      dtype: Optional[str] = None, shard_bytes: int = SHARD_BYTES) -> str:
    """Export the dist checkpoint ``checkpoint`` (one process) to the HF folder ``out``."""
    from megatron_bridge_cli.config import ConfigContainer
    from megatron_bridge_cli.hf.directory import is_hf_directory
    from megatron_bridge_cli.hf.families import GPT2, architecture_of, hf_config_for
    from megatron_bridge_cli.training import setup as S
    from megatron_bridge_cli.training.checkpoint_state import RUN_CONFIG
    from megatron_bridge_cli.training.checkpointing import checkpoint_dir_to_load, load_checkpoint
    from megatron_bridge_cli.training.env import detect_world
    from megatron_bridge_cli.training.preflight import prepare

    folder = checkpoint if os.path.isfile(os.path.join(checkpoint, RUN_CONFIG)) else \
        checkpoint_dir_to_load(checkpoint, step)
    if folder is None or not os.path.isfile(os.path.join(folder, RUN_CONFIG)):
        raise ConfigError(f"{checkpoint}: no checkpoint{'' if step is None else f' of step {step}'} with a "
                          f"{RUN_CONFIG} there; give a --checkpoint.save folder or one of its iter_* folders")
    cfg = ConfigContainer.from_yaml(os.path.join(folder, RUN_CONFIG))
    if cfg.peft is not None:
        raise ConfigError(f"{folder} holds {type(cfg.peft).__name__} adapters only; merge them into the base first "
                          f"(python scripts/merge_lora.py RUN MERGED) and export MERGED")
    ck = cfg.checkpoint
    if source is None and is_hf_directory(ck.pretrained_checkpoint):
        source = ck.pretrained_checkpoint
    m = cfg.model
    m.make_vocab_size_divisible_by *= m.tensor_model_parallel_size  # the run's padded table, at TP=1
    m.tensor_model_parallel_size = m.pipeline_model_parallel_size = 1
    m.virtual_pipeline_model_parallel_size = None
    m.num_layers_in_first_pipeline_stage = m.num_layers_in_last_pipeline_stage = None
    m.sequence_parallel = False
    ck.load, ck.ckpt_step, ck.pretrained_checkpoint = None, None, folder
    ck.save = ck.save_hf = None
    cfg.dataset.data_path = None  # the export reads no data
    world = detect_world(rendezvous=False)
    if world.world_size != 1:
        raise ConfigError("the HF export runs in one process; start it without torchrun")
    final = prepare(cfg, 1)
    if S.on_cpu():
        from megatron_bridge_cli.training.cpu_compat import apply_cpu_compat

        apply_cpu_compat()
    S.init_distributed(final, world)
    try:
        S.set_seeds(final)  # megatron-core's RNG tracker must exist to build the layers
        model = S.build_model(final)
        built = S.Built(model=model, optimizer=None, scheduler=None, state=S.TrainingState())
        load_checkpoint(final, built)
        src_cfg = _source_config(source)
        hf_cfg = hf_config_for(final.model, src_cfg)
        gpt2 = architecture_of(hf_cfg, "config.json") == GPT2
        want = DTYPES[dtype] if dtype else _dtype_of(src_cfg)
        tensors = model_tensors([S.unwrap(c) for c in model], final.model, want, gpt2)
        if want is not None:
            hf_cfg["dtype"] = str(want).removeprefix("torch.")
        files = write_hf_folder(tensors, hf_cfg, out, source=source, shard_bytes=shard_bytes)
        print(f"exported {folder} to {out} ({len(tensors)} tensors in {len(files)} safetensors files, "
              f"{hf_cfg['architectures'][0]})", flush=True)
        return out
    finally:
        S.destroy_distributed()


_LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "MASTER_ADDR",
                     "MASTER_PORT", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")


def export_after_run(final) -> None:
    """--checkpoint.save_hf: export the run's final checkpoint, from global rank 0, in a
    process of its own (one rank, outside the job's process group)."""
    import subprocess

    env = {k: v for k, v in os.environ.items() if k not in _LAUNCH_VARIABLES and not k.startswith("TORCHELASTIC")}
    cmd = [sys.executable, "-m", "megatron_bridge_cli.hf.export", final.checkpoint.save, final.checkpoint.save_hf]
    if subprocess.run(cmd, env=env).returncode != 0:
        from megatron_bridge_cli.errors import RunFailure

        raise RunFailure(f"--checkpoint.save_hf={final.checkpoint.save_hf}: the export of {final.checkpoint.save} "
                         f"failed (its message is above); the checkpoint itself is complete; rerun "
                         f"python {' '.join(cmd[1:])}")


def _dtype_of(hf: Optional[dict]) -> Optional[torch.dtype]:
    name = (hf or {}).get("dtype") or (hf or {}).get("torch_dtype")
    return DTYPES.get(name) if isinstance(name, str) else None


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m megatron_bridge_cli.hf.export",
                                     description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("checkpoint", help="a --checkpoint.save folder, or one of its iter_* folders")
    parser.add_argument("out", help="the HF folder to write (replaced if it exists)")
    parser.add_argument("--step", type=int, help="export this iteration (default: the latest)")
    parser.add_argument("--hf-source", help="HF folder whose config.json and tokenizer files to carry over "
                                            "(default: the run's --checkpoint.pretrained_checkpoint, if HF)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), help="tensor dtype (default: the source's, else the model's)")
    args = parser.parse_args(argv)
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        export_checkpoint(args.checkpoint, args.out, step=args.step, source=args.hf_source, dtype=args.dtype)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # dist_checkpointing's loader may spawn processes: the guard matters
    sys.exit(main())
