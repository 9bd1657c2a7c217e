"""HF tensor names <-> megatron-core parameter names, and the slice of each HF tensor that a
tensor-parallel rank owns.

megatron-core's layout differs from HF's in three places, all exact (no arithmetic on values):

* ``linear_qkv``: one matrix with, per query group, that group's query heads, then its key
  head, then its value head (``[q_g0 k_g0 v_g0 q_g1 ...]``). HF keeps q/k/v apart (GPT-2 fuses
  them as ``[q k v]`` in a transposed Conv1D). A TP rank owns whole groups, so it reads only
  its groups' rows of each of q, k and v.
* ``linear_fc1`` of a SwiGLU MLP: ``[gate; up]``, and a TP rank holds ``[gate_r; up_r]``.
* GPT-2's Conv1D weights are stored transposed (``[in, out]``).

Names are the local (non-TE) spec's; Transformer Engine's fused-norm names map onto them
(``linear_qkv.layer_norm_weight`` is the input norm, ``linear_fc1.layer_norm_weight`` the
pre-MLP norm). Layer indices are global (0-based), whatever the pipeline layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

__all__ = ["Source", "ShapeMismatch", "sources_for", "canonical_name", "fill_owned", "hf_tensors_from_megatron"]

_TE_ALIASES = {
    "self_attention.linear_qkv.layer_norm_weight": "input_layernorm.weight",
    "self_attention.linear_qkv.layer_norm_bias": "input_layernorm.bias",
    "mlp.linear_fc1.layer_norm_weight": "pre_mlp_layernorm.weight",
    "mlp.linear_fc1.layer_norm_bias": "pre_mlp_layernorm.bias",
}


def canonical_name(name: str) -> str:
    """The local-spec name of a megatron-core parameter name (TE fused norms unfused)."""
    for te, local in _TE_ALIASES.items():
        if name.endswith(te):
            return name[: -len(te)] + local
    return name


@dataclass(frozen=True)
class Source:
    """Where one megatron parameter comes from in the HF checkpoint.

    kind: ``copy`` (one tensor, maybe transposed), ``qkv`` (names = q, k, v or one fused
    GPT-2 c_attn), ``gate_up`` (names = gate, up), ``vocab`` (an embedding table, padded with
    zero rows to the model's padded vocabulary), ``rows`` (the first rows only: GPT-2's
    position table when the model's sequence is shorter).
    """

    kind: str
    names: tuple[str, ...]
    transposed: bool = False


def _llama_layer(i: int) -> dict[str, Source]:
    p = f"model.layers.{i}."
    return {
        "input_layernorm.weight": Source("copy", (p + "input_layernorm.weight",)),
        "self_attention.linear_qkv.weight": Source("qkv", tuple(p + f"self_attn.{x}_proj.weight" for x in "qkv")),
        "self_attention.linear_qkv.bias": Source("qkv", tuple(p + f"self_attn.{x}_proj.bias" for x in "qkv")),
        "self_attention.q_layernorm.weight": Source("copy", (p + "self_attn.q_norm.weight",)),
        "self_attention.k_layernorm.weight": Source("copy", (p + "self_attn.k_norm.weight",)),
        "self_attention.linear_proj.weight": Source("copy", (p + "self_attn.o_proj.weight",)),
        "pre_mlp_layernorm.weight": Source("copy", (p + "post_attention_layernorm.weight",)),
        "mlp.linear_fc1.weight": Source("gate_up", (p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight")),
        "mlp.linear_fc2.weight": Source("copy", (p + "mlp.down_proj.weight",)),
    }


def _gpt2_layer(i: int) -> dict[str, Source]:
    p = f"transformer.h.{i}."
    out = {}
    for ours, theirs in (("input_layernorm", "ln_1"), ("pre_mlp_layernorm", "ln_2")):
        for what in ("weight", "bias"):
            out[f"{ours}.{what}"] = Source("copy", (f"{p}{theirs}.{what}",))
    out["self_attention.linear_qkv.weight"] = Source("qkv", (p + "attn.c_attn.weight",), transposed=True)
    out["self_attention.linear_qkv.bias"] = Source("qkv", (p + "attn.c_attn.bias",))
    out["self_attention.linear_proj.weight"] = Source("copy", (p + "attn.c_proj.weight",), transposed=True)
    out["self_attention.linear_proj.bias"] = Source("copy", (p + "attn.c_proj.bias",))
    out["mlp.linear_fc1.weight"] = Source("copy", (p + "mlp.c_fc.weight",), transposed=True)
    out["mlp.linear_fc1.bias"] = Source("copy", (p + "mlp.c_fc.bias",))
    out["mlp.linear_fc2.weight"] = Source("copy", (p + "mlp.c_proj.weight",), transposed=True)
    out["mlp.linear_fc2.bias"] = Source("copy", (p + "mlp.c_proj.bias",))
    return out


def sources_for(model, gpt2: bool) -> dict[str, Source]:
    """megatron-core name (global layer index) -> Source, for every parameter of ``model``
    (the provider) that an HF checkpoint of its family holds."""
    layer = _gpt2_layer if gpt2 else _llama_layer
    out: dict[str, Source] = {}
    for i in range(model.num_layers):
        out.update({f"decoder.layers.{i}.{k}": v for k, v in layer(i).items()})
    if gpt2:
        out["embedding.word_embeddings.weight"] = Source("vocab", ("transformer.wte.weight",))
        out["embedding.position_embeddings.weight"] = Source("rows", ("transformer.wpe.weight",))
        out["decoder.final_layernorm.weight"] = Source("copy", ("transformer.ln_f.weight",))
        out["decoder.final_layernorm.bias"] = Source("copy", ("transformer.ln_f.bias",))
        out["output_layer.weight"] = Source("vocab", ("transformer.wte.weight",))
        return out
    out["embedding.word_embeddings.weight"] = Source("vocab", ("model.embed_tokens.weight",))
    out["decoder.final_layernorm.weight"] = Source("copy", ("model.norm.weight",))
    tied = model.share_embeddings_and_output_weights
    out["output_layer.weight"] = Source("vocab", ("model.embed_tokens.weight" if tied else "lm_head.weight",))
    return out


# --------------------------------------------------------------------------- import slices
Reader = Callable[[str, Optional[tuple]], torch.Tensor]
"""read(hf_name, index) -> tensor: the whole tensor (index None) or ``tensor[index]``, read
from the memory-mapped file without materializing the rest."""


def _span(dim: int, start: int, stop: int, transposed: bool) -> tuple:
    """Index of rows (dim 0) or columns (dim 1) [start, stop) of the megatron-oriented tensor,
    in the stored (HF) orientation."""
    hf_dim = 1 - dim if transposed else dim
    return (slice(start, stop),) if hf_dim == 0 else (slice(None), slice(start, stop))


class ShapeMismatch(ValueError):
    """A stored tensor (or this rank's slice of it) does not fit the parameter it fills."""

    def __init__(self, hf_name: str, got: tuple, want: tuple):
        super().__init__(hf_name, got, want)
        self.hf_name, self.got, self.want = hf_name, got, want


def _put(dst: torch.Tensor, value: torch.Tensor, hf_name: str) -> None:
    """dst <- value, one copy; shapes must match exactly (copy_ would broadcast a wrong one)."""
    if tuple(value.shape) != tuple(dst.shape):
        raise ShapeMismatch(hf_name, tuple(value.shape), tuple(dst.shape))
    dst.copy_(value)


def fill_owned(param: torch.Tensor, src: Source, rank: int, size: int, model, read: Reader,
               stored_shape: Callable[[str], tuple]) -> None:
    """Copy this rank's piece (TP rank ``rank`` of ``size``) of what ``src`` describes into
    ``param``, each byte once: the reads are views of the memory-mapped file, and fused
    tensors (q/k/v, gate/up) are copied piece by piece into their rows of ``param``.

    Fused and vocabulary tensors are always split over TP; for a plain one, the dimension where
    the local shape falls short of the stored one is the split one (megatron-core sets its
    partition attributes only when it initializes weights itself)."""
    local_shape = param.shape
    if src.kind == "qkv":
        return _fill_qkv(param, src, rank, size, model, read)
    if src.kind == "gate_up":
        n = local_shape[0] // 2  # [gate_r; up_r]
        for i, name in enumerate(src.names):
            _put(param[i * n:(i + 1) * n], read(name, (slice(rank * n, (rank + 1) * n),)), name)
        return None
    if src.kind == "vocab":
        rows, start = local_shape[0], rank * local_shape[0]
        real = max(0, min(start + rows, model.vocab_size) - start)
        _put(param[:real], read(src.names[0], (slice(start, start + real),)), src.names[0])
        param[real:].zero_()  # padded rows
        return None
    if src.kind == "rows":
        return _put(param, read(src.names[0], (slice(0, local_shape[0]),)), src.names[0])
    name = src.names[0]
    full = tuple(stored_shape(name))
    full = full[::-1] if src.transposed else full
    split = [d for d, (a, b) in enumerate(zip(full, local_shape)) if a != b]
    if not split or len(split) > 1 or full[split[0]] != local_shape[split[0]] * size:
        whole = read(name, None)  # (a shape that does not fit is reported by _put)
        return _put(param, whole.t() if src.transposed else whole, name)
    dim, n = split[0], local_shape[split[0]]
    got = read(name, _span(dim, rank * n, (rank + 1) * n, src.transposed))
    return _put(param, got.t() if src.transposed else got, name)


def _fill_qkv(param: torch.Tensor, src: Source, rank: int, size: int, model, read: Reader) -> None:
    """Rows of the query groups this rank owns, interleaved as megatron-core lays them out:
    per group, its query heads, then its key head, then its value head."""
    d = model.kv_channels
    groups = model.num_query_groups or model.num_attention_heads
    per_group = model.num_attention_heads // groups
    g0, g1 = rank * groups // size, (rank + 1) * groups // size
    q_span, kv_span = (g0 * per_group * d, g1 * per_group * d), (g0 * d, g1 * d)
    if len(src.names) == 1:  # GPT-2 c_attn: [q k v] along the output dimension
        width = model.num_attention_heads * d
        spans = [q_span, (width + kv_span[0], width + kv_span[1]), (2 * width + kv_span[0], 2 * width + kv_span[1])]
        parts = [read(src.names[0], _span(0, a, b, src.transposed)) for a, b in spans]
        names = src.names * 3
    else:
        parts = [read(name, _span(0, *span, False)) for name, span in zip(src.names, (q_span, kv_span, kv_span))]
        names = src.names
    if src.transposed:
        parts = [p.t() for p in parts]
    n, rest = g1 - g0, tuple(param.shape[1:])
    rows = (per_group + 2) * d
    if param.shape[0] != n * rows:
        raise ShapeMismatch(names[0], (sum(p.shape[0] for p in parts), *rest), tuple(param.shape))
    grouped = param.view(n, rows, *rest)
    offset = 0
    for part, width_rows, name in zip(parts, (per_group * d, d, d), names):
        if part.shape[0] != n * width_rows:
            raise ShapeMismatch(name, tuple(part.shape), (n * width_rows, *rest))
        _put(grouped[:, offset:offset + width_rows], part.reshape(n, width_rows, *part.shape[1:]), name)
        offset += width_rows
    return None


# ---------------------------------------------------------------------------------- export
def hf_tensors_from_megatron(state: dict[str, torch.Tensor], model, gpt2: bool) -> dict[str, torch.Tensor]:
    """HF tensors from a whole (TP=1) megatron state dict with canonical, global names."""
    out: dict[str, torch.Tensor] = {}
    for name, src in sources_for(model, gpt2).items():
        if name not in state:
            continue
        t = state[name]
        if src.kind == "qkv":
            out.update(_split_qkv(src, t, model))
        elif src.kind == "gate_up":
            gate, up = t.chunk(2, dim=0)
            out[src.names[0]], out[src.names[1]] = gate, up
        elif src.kind == "vocab":
            if name == "output_layer.weight" and src.names[0] in out:
                continue  # tied: the embedding is the one copy
            out[src.names[0]] = t[: model.vocab_size]
        else:
            out[src.names[0]] = t.t() if src.transposed else t
    if not gpt2 and not model.share_embeddings_and_output_weights and "lm_head.weight" not in out:
        raise ValueError("the state has no output_layer.weight for the untied lm_head")
    return {k: v.contiguous() for k, v in out.items()}


def _split_qkv(src: Source, t: torch.Tensor, model) -> dict[str, torch.Tensor]:
    d = model.kv_channels
    groups = model.num_query_groups or model.num_attention_heads
    per_group = model.num_attention_heads // groups
    grouped = t.reshape(groups, (per_group + 2) * d, *t.shape[1:])
    q, k, v = (x.reshape(-1, *t.shape[1:]) for x in grouped.split([per_group * d, d, d], dim=1))
    if len(src.names) == 1:
        fused = torch.cat([q, k, v])
        return {src.names[0]: fused.t() if src.transposed else fused}
    return dict(zip(src.names, (q, k, v)))
