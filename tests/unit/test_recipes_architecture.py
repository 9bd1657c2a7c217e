"""Each recipe's architecture against the published configuration of the model it names.

Reference values are written in the published config's own keys (HuggingFace ``config.json``
where weights were released, the paper's table otherwise), with the source next to them, and
mapped to megatron-core provider fields here. Published parameter totals are checked against
--dry-run's count (count_parameters on the finalized container).
"""

from __future__ import annotations

import functools

import pytest
import torch.nn.functional as F

from megatron_bridge_cli.config import finalize
from megatron_bridge_cli.config.models.mamba import mamba_missing_packages
from megatron_bridge_cli.recipes import RECIPES
from megatron_bridge_cli.training.param_count import count_parameters

# ---------------------------------------------------------------- decoder-only, HF config.json
_LLAMA_COMMON = dict(hidden_act="silu", rms_norm_eps=1e-5, attention_bias=False, tie_word_embeddings=False)
HF_CONFIGS = {
    # huggingface.co/meta-llama/Llama-2-7b-hf/blob/main/config.json
    "llama2_7b": dict(_LLAMA_COMMON, num_hidden_layers=32, hidden_size=4096, intermediate_size=11008,
                      num_attention_heads=32, num_key_value_heads=32, vocab_size=32000, rope_theta=10000.0),
    # huggingface.co/meta-llama/Meta-Llama-3-8B/blob/main/config.json
    "llama3_8b": dict(_LLAMA_COMMON, num_hidden_layers=32, hidden_size=4096, intermediate_size=14336,
                      num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0),
    # huggingface.co/meta-llama/Meta-Llama-3-70B/blob/main/config.json
    "llama3_70b": dict(_LLAMA_COMMON, num_hidden_layers=80, hidden_size=8192, intermediate_size=28672,
                       num_attention_heads=64, num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0),
    # huggingface.co/meta-llama/Llama-3.1-405B/blob/main/config.json (rope_scaling: factor 8.0,
    # low_freq_factor 1.0, high_freq_factor 4.0, original_max_position_embeddings 8192, "llama3")
    "llama31_405b": dict(_LLAMA_COMMON, num_hidden_layers=126, hidden_size=16384, intermediate_size=53248,
                         num_attention_heads=128, num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0,
                         rope_scaling_factor=8.0),
    # huggingface.co/mistralai/Mistral-7B-v0.3/blob/main/config.json (sliding_window: null)
    "mistral_7b": dict(_LLAMA_COMMON, num_hidden_layers=32, hidden_size=4096, intermediate_size=14336,
                       num_attention_heads=32, num_key_value_heads=8, vocab_size=32768, rope_theta=1000000.0),
    # huggingface.co/Qwen/Qwen2.5-7B/blob/main/config.json (Qwen2 always has q/k/v biases)
    "qwen25_7b": dict(hidden_act="silu", rms_norm_eps=1e-6, attention_bias=True, tie_word_embeddings=False,
                      num_hidden_layers=28, hidden_size=3584, intermediate_size=18944, num_attention_heads=28,
                      num_key_value_heads=4, vocab_size=152064, rope_theta=1000000.0),
    # huggingface.co/Qwen/Qwen3-8B/blob/main/config.json (Qwen3 applies RMSNorm to q and k heads)
    "qwen3_8b": dict(hidden_act="silu", rms_norm_eps=1e-6, attention_bias=False, tie_word_embeddings=False,
                     num_hidden_layers=36, hidden_size=4096, intermediate_size=12288, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=128, vocab_size=151936, rope_theta=1000000.0,
                     qk_norm=True),
    # huggingface.co/mistralai/Mixtral-8x7B-v0.1/blob/main/config.json (sliding_window: null)
    "mixtral_8x7b": dict(_LLAMA_COMMON, num_hidden_layers=32, hidden_size=4096, intermediate_size=14336,
                         num_attention_heads=32, num_key_value_heads=8, vocab_size=32000, rope_theta=1000000.0),
    # huggingface.co/Qwen/Qwen3-30B-A3B/blob/main/config.json (intermediate_size is the unused dense width:
    # decoder_sparse_step 1 and mlp_only_layers [] make every layer MoE)
    "qwen3_30b_a3b": dict(hidden_act="silu", rms_norm_eps=1e-6, attention_bias=False, tie_word_embeddings=False,
                          num_hidden_layers=48, hidden_size=2048, intermediate_size=6144, num_attention_heads=32,
                          num_key_value_heads=4, head_dim=128, vocab_size=151936, rope_theta=1000000.0,
                          qk_norm=True),
}

# The mixture-of-experts keys of the same config.json files.
HF_MOE = {
    "mixtral_8x7b": dict(num_local_experts=8, num_experts_per_tok=2, moe_intermediate_size=14336,
                         router_aux_loss_coef=0.02, shared_expert_intermediate_size=None),
    "qwen3_30b_a3b": dict(num_local_experts=128, num_experts_per_tok=8, moe_intermediate_size=768,
                          router_aux_loss_coef=0.001, shared_expert_intermediate_size=None, norm_topk_prob=True),
}

# GPT-3: Brown et al. 2020, Table 2.1 (n_layers, d_model, n_heads, d_head; n_ctx 2048) and
# Section 2.1 (GPT-2 architecture: LayerNorm, GELU, d_ff = 4 x d_model; GPT-2 BPE vocab 50257).
GPT3_TABLE = {
    "gpt3_126m": dict(n_layers=12, d_model=768, n_heads=12, d_head=64, n_ctx=2048),
    "gpt3_175b": dict(n_layers=96, d_model=12288, n_heads=96, d_head=128, n_ctx=2048),
}

# T5-Base: huggingface.co/google-t5/t5-base/blob/main/config.json; Raffel et al. 2020 Table 14.
T5_BASE = dict(num_layers=12, num_decoder_layers=12, d_model=768, d_ff=3072, d_kv=64, num_heads=12,
               vocab_size=32128, relative_attention_num_buckets=32, relative_attention_max_distance=128,
               layer_norm_epsilon=1e-6, feed_forward_proj="relu", tie_word_embeddings=True)

# Mamba-2 130M: huggingface.co/state-spaces/mamba2-130m/blob/main/config.json plus the
# mamba_ssm Mamba2 layer defaults it relies on (d_state 128, headdim 64, ngroups 1, expand 2).
MAMBA2_130M = dict(d_model=768, n_layer=24, vocab_size=50277, pad_vocab_size_multiple=16, d_state=128,
                   headdim=64, ngroups=1, expand=2, d_conv=4, rms_norm=True, tie_embeddings=True)

# Published totals. Released weights: the exact sum of the tensor shapes in the released
# checkpoint (model cards round them: 6.74B, 8.03B, 70.6B, 406B, 7.25B, 7.61B, 8.2B).
RELEASED_TOTALS = {
    "llama2_7b": 6_738_415_616,
    "llama3_8b": 8_030_261_248,
    "llama3_70b": 70_553_706_496,
    "llama31_405b": 405_853_388_800,
    "mistral_7b": 7_248_023_552,
    "qwen25_7b": 7_615_616_512,
    "qwen3_8b": 8_190_735_360,
    "mixtral_8x7b": 46_702_792_704,
    # Qwen3-30B-A3B from its config.json shapes: embedding and output layer 2 x 151,936 x 2048; per
    # layer q/o 2 x 2048 x 4096, k/v 2 x 2048 x 512, q/k norms 2 x 128, 2 RMSNorms 2 x 2048,
    # router 128 x 2048, experts 128 x 3 x 2048 x 768; final norm 2048 (model card: 30.5B).
    "qwen3_30b_a3b": 30_532_122_624,
}
# Parameters a token passes through (top-k of the routed experts, plus everything else):
# Mixtral's announcement says 12.9B, Qwen3-30B-A3B's model card 3.3B.
RELEASED_ACTIVE = {"mixtral_8x7b": (12_879_925_248, 12.9e9), "qwen3_30b_a3b": (3_353_032_704, 3.3e9)}
T5_BASE_RELEASED = 222_903_552  # google-t5/t5-base (model card: 223M; the T5 paper: "~220 million")
GPT3_PAPER = {"gpt3_126m": 125e6, "gpt3_175b": 175.0e9}  # Table 2.1, rounded by the paper
MAMBA2_130M_TOTAL = 128_989_632  # the shapes of state-spaces/mamba2-130m (see recipes/mamba.py)


def model_of(name: str):
    fn = RECIPES[name]
    return fn().model


@pytest.mark.parametrize("name", sorted(HF_CONFIGS))
def test_decoder_matches_its_hf_config(name):
    ref, m = HF_CONFIGS[name], model_of(name)
    assert m.num_layers == ref["num_hidden_layers"]
    assert m.hidden_size == ref["hidden_size"]
    assert m.ffn_hidden_size == ref["intermediate_size"]
    assert m.num_attention_heads == ref["num_attention_heads"]
    assert m.num_query_groups == ref["num_key_value_heads"]
    head_dim = ref.get("head_dim", ref["hidden_size"] // ref["num_attention_heads"])  # HF default
    assert (m.kv_channels or m.hidden_size // m.num_attention_heads) == head_dim
    assert m.vocab_size == ref["vocab_size"] and not m.should_pad_vocab  # released tables are unpadded
    assert m.layernorm_epsilon == ref["rms_norm_eps"] and m.normalization == "RMSNorm"
    assert m.activation_func is F.silu and m.gated_linear_unit  # hidden_act silu in a gated MLP (SwiGLU)
    assert m.position_embedding_type == "rope" and m.rotary_base == ref["rope_theta"] and m.rotary_percent == 1.0
    assert m.add_bias_linear is False and m.add_qkv_bias == ref["attention_bias"]
    assert m.share_embeddings_and_output_weights == ref["tie_word_embeddings"]
    assert m.qk_layernorm == ref.get("qk_norm", False)
    assert m.rope_scaling == ("rope_scaling_factor" in ref)
    if m.rope_scaling:
        assert m.rope_scaling_factor == ref["rope_scaling_factor"]


@pytest.mark.parametrize("name", sorted(GPT3_TABLE))
def test_gpt3_matches_the_paper(name):
    ref, m = GPT3_TABLE[name], model_of(name)
    assert (m.num_layers, m.hidden_size, m.num_attention_heads) == (ref["n_layers"], ref["d_model"], ref["n_heads"])
    assert m.hidden_size // m.num_attention_heads == ref["d_head"] and m.seq_length == ref["n_ctx"]
    assert m.ffn_hidden_size == 4 * m.hidden_size and m.vocab_size == 50257
    assert m.normalization == "LayerNorm" and m.activation_func is F.gelu and not m.gated_linear_unit
    assert m.position_embedding_type == "learned_absolute" and m.share_embeddings_and_output_weights
    assert m.add_bias_linear


def test_t5_matches_t5_base():
    m, ref = model_of("t5_220m"), T5_BASE
    assert (m.encoder_num_layers, m.num_layers) == (ref["num_layers"], ref["num_decoder_layers"])
    assert (m.hidden_size, m.ffn_hidden_size, m.kv_channels, m.num_attention_heads) == (
        ref["d_model"], ref["d_ff"], ref["d_kv"], ref["num_heads"])
    assert m.vocab_size == ref["vocab_size"] and not m.should_pad_vocab
    assert m.position_embedding_type == "relative"
    assert m.relative_attention_num_buckets == ref["relative_attention_num_buckets"]
    assert m.relative_attention_max_distance == ref["relative_attention_max_distance"]
    assert m.normalization == "RMSNorm" and m.layernorm_epsilon == ref["layer_norm_epsilon"]
    assert m.activation_func is F.relu and not m.gated_linear_unit and not m.add_bias_linear
    assert m.share_embeddings_and_output_weights == ref["tie_word_embeddings"]


def test_mamba2_matches_the_released_130m():
    m, ref = model_of("mamba2_130m"), MAMBA2_130M
    assert (m.hidden_size, m.num_layers) == (ref["d_model"], ref["n_layer"])
    assert (m.mamba_state_dim, m.mamba_head_dim, m.mamba_num_groups) == (ref["d_state"], ref["headdim"], ref["ngroups"])
    assert m.hybrid_override_pattern is None and m.hybrid_attention_ratio == 0 and m.hybrid_mlp_ratio == 0
    assert m.vocab_size == ref["vocab_size"] and m.make_vocab_size_divisible_by == ref["pad_vocab_size_multiple"]
    assert m.compute_padded_vocab_size(m.vocab_size) == 50288  # at the recipe's TP=1
    assert m.normalization == "RMSNorm" and m.share_embeddings_and_output_weights == ref["tie_embeddings"]
    assert m.position_embedding_type == "none"


def mamba2_parameters(d_model, n_layer, vocab, d_state, headdim, ngroups, expand, d_conv) -> int:
    """Parameters of a pure Mamba-2 LM with tied embeddings, from the Mamba-2 layer definition."""
    d_inner = expand * d_model
    nheads = d_inner // headdim
    in_proj = d_model * (2 * d_inner + 2 * ngroups * d_state + nheads)  # z, x, B, C, dt
    conv_channels = d_inner + 2 * ngroups * d_state  # x, B, C are convolved
    conv = conv_channels * d_conv + conv_channels  # depthwise weight + bias
    per_layer = d_model + in_proj + conv + 3 * nheads + d_inner + d_inner * d_model  # norm, A_log/D/dt_bias, gated norm, out_proj
    return n_layer * per_layer + vocab * d_model + d_model  # + embedding (tied) + final norm


@functools.lru_cache(maxsize=None)  # a 128-expert model takes ~3 s to build on the meta device
def dry_run_count(name: str):
    fn = RECIPES[name]
    return count_parameters(finalize(fn(), fn.documented_world_size).model)


def dry_run_total(name: str) -> int:
    return dry_run_count(name).total


@pytest.mark.parametrize("name", sorted(HF_MOE))
def test_moe_matches_its_hf_config(name):
    ref, m = HF_MOE[name], model_of(name)
    assert (m.num_moe_experts, m.moe_router_topk) == (ref["num_local_experts"], ref["num_experts_per_tok"])
    assert m.moe_ffn_hidden_size == ref["moe_intermediate_size"]
    assert m.moe_shared_expert_intermediate_size == ref["shared_expert_intermediate_size"]
    assert m.moe_router_load_balancing_type == "aux_loss" and m.moe_aux_loss_coeff == ref["router_aux_loss_coef"]
    # Both renormalize the top-k softmax weights (Mixtral by construction, Qwen3 by norm_topk_prob):
    # megatron-core's softmax over the top-k logits.
    assert m.moe_router_score_function == "softmax" and not m.moe_router_pre_softmax
    assert m.moe_layer_freq == 1 and m.moe_expert_capacity_factor is None  # every layer, dropless


@pytest.mark.parametrize("name", sorted(RELEASED_ACTIVE))
def test_dry_run_active_count_equals_the_released_model(name):
    exact, published = RELEASED_ACTIVE[name]
    count = dry_run_count(name)
    assert count.active == exact
    assert abs(count.active - published) / published < 0.02  # the published figure is rounded (3.35B -> "3.3B")


@pytest.mark.parametrize("name", sorted(RELEASED_TOTALS))
def test_dry_run_count_equals_the_released_model(name):
    assert dry_run_total(name) == RELEASED_TOTALS[name]


def test_t5_count_is_t5_base_plus_megatron_lm_head_bias():
    # megatron-core's T5LMHead has an output bias (vocab_size values) when embeddings are tied.
    assert dry_run_total("t5_220m") == T5_BASE_RELEASED + T5_BASE["vocab_size"]


@pytest.mark.parametrize("name", sorted(GPT3_PAPER))
def test_gpt3_count_is_the_exact_architecture_count(name):
    m = finalize(RECIPES[name](), RECIPES[name].documented_world_size).model
    L, h, V, ctx = m.num_layers, m.hidden_size, m.padded_vocab_size, m.seq_length
    # per layer: QKV 3h^2+3h, proj h^2+h, MLP 8h^2+5h, two LayerNorms 4h -> 12h^2 + 13h
    exact = L * (12 * h * h + 13 * h) + V * h + ctx * h + 2 * h  # + token/position embeddings, final LN
    assert dry_run_total(name) == exact
    # The paper rounds (125M; 175.0B for what the architecture makes 174.6B).
    assert abs(exact - GPT3_PAPER[name]) / GPT3_PAPER[name] < 0.005


def test_mamba2_count_from_the_released_shapes():
    ref = MAMBA2_130M
    total = mamba2_parameters(ref["d_model"], ref["n_layer"], 50288, ref["d_state"], ref["headdim"],
                              ref["ngroups"], ref["expand"], ref["d_conv"])
    assert total == MAMBA2_130M_TOTAL
    if not mamba_missing_packages():  # megatron-core's MambaModel builds only with mamba-ssm + TE
        assert count_parameters(finalize(RECIPES["mamba2_130m"](), 1).model).total == MAMBA2_130M_TOTAL
