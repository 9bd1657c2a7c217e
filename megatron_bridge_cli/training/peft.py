"""LoRA and DoRA adapters on megatron-core's linear layers (``--peft=lora|dora``).

``apply_peft(cfg, chunk)`` replaces each linear layer that ``--peft.target_modules`` names
(minus ``--peft.exclude_modules``) by an ``AdapterLinear`` holding the layer as ``base`` and
freezes every other parameter. It runs on the bare model chunk, before megatron-core's DDP
wraps it: DDP and ``get_megatron_optimizer`` skip parameters with ``requires_grad=False``, so
only the adapters get gradient buffers and optimizer state.

    LoRA:  y = base(x) + (alpha/dim) * B A dropout(x)
    DoRA:  y = m * (W x + (alpha/dim) B A dropout(x)) / ||W + (alpha/dim) B A||_row  (+ bias)
           m starts as ||W||_row (set once the base weights are loaded: init_magnitudes);
           the norm is a constant in the backward pass, as the DoRA paper (sec. 4.3) does.

Tensor parallel, consistent with the layer wrapped:
- column-parallel base (outputs split): A replicated, B split along outputs like the base;
  A's output passes megatron-core's copy_to_tensor_model_parallel_region (identity forward,
  all-reduce backward), so A's gradient and the input gradient are whole on every rank.
- row-parallel base (inputs split): A split along inputs, its output all-reduced with
  reduce_from_tensor_model_parallel_region; B replicated.
- with sequence parallel (TE only): gather / reduce-scatter along the sequence instead, and the
  replicated factor is marked ``sequence_parallel`` so finalize_model_grads all-reduces it.
Adapters are drawn whole on every rank from a generator seeded by ``--rng.seed`` and the layer's
global name, then sliced: the same model at any TP (and PP) size.

Checkpoint keys: the base layer's tensors keep their own checkpoint keys (a pretrained
checkpoint loads into them); the adapters are ``<layer>.lora_A``, ``.lora_B``, ``.magnitude``.
Transformer Engine linears are recognised by duck typing (``parallel_mode``); the fused
layer-norm linears return their normalized input for the adapter. Only the local spec is tested
(TE needs CUDA).
"""

from __future__ import annotations

import fnmatch
import math
import re
import zlib
from typing import Optional

import torch
import torch.nn.functional as F

from megatron_bridge_cli.config.peft import DoRAConfig, LoRAConfig
from megatron_bridge_cli.errors import ConfigError

__all__ = ["AdapterLinear", "apply_peft", "adapter_names", "init_magnitudes", "merge_adapters", "ADAPTER_PARAMS"]

ADAPTER_PARAMS = ("lora_A", "lora_B", "magnitude")


def _parallel_mode(module) -> Optional[str]:
    """'column', 'row' or 'duplicated' for a linear layer this module adapts, else None."""
    from megatron.core.tensor_parallel.layers import ColumnParallelLinear, RowParallelLinear

    if isinstance(module, ColumnParallelLinear):
        return "column"
    if isinstance(module, RowParallelLinear):
        return "row"
    mode = getattr(module, "parallel_mode", "missing")  # Transformer Engine's linears
    weight = getattr(module, "weight", None)
    if mode != "missing" and isinstance(weight, torch.Tensor) and weight.dim() == 2:
        return mode or "duplicated"
    return None


def _matches(name: str, patterns: list[str]) -> bool:
    """``linear_qkv`` matches a layer of that name anywhere; wildcards match the full name."""
    return any(name == p or fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(name, "*." + p) for p in patterns)


def _global_names(chunk) -> dict:
    """Local module name -> name with the global layer number (pipeline stages number their
    layers from 0), so that adapter seeds do not depend on PP."""
    out = {}
    for name, module in chunk.named_modules():
        number = getattr(module, "layer_number", None)
        m = re.search(r"(^|\.)layers\.(\d+)$", name)
        if m and isinstance(number, int):
            out[name] = name[: m.start(2)] + str(number - 1)
    return out


def _to_global(name: str, names: dict) -> str:
    for local in sorted(names, key=len, reverse=True):
        if name == local or name.startswith(local + "."):
            return names[local] + name[len(local):]
    return name


def _init(tensor: torch.Tensor, method: str, generator: torch.Generator) -> None:
    if method == "zero":
        torch.nn.init.zeros_(tensor)
    elif method == "xavier":
        torch.nn.init.xavier_normal_(tensor, generator=generator)
    elif method == "kaiming":
        torch.nn.init.kaiming_uniform_(tensor, a=math.sqrt(5), generator=generator)
    elif method == "uniform":
        bound = 1.0 / math.sqrt(tensor.shape[1])
        torch.nn.init.uniform_(tensor, -bound, bound, generator=generator)
    else:  # validation restricts the choices; a new one must be added here
        raise ValueError(f"unknown init method {method!r}")


class AdapterLinear(torch.nn.Module):
    """A linear layer (``base``, frozen) plus its LoRA (or DoRA) adapter."""

    def __init__(self, base, mode: str, peft: LoRAConfig, dora: bool, seed: int, glu: bool, tp_group):
        super().__init__()
        self.base, self.mode, self.dora, self.glu = base, mode, dora, glu
        self.tp_group = tp_group
        self.tp = torch.distributed.get_world_size(tp_group) if mode in ("column", "row") else 1
        self.tp_rank = torch.distributed.get_rank(tp_group) if self.tp > 1 else 0
        self.scale = peft.alpha / peft.dim
        self.dropout = torch.nn.Dropout(peft.dropout) if peft.dropout > 0 else None
        self.dropout_position = peft.dropout_position
        self.layernorm_linear = hasattr(base, "layer_norm_weight")  # TE's fused LayerNorm+Linear
        if self.layernorm_linear:  # the adapter reads the normalized input, whole along the sequence
            base.return_layernorm_output = True
            base.return_layernorm_output_gathered = True
        # Sequence-sharded adapter input (or output): gather / reduce-scatter along the sequence.
        self.sequence_parallel = (bool(getattr(base, "sequence_parallel", False)) and self.tp > 1
                                  and not self.layernorm_linear)
        w = base.weight
        out_local, in_local = w.shape
        out_full = out_local * (self.tp if mode == "column" else 1)
        in_full = in_local * (self.tp if mode == "row" else 1)
        g = torch.Generator().manual_seed(seed)
        a = torch.empty(peft.dim, in_full, dtype=torch.float32)
        b = torch.empty(out_full, peft.dim, dtype=torch.float32)
        _init(a, peft.lora_A_init_method, g)
        _init(b, peft.lora_B_init_method, g)
        from megatron.core.tensor_parallel import set_tensor_model_parallel_attributes

        if mode == "row":
            a = a.chunk(self.tp, dim=1)[self.tp_rank]
        elif mode == "column":
            b = self._split_rows(b)
        self.lora_A = torch.nn.Parameter(a.to(device=w.device, dtype=w.dtype).contiguous())
        self.lora_B = torch.nn.Parameter(b.to(device=w.device, dtype=w.dtype).contiguous())
        split = {"column": ("lora_B", 0), "row": ("lora_A", 1)}.get(mode)
        for name in ("lora_A", "lora_B"):
            param = getattr(self, name)
            set_tensor_model_parallel_attributes(param, split is not None and split[0] == name,
                                                 split[1] if split and split[0] == name else 0, 1)
            if self.sequence_parallel and not param.tensor_model_parallel:
                param.sequence_parallel = True  # partial gradients per sequence shard
        if dora:
            self.magnitude = torch.nn.Parameter(self._weight_norm())
            set_tensor_model_parallel_attributes(self.magnitude, mode == "column", 0, 1)
            if self.sequence_parallel and mode == "row":
                self.magnitude.sequence_parallel = True

    def _split_rows(self, full: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a tensor whose rows are the base's outputs (gated layers hold
        [gate; up] per rank, like megatron-core's linear_fc1)."""
        if self.tp == 1:
            return full
        if self.glu:
            gate, up = full.chunk(2, dim=0)
            return torch.cat([gate.chunk(self.tp)[self.tp_rank], up.chunk(self.tp)[self.tp_rank]])
        return full.chunk(self.tp, dim=0)[self.tp_rank]

    # ------------------------------------------------------------------ math
    def delta_weight(self) -> torch.Tensor:
        """(alpha/dim) B A for this rank's shard of the base weight."""
        return self.scale * (self.lora_B.float() @ self.lora_A.float())

    @torch.no_grad()
    def _weight_norm(self) -> torch.Tensor:
        """||W + (alpha/dim) B A|| per output row, whole rows even when inputs are split."""
        w = self.base.weight.float() + self.delta_weight()
        sq = (w * w).sum(dim=1)
        if self.mode == "row" and self.tp > 1:
            torch.distributed.all_reduce(sq, group=self.tp_group)
        return sq.sqrt().to(self.base.weight.dtype)

    def _adapter(self, x: torch.Tensor) -> torch.Tensor:
        from megatron.core.tensor_parallel import mappings

        if self.dropout is not None and self.dropout_position == "pre":
            if self.mode == "row" and self.tp > 1:  # a shard of the input: its own mask per rank
                from megatron.core.tensor_parallel import get_cuda_rng_tracker

                with get_cuda_rng_tracker().fork():
                    x = self.dropout(x)
            else:
                x = self.dropout(x)
        h = F.linear(x, self.lora_A)
        if self.mode == "column":
            h = (mappings.gather_from_sequence_parallel_region(h, group=self.tp_group) if self.sequence_parallel
                 else mappings.copy_to_tensor_model_parallel_region(h, group=self.tp_group))
        elif self.mode == "row":
            h = (mappings.reduce_scatter_to_sequence_parallel_region(h, group=self.tp_group) if self.sequence_parallel
                 else mappings.reduce_from_tensor_model_parallel_region(h, group=self.tp_group))
        y = F.linear(h, self.lora_B) * self.scale
        if self.dropout is not None and self.dropout_position == "post":
            y = self.dropout(y)
        return y

    def forward(self, x, *args, **kwargs):
        result = self.base(x, *args, **kwargs)
        # (out, bias); TE layer-norm linears: ((out, ln_out), bias) or (out, bias, ln_out)
        if isinstance(result, tuple) and len(result) == 3:
            out, bias, x = result
        else:
            out, bias = result if isinstance(result, tuple) else (result, None)
            if self.layernorm_linear and isinstance(out, tuple):
                out, x = out
        delta = self._adapter(x)
        if self.mode == "column" and getattr(self.base, "gather_output", False):
            from megatron.core.tensor_parallel import mappings

            delta = mappings.gather_from_tensor_model_parallel_region(delta, group=self.tp_group)
        if self.dora:
            inner_bias = self.base.bias if bias is None and getattr(self.base, "bias", None) is not None \
                and not getattr(self.base, "skip_bias_add", False) else None
            if inner_bias is not None and isinstance(inner_bias, torch.Tensor) and inner_bias.numel():
                out = out - inner_bias
            else:
                inner_bias = None
            out = (self.magnitude / self._weight_norm()) * (out + delta)
            if inner_bias is not None:
                out = out + inner_bias
        else:
            out = out + delta
        return (out, bias) if isinstance(result, tuple) else out  # the layer's own return shape

    # ------------------------------------------------------------------ checkpoints
    def sharded_state_dict(self, prefix: str = "", sharded_offsets: tuple = (), metadata: Optional[dict] = None):
        """The base layer's entries under its own checkpoint keys (what a pretrained checkpoint
        holds), then the adapters, TP-split like the base."""
        from megatron.core import parallel_state as ps
        from megatron.core.transformer.mlp import apply_swiglu_sharded_factory
        from megatron.core.transformer.utils import make_sharded_tensors_for_checkpoint

        base_sd = self.base.sharded_state_dict(prefix, sharded_offsets, metadata)
        own = {name: getattr(self, name) for name in ADAPTER_PARAMS if hasattr(self, name)}
        axes = {"column": {"lora_B": 0, "magnitude": 0}, "row": {"lora_A": 1}}.get(self.mode, {})
        dp_cp = (metadata or {}).get("dp_cp_group") or ps.get_data_parallel_group(with_context_parallel=True)
        adapter_sd = make_sharded_tensors_for_checkpoint(own, prefix, axes, sharded_offsets,
                                                         tp_group=self.tp_group, dp_cp_group=dp_cp)
        out = {}
        for key, value in base_sd.items():
            local = prefix + "base." + key[len(prefix):]  # module tree: <layer>.base.weight
            if self.glu and key in (f"{prefix}weight", f"{prefix}bias"):
                value = apply_swiglu_sharded_factory(value, sharded_offsets)
            out[local] = value
        for key, value in adapter_sd.items():
            if self.glu and key in (f"{prefix}lora_B", f"{prefix}magnitude"):
                value = apply_swiglu_sharded_factory(value, sharded_offsets)
            out[key] = value
        return out

    # ------------------------------------------------------------------ merging
    @torch.no_grad()
    def merged(self):
        """The base layer with the adapter folded into its weight (this rank's shard)."""
        w = self.base.weight
        merged = w.float() + self.delta_weight()
        if self.dora:
            merged = merged * (self.magnitude.float() / self._weight_norm().float()).unsqueeze(1)
        w.copy_(merged.to(w.dtype))
        if self.layernorm_linear:
            self.base.return_layernorm_output = False
            self.base.return_layernorm_output_gathered = False
        return self.base


def _parent(chunk, name: str):
    parent_name, _, leaf = name.rpartition(".")
    return (chunk.get_submodule(parent_name) if parent_name else chunk), leaf


def apply_peft(cfg, chunk) -> int:
    """Wrap the targeted linear layers of ``chunk`` and freeze everything else; returns how many
    layers got an adapter. Raises ConfigError (every rank alike) for targets that match nothing."""
    from megatron.core import parallel_state as ps

    peft = cfg.peft
    dora = isinstance(peft, DoRAConfig)
    exclude = list(peft.exclude_modules)
    names = _global_names(chunk)
    chosen = []
    for name, module in chunk.named_modules():
        if not name or not _matches(name, peft.target_modules) or _matches(name, exclude):
            continue
        mode = _parallel_mode(module)
        if mode is None:
            continue
        if getattr(module, "is_expert", False):
            raise ConfigError(
                f"--peft.target_modules: {name} is an expert layer (MoE), which adapters do not support yet; "
                f"add '*experts*' to --peft.exclude_modules")
        chosen.append((name, module, mode))
    if not chosen and ps.get_pipeline_model_parallel_world_size() == 1:
        import difflib

        linear = sorted({n.rsplit(".", 1)[-1] for n, m in chunk.named_modules() if n and _parallel_mode(m)})
        near = [m for t in peft.target_modules for m in difflib.get_close_matches(t, linear, n=1)]
        raise ConfigError(
            f"--peft.target_modules={peft.target_modules} (minus --peft.exclude_modules={exclude}) names no "
            f"linear layer of this model; its linear layers are: {', '.join(linear)}"
            + (f" (did you mean {', '.join(dict.fromkeys(near))}?)" if near else ""))
    for param in chunk.parameters():
        param.requires_grad_(False)
    for name, module, mode in chosen:
        parent, leaf = _parent(chunk, name)
        glu = bool(leaf == "linear_fc1" and getattr(getattr(parent, "config", None), "gated_linear_unit", False))
        tp_group = getattr(module, "tp_group", None) or ps.get_tensor_model_parallel_group()
        seed = (cfg.rng.seed * 1_000_003 + zlib.crc32(_to_global(name, names).encode())) % (2 ** 63)
        setattr(parent, leaf, AdapterLinear(module, mode, peft, dora, seed, glu, tp_group))
    return len(chosen)


def adapter_names(chunk) -> set:
    """State-dict names of the adapter parameters of a (bare) model chunk."""
    return {n for n, _ in chunk.named_parameters() if n.rsplit(".", 1)[-1] in ADAPTER_PARAMS}


def init_magnitudes(model: list) -> None:
    """DoRA: m = ||W + (alpha/dim) B A||_row from the loaded base weights (B = 0: ||W||)."""
    from megatron_bridge_cli.training.setup import unwrap

    with torch.no_grad():
        for chunk in model:
            for module in unwrap(chunk).modules():
                if isinstance(module, AdapterLinear) and module.dora:
                    module.magnitude.copy_(module._weight_norm())


def merge_adapters(chunk) -> int:
    """Fold every adapter of a bare chunk into its base layer and put the layer back in place."""
    wrapped = [(n, m) for n, m in chunk.named_modules() if isinstance(m, AdapterLinear)]
    for name, module in wrapped:
        parent, leaf = _parent(chunk, name)
        setattr(parent, leaf, module.merged())
    return len(wrapped)
