"""HuggingFace ``config.json`` <-> GPTModelProvider fields, for the supported architectures.

Llama 2/3/3.1, Mistral, Qwen2/2.5 and Qwen3 are one megatron-core layout (pre-RMSNorm,
SwiGLU, rotary embeddings, grouped-query attention) with per-family switches: QKV biases
(Qwen2), per-head RMSNorm of queries and keys (Qwen3), a sliding window (Mistral v0.1), Llama
3.1's RoPE frequency scaling, tied embeddings. GPT-2 is the learned-position, LayerNorm, GELU
(tanh) family with biases everywhere and tied embeddings.

Both spellings of the rotary settings are read: ``rope_theta``/``rope_scaling`` (released
checkpoints, transformers 4) and ``rope_parameters`` (transformers 5). Export writes the first.
"""

from __future__ import annotations

import math
from typing import Any, Optional

from megatron_bridge_cli.errors import ConfigError

__all__ = [
    "SUPPORTED_ARCHITECTURES", "DEFAULT_SEQ_LENGTH", "architecture_of", "provider_fields", "provider_from_hf",
    "architecture_mismatches", "hf_config_for",
]

LLAMA_LIKE = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
}
GPT2 = "GPT2LMHeadModel"
SUPPORTED_ARCHITECTURES = (*LLAMA_LIKE, GPT2)

DEFAULT_SEQ_LENGTH = 4096
"""Sequence length of a provider built from config.json: max_position_embeddings, capped here
(a 131,072-token context is rarely what a finetuning run wants); --model.seq_length overrides."""

# megatron-core 0.16.1 applies Llama 3.1's scaling with these constants fixed (RotaryEmbedding._apply_scaling)
_LLAMA3_SCALING = {"low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}


def architecture_of(hf: dict, where: str) -> str:
    """The one supported ``architectures`` entry of config.json, or a ConfigError listing them."""
    archs = hf.get("architectures") or []
    if not archs and hf.get("model_type") in (*LLAMA_LIKE.values(), "gpt2"):
        by_type = {v: k for k, v in LLAMA_LIKE.items()} | {"gpt2": GPT2}
        return by_type[hf["model_type"]]
    for arch in archs:
        if arch in SUPPORTED_ARCHITECTURES:
            return arch
    raise ConfigError(f"{where}: architecture {', '.join(map(str, archs)) or '(none given)'} is not supported; "
                      f"bridge-train converts {', '.join(SUPPORTED_ARCHITECTURES)}")


def _rope(hf: dict, where: str) -> dict:
    """Rotary fields: base, and the scaling (Llama 3.1's or linear interpolation)."""
    params = hf.get("rope_parameters") or {}
    theta = hf.get("rope_theta", params.get("rope_theta", 10000.0))
    scaling = hf.get("rope_scaling") or (params if params.get("rope_type", "default") != "default" else None)
    out: dict[str, Any] = {"rotary_base": _int_if_whole(theta), "rope_scaling": False,
                           "seq_len_interpolation_factor": None}
    if not scaling:
        return out
    kind = scaling.get("rope_type") or scaling.get("type")
    if kind == "llama3":
        odd = {k: scaling.get(k) for k, v in _LLAMA3_SCALING.items() if float(scaling.get(k, v)) != v}
        if odd:
            raise ConfigError(f"{where}: rope_scaling {odd} differs from Llama 3.1's "
                              f"{_LLAMA3_SCALING}, the only constants megatron-core applies")
        out.update(rope_scaling=True, rope_scaling_factor=float(scaling["factor"]))
    elif kind == "linear":
        out["seq_len_interpolation_factor"] = float(scaling["factor"])
    elif kind not in (None, "default"):
        raise ConfigError(f"{where}: rope_scaling type {kind!r} is not supported (llama3 and linear are)")
    return out


def _int_if_whole(value: float):
    return int(value) if float(value).is_integer() else float(value)


def _sliding_window(hf: dict, arch: str, where: str) -> Optional[tuple[int, int]]:
    window = hf.get("sliding_window")
    if arch == "Qwen2ForCausalLM" and not hf.get("use_sliding_window"):
        return None
    types = hf.get("layer_types")
    if types and arch != "MistralForCausalLM" and set(types) != {"full_attention"}:
        raise ConfigError(f"{where}: layer_types mixes {sorted(set(types))}; only full attention in every layer "
                          "(or Mistral's window in every layer) is supported")
    if window is None or arch not in ("MistralForCausalLM", "Qwen2ForCausalLM"):
        return None
    return (int(window) - 1, 0)  # HF: key j is seen by query i when i - j < window


def provider_fields(hf: dict, where: str) -> dict:
    """GPTModelProvider keyword arguments that reproduce the model config.json describes."""
    arch = architecture_of(hf, where)
    if arch == GPT2:
        return _gpt2_fields(hf, where)
    import torch.nn.functional as F

    if hf.get("hidden_act", "silu") != "silu" or hf.get("mlp_bias"):
        raise ConfigError(f"{where}: hidden_act {hf.get('hidden_act')!r} / mlp_bias {hf.get('mlp_bias')} is not "
                          f"the SwiGLU MLP of {arch}; only silu without MLP biases is supported")
    heads = int(hf["num_attention_heads"])
    fields = dict(
        num_layers=int(hf["num_hidden_layers"]),
        hidden_size=int(hf["hidden_size"]),
        ffn_hidden_size=int(hf["intermediate_size"]),
        num_attention_heads=heads,
        num_query_groups=int(hf.get("num_key_value_heads") or heads),
        kv_channels=int(hf.get("head_dim") or hf["hidden_size"] // heads),
        vocab_size=int(hf["vocab_size"]),
        should_pad_vocab=False,  # the released table, row for row
        seq_length=min(int(hf.get("max_position_embeddings", DEFAULT_SEQ_LENGTH)), DEFAULT_SEQ_LENGTH),
        normalization="RMSNorm",
        layernorm_epsilon=float(hf.get("rms_norm_eps", 1e-6)),
        activation_func=F.silu,
        gated_linear_unit=True,
        add_bias_linear=False,
        add_qkv_bias=bool(hf.get("attention_bias", arch == "Qwen2ForCausalLM")),
        qk_layernorm=arch == "Qwen3ForCausalLM",
        position_embedding_type="rope",
        share_embeddings_and_output_weights=bool(hf.get("tie_word_embeddings", False)),
        hidden_dropout=0.0,
        attention_dropout=float(hf.get("attention_dropout", 0.0)),
        init_method_std=float(hf.get("initializer_range", 0.02)),
        window_size=_sliding_window(hf, arch, where),
    )
    fields.update(_rope(hf, where))
    return fields


def _gpt2_fields(hf: dict, where: str) -> dict:
    from megatron.core.transformer.utils import openai_gelu

    if hf.get("activation_function", "gelu_new") != "gelu_new" or hf.get("scale_attn_by_inverse_layer_idx"):
        raise ConfigError(f"{where}: only GPT-2's gelu_new activation with plain attention scaling is supported")
    hidden = int(hf["n_embd"])
    return dict(
        num_layers=int(hf["n_layer"]),
        hidden_size=hidden,
        ffn_hidden_size=int(hf.get("n_inner") or 4 * hidden),
        num_attention_heads=int(hf["n_head"]),
        num_query_groups=int(hf["n_head"]),
        kv_channels=hidden // int(hf["n_head"]),
        vocab_size=int(hf["vocab_size"]),
        should_pad_vocab=False,
        seq_length=int(hf.get("n_positions", 1024)),
        normalization="LayerNorm",
        layernorm_epsilon=float(hf.get("layer_norm_epsilon", 1e-5)),
        activation_func=openai_gelu,  # GPT-2's gelu_new: the tanh approximation
        gated_linear_unit=False,
        add_bias_linear=True,
        add_qkv_bias=True,
        position_embedding_type="learned_absolute",
        share_embeddings_and_output_weights=True,
        hidden_dropout=float(hf.get("resid_pdrop", 0.1)),
        attention_dropout=float(hf.get("attn_pdrop", 0.1)),
        init_method_std=float(hf.get("initializer_range", 0.02)),
    )


def provider_from_hf(path: str, flag: str = "model"):
    """A GPTModelProvider with the architecture of the HF folder ``path`` (config.json only)."""
    from megatron_bridge_cli.config.models.gpt import GPTModelProvider
    from megatron_bridge_cli.hf.directory import hub_id_problem, is_hf_directory, read_hf_config

    if not is_hf_directory(path):
        raise ConfigError(hub_id_problem(path, flag) or f"--{flag}=hf:{path}: not a HuggingFace model folder "
                                                          "(no config.json there)")
    return GPTModelProvider(**provider_fields(read_hf_config(path, flag), f"{path}/config.json"))


# ------------------------------------------------------------------- recipe vs config.json
_CHECKED = (  # provider field, its config.json name (for the message)
    ("num_layers", "num_hidden_layers"), ("hidden_size", "hidden_size"), ("ffn_hidden_size", "intermediate_size"),
    ("num_attention_heads", "num_attention_heads"), ("num_query_groups", "num_key_value_heads"),
    ("kv_channels", "head_dim"), ("vocab_size", "vocab_size"), ("layernorm_epsilon", "rms_norm_eps"),
    ("rotary_base", "rope_theta"), ("rope_scaling", "rope_scaling"), ("rope_scaling_factor", "rope_scaling.factor"),
    ("seq_len_interpolation_factor", "rope_scaling.factor (linear)"),
    ("share_embeddings_and_output_weights", "tie_word_embeddings"), ("add_qkv_bias", "attention_bias"),
    ("add_bias_linear", "bias"), ("qk_layernorm", "QK-norm (Qwen3)"), ("normalization", "norm"),
    ("gated_linear_unit", "gated MLP"), ("position_embedding_type", "position embedding"),
    ("window_size", "sliding_window - 1"),
)
_GPT2_NAMES = {"num_layers": "n_layer", "hidden_size": "n_embd", "ffn_hidden_size": "n_inner",
               "num_attention_heads": "n_head", "num_query_groups": "n_head", "layernorm_epsilon": "layer_norm_epsilon"}


def architecture_mismatches(model, hf: dict, where: str) -> list[str]:
    """Each architecture field of ``model`` that differs from config.json, as
    ``config.json rope_theta 500000.0 vs --model.rotary_base 10000``."""
    expected = provider_fields(hf, where)
    gpt2 = architecture_of(hf, where) == GPT2
    problems = []
    for name, hf_name in _CHECKED:
        if name not in expected:
            continue
        want, have = expected[name], getattr(model, name, None)
        if name == "kv_channels" and have is None and model.num_attention_heads:
            have = model.hidden_size // model.num_attention_heads
        if name == "vocab_size" and have is None:
            continue  # taken from the tokenizer, checked against the table at load
        if name == "rope_scaling_factor" and not expected.get("rope_scaling"):
            continue
        if _same(want, have):
            continue
        hf_name = _GPT2_NAMES.get(name, hf_name) if gpt2 else hf_name
        problems.append(f"{where} {hf_name} {_show(want)} vs --model.{name} {_show(have)}")
    return problems


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-9)
        except (TypeError, ValueError):
            return False
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return list(a) == list(b)
    return a == b


def _show(value) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


# ------------------------------------------------------------------------------- export
def hf_config_for(model, source: Optional[dict] = None) -> dict:
    """config.json for ``model``: the source file's (when the run started from one of the same
    architecture) with the architecture fields rewritten from the model."""
    arch = _architecture_for(model, source)
    if arch == GPT2:
        out = dict(source or {}) | dict(
            architectures=[GPT2], model_type="gpt2", n_layer=model.num_layers, n_embd=model.hidden_size,
            n_head=model.num_attention_heads, n_inner=model.ffn_hidden_size, n_positions=model.seq_length,
            vocab_size=model.vocab_size, layer_norm_epsilon=model.layernorm_epsilon, activation_function="gelu_new",
            tie_word_embeddings=True)
        return _json_safe(out)
    out = {k: v for k, v in (source or {}).items() if k not in ("rope_parameters", "rope_scaling", "rope_theta")}
    out.update(
        architectures=[arch], model_type=LLAMA_LIKE[arch], hidden_act="silu",
        num_hidden_layers=model.num_layers, hidden_size=model.hidden_size, intermediate_size=model.ffn_hidden_size,
        num_attention_heads=model.num_attention_heads,
        num_key_value_heads=model.num_query_groups or model.num_attention_heads,
        head_dim=model.kv_channels, vocab_size=model.vocab_size, rms_norm_eps=model.layernorm_epsilon,
        rope_theta=float(model.rotary_base), tie_word_embeddings=model.share_embeddings_and_output_weights,
        max_position_embeddings=(source or {}).get("max_position_embeddings", model.seq_length),
    )
    if arch in ("LlamaForCausalLM", "MistralForCausalLM"):
        out["attention_bias"] = bool(model.add_qkv_bias)
    if arch == "LlamaForCausalLM":
        out["mlp_bias"] = False
    if model.rope_scaling:
        out["rope_scaling"] = {"rope_type": "llama3", "factor": float(model.rope_scaling_factor), **_LLAMA3_SCALING}
    elif model.seq_len_interpolation_factor:
        out["rope_scaling"] = {"rope_type": "linear", "factor": float(model.seq_len_interpolation_factor)}
    if arch == "MistralForCausalLM":
        out["sliding_window"] = model.window_size[0] + 1 if model.window_size else None
    if arch == "Qwen2ForCausalLM":
        out["use_sliding_window"] = bool(model.window_size)
        if model.window_size:
            out["sliding_window"] = model.window_size[0] + 1
    out.pop("layer_types", None)  # rebuilt by transformers from the fields above
    return _json_safe(out)


def _architecture_for(model, source: Optional[dict]) -> str:
    if source is not None:
        arch = architecture_of(source, "config.json")
        if not architecture_mismatches(model, source, "config.json") or arch == GPT2:
            return arch
    if model.position_embedding_type == "learned_absolute" and model.normalization == "LayerNorm":
        return GPT2
    if model.qk_layernorm:
        return "Qwen3ForCausalLM"
    if model.add_qkv_bias:
        return "Qwen2ForCausalLM"
    if model.window_size:
        return "MistralForCausalLM"
    return "LlamaForCausalLM"


def _json_safe(out: dict) -> dict:
    out.pop("torch_dtype", None)
    out["dtype"] = "float32"
    return out
