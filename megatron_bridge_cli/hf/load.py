"""Import: stream the slices of an HF checkpoint that this rank owns into its built model.

Each rank walks its own parameters (every virtual-pipeline chunk), maps each name to the HF
tensors it comes from (weights.sources_for, with the global layer index), and reads only the
rows or columns its tensor-parallel position owns through safetensors' memory-mapped slices,
copied once into the parameter. The files are unmapped after each parameter, so no rank holds
more than its own shard plus the file pages of one tensor (scripts/bench_hf_import.py).
"""

from __future__ import annotations

import json
import os
import re
from typing import Optional

import torch

from megatron_bridge_cli.errors import ConfigError
from megatron_bridge_cli.hf.directory import INDEX_FILE, read_hf_config, weight_files
from megatron_bridge_cli.hf.families import GPT2, architecture_of
from megatron_bridge_cli.hf.weights import ShapeMismatch, canonical_name, fill_owned, sources_for

__all__ = ["SafetensorsReader", "load_hf_weights", "global_param_names"]

_ADAPTER_PARAMS = ("lora_A", "lora_B", "magnitude")  # PEFT's: trained, not imported


class SafetensorsReader:
    """Tensors and slices of tensors from an HF folder's safetensors files, opened lazily and
    memory-mapped."""

    def __init__(self, path: str):
        from safetensors import safe_open

        self._open, self.path, self._handles = safe_open, path, {}
        index = os.path.join(path, INDEX_FILE)
        if os.path.isfile(index):
            with open(index, encoding="utf-8") as f:
                self.weight_map = {k: os.path.join(path, v) for k, v in json.load(f)["weight_map"].items()}
        else:
            (file,) = weight_files(path)
            with safe_open(file, framework="pt") as f:
                self.weight_map = {k: file for k in f.keys()}

    def _handle(self, file: str):
        if file not in self._handles:
            self._handles[file] = self._open(file, framework="pt")
        return self._handles[file]

    def resolve(self, name: str) -> Optional[str]:
        """The stored name: GPT-2 files exist with and without the ``transformer.`` prefix."""
        if name in self.weight_map:
            return name
        bare = name.removeprefix("transformer.")
        return bare if bare in self.weight_map else None

    def __call__(self, name: str, index: Optional[tuple] = None) -> torch.Tensor:
        stored = self.resolve(name)
        if stored is None:
            raise KeyError(name)
        f = self._handle(self.weight_map[stored])
        if index is None:
            return f.get_tensor(stored)
        return f.get_slice(stored)[index]

    def shape(self, name: str) -> tuple:
        """The stored shape of ``name`` (from the header; no data read)."""
        stored = self.resolve(name)
        if stored is None:
            raise KeyError(name)
        return tuple(self._handle(self.weight_map[stored]).get_slice(stored).get_shape())

    def release(self) -> None:
        """Drop the open files: their memory maps go once no tensor read from them is alive."""
        self._handles.clear()

    close = release


def global_param_names(chunk) -> dict[str, str]:
    """Local parameter name -> canonical name with the global layer index (pipeline stages and
    virtual chunks number their layers from 0 locally; ``layer_number`` is global, from 1)."""
    offsets = {}
    for name, module in chunk.named_modules():
        number = getattr(module, "layer_number", None)
        m = re.fullmatch(r"(.*\.)?layers\.(\d+)", name)
        if m and isinstance(number, int):
            offsets[name] = (m.group(1) or "") + f"layers.{number - 1}"
    out = {}
    for name, _ in chunk.named_parameters():
        full = name.replace(".base.", ".")  # a PEFT-wrapped linear's frozen base
        m = re.match(r"(.*?layers\.\d+)(\..*)", full)
        if m and m.group(1) in offsets:
            full = offsets[m.group(1)] + m.group(2)
        out[name] = canonical_name(full)
    return out


def load_hf_weights(chunks: list, model_cfg, path: str, flag: str = "checkpoint.pretrained_checkpoint") -> int:
    """Copy the HF checkpoint at ``path`` into ``chunks`` (this rank's bare model chunks).
    Returns the number of parameters filled; raises ConfigError naming the first tensor that is
    missing or has another shape."""
    from megatron.core import parallel_state as ps

    hf = read_hf_config(path, flag)
    gpt2 = architecture_of(hf, f"--{flag}={path}") == GPT2
    sources = sources_for(model_cfg, gpt2)
    tp_rank, tp_size = ps.get_tensor_model_parallel_rank(), ps.get_tensor_model_parallel_world_size()
    read = SafetensorsReader(path)
    filled = 0
    try:
        for chunk in chunks:
            names = global_param_names(chunk)
            for local, param in chunk.named_parameters():
                if local.rsplit(".", 1)[-1] in _ADAPTER_PARAMS:
                    continue
                name = names[local]
                src = sources.get(name)
                if src is None:
                    raise ConfigError(f"--{flag}={path}: the model has {name}, which no tensor of this "
                                      f"{hf.get('architectures', ['?'])[0]} checkpoint fills")
                try:
                    with torch.no_grad():
                        fill_owned(param, src, tp_rank, tp_size, model_cfg, read, read.shape)
                except KeyError as e:
                    raise ConfigError(f"--{flag}={path}: tensor {e.args[0]} (for {name}) is not in the "
                                      "checkpoint's safetensors files") from None
                except ShapeMismatch as e:
                    raise ConfigError(f"--{flag}={path}: {e.hf_name} gives {name} the shape {e.got}, the model "
                                      f"has {e.want}") from None
                read.release()  # unmap what this parameter touched: resident file pages stay one tensor's
                filled += 1
    finally:
        read.close()
    return filled
