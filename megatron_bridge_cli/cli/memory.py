"""Memory per GPU of a finalized config: weights, gradients, optimizer state, activations.

An estimate for the fullest GPU, in bytes, from exact parameter counts (count_parameters)
and the formulas below. Not counted: the CUDA context (~0.5-1 GiB), allocator
fragmentation, communication and temporary buffers, MoE load imbalance (tokens are assumed
spread evenly over the experts) and PEFT's frozen weights (full-training estimate).

With P = parameters on the fullest GPU (its TP/PP shard):

    weights      P x bytes(model.params_dtype)
    gradients    P x (4 if ddp.grad_reduce_in_fp32 else bytes(params_dtype))
                 (megatron-core's DDP keeps one gradient buffer per parameter)
    optimizer    P x (main + state) / shards
                 main  = bytes(optimizer.main_params_dtype) when params are 16-bit, else 0
                         (the fp32 master copy of mixed precision)
                 state = adam: bytes(exp_avg_dtype) + bytes(exp_avg_sq_dtype); sgd: 4 if momentum
                 shards = data-parallel size / num_distributed_optimizer_instances with the
                          distributed optimizer, else 1; for the routed experts of MoE layers
                          (P_e of the P) the expert-data-parallel size world / (ETP x EP x PP)
                          takes the place of the data-parallel size
    e.g. bf16 + Adam without the distributed optimizer: 2 + 4 + (4 + 8) = 18 bytes/parameter.

Activations follow Korthikanti et al., "Reducing Activation Recomputation in Large Transformer
Models" (2022), written out per tensor so GQA, GLU MLPs and any ffn size fit. Per layer and
micro-batch, with s = seq_length / CP, b = micro-batch, h = hidden, f = ffn_hidden_size,
a = heads, q = kv heads x kv_channels, t = TP, e = activation bytes (2 for bf16/fp16, 4 fp32),
r = t with sequence parallel else 1, m = 1 byte dropout masks (when dropout > 0):

    attention   s b [ 2h e / r                  inputs of the norm and of the QKV GEMM
                    + (h + 2q) e / t            Q, K, V
                    + h e / t                   input of the output projection
                    + h m / r ]                 dropout mask
                + a s^2 b (e + m + e) / t       softmax output, its dropout mask and output;
                                                absent with flash/fused attention (TE) or
                                                selective recompute of core_attn
    MLP         s b [ 2h e / r                  inputs of the norm and of FC1
                    + f' e / t + f e / t        activation input (f' = 2f with GLU) and FC2 input
                    + h m / r ]                 dropout mask

In MoE layers every token visits k of the routed experts (width f_e, expert TP t_e) and the
shared expert (width f_s, if any), so the MLP term uses f = k f_e + f_s (split by t_e), plus
the k dispatched copies of each token's input and the router's fp32 logits over E experts:
s b (k h e + 4 E).

With f = 4h, MHA, no GLU and e = 2 this is the paper's s b h (34 + 5 a s / h). Full
recompute keeps only each layer's input (s b h e / r) plus one layer's full activations
while it is recomputed. The first pipeline stage holds L/PP layers for min(PP, micro-batches)
micro-batches in flight (x (1 + (PP-1)/(PP VP)) with interleaving) plus its embedding output;
the last stage holds one micro-batch of logits, s b V/t (e + 4) (fp32 softmax in the loss).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["MemoryEstimate", "estimate_memory"]


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per GPU (the fullest GPU)."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    notes: dict
    """How each figure was obtained, for the summary."""

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations


def _bytes(dtype) -> int:
    return torch.empty((), dtype=dtype).element_size() if isinstance(dtype, torch.dtype) else 4


def _optimizer_bytes_per_param(cfg, data_parallel_size: int) -> tuple[float, str]:
    o, m = cfg.optimizer, cfg.model
    params_bytes = _bytes(m.params_dtype)
    main = _bytes(o.main_params_dtype) if params_bytes < 4 else 0
    if o.optimizer == "adam":
        state, what = _bytes(o.exp_avg_dtype) + _bytes(o.exp_avg_sq_dtype), "2 Adam moments"
    elif o.optimizer == "sgd":
        state, what = (4 if o.sgd_momentum else 0), "SGD momentum"
    else:  # muon and others: assume one fp32 momentum buffer
        state, what = 4, f"{o.optimizer} momentum"
    distributed = o.use_distributed_optimizer or cfg.ddp.use_distributed_optimizer
    shards = max(1, (data_parallel_size or 1) // max(1, cfg.ddp.num_distributed_optimizer_instances))
    shards = shards if distributed else 1
    note = f"({main} B master copy + {state} B {what}) / {shards} shard{'s' * (shards > 1)}"
    return (main + state) / shards, note


def _layer_activation_bytes(cfg, flash: bool) -> tuple[float, float]:
    """(bytes one layer keeps for one micro-batch, bytes its input alone takes)."""
    m, t = cfg.model, cfg.train
    s = m.seq_length / m.context_parallel_size
    b, h, tp = t.micro_batch_size, m.hidden_size, m.tensor_model_parallel_size
    a = m.num_attention_heads
    q = (m.num_query_groups or a) * (m.kv_channels or h // a)
    f = m.ffn_hidden_size or 4 * h
    e = 2 if (m.bf16 or m.fp16) else 4
    r = tp if m.sequence_parallel else 1
    mlp_tp, routing = tp, 0.0
    if getattr(m, "num_moe_experts", None):  # what one token visits: k experts + the shared one
        k = m.moe_router_topk
        f = k * (m.moe_ffn_hidden_size or f) + (m.moe_shared_expert_intermediate_size or 0)
        mlp_tp = m.expert_tensor_parallel_size or tp
        routing = s * b * (k * h * e + 4 * m.num_moe_experts)  # dispatched token copies, fp32 logits
    f_in = 2 * f if m.gated_linear_unit else f
    hidden_mask = 1 if m.hidden_dropout > 0 else 0
    attn_mask = 1 if m.attention_dropout > 0 else 0
    attention = s * b * (2 * h * e / r + (h + 2 * q) * e / tp + h * e / tp + h * hidden_mask / r)
    selective = m.recompute_granularity == "selective" and "core_attn" in (m.recompute_modules or ["core_attn"])
    if not flash and not selective:
        attention += a * s * s * b * (e + attn_mask + (e if attn_mask else 0)) / tp
    mlp = s * b * (2 * h * e / r + f_in * e / mlp_tp + f * e / mlp_tp + h * hidden_mask / r) + routing
    return attention + mlp, s * b * h * e / r


def _activation_bytes(cfg) -> tuple[int, str]:
    m, t = cfg.model, cfg.train
    flash = m.use_transformer_engine() and str(getattr(m.attention_backend, "name", "")) not in ("unfused", "local")
    per_layer, layer_input = _layer_activation_bytes(cfg, flash)
    pp, vp = m.pipeline_model_parallel_size, m.virtual_pipeline_model_parallel_size or 1
    micro = t.num_microbatches or 1
    layers = m.num_layers / pp
    in_flight = min(pp, micro) * ((1 + (pp - 1) / (pp * vp)) if vp > 1 else 1)
    full = m.recompute_granularity == "full"

    def stage(n_in_flight: float) -> float:
        if full:  # layer inputs only, plus the one layer being recomputed
            return layers * layer_input * n_in_flight + per_layer
        return layers * per_layer * n_in_flight

    s, b = m.seq_length / m.context_parallel_size, t.micro_batch_size
    e = 2 if (m.bf16 or m.fp16) else 4
    embedding = s * b * m.hidden_size * e * in_flight
    vocab = m.padded_vocab_size or m.vocab_size or 0
    logits = s * b * vocab / m.tensor_model_parallel_size * (e + 4)
    first, last = stage(in_flight) + embedding, stage(1) + logits
    total = first + logits if pp == 1 else max(first, last)
    note = (f"{m.num_layers // pp} layers x {in_flight:g} micro-batch(es) in flight, "
            f"micro-batch {b} x seq {int(s)}, {'flash' if flash else 'unfused'} attention"
            + (f", {m.recompute_granularity} recompute" if m.recompute_granularity else ""))
    return int(total), note


def estimate_memory(cfg, params_per_gpu: int, expert_params_per_gpu: int = 0,
                    expert_data_parallel_size: int = 1) -> MemoryEstimate:
    """Memory of the fullest GPU for a *finalized* config with ``params_per_gpu`` parameters,
    ``expert_params_per_gpu`` of them routed experts (whose optimizer state the distributed
    optimizer shards over ``expert_data_parallel_size`` ranks instead of the data-parallel ones)."""
    m = cfg.model
    params_bytes = _bytes(m.params_dtype)
    grad_bytes = 4 if cfg.ddp.grad_reduce_in_fp32 else params_bytes
    opt_per_param, opt_note = _optimizer_bytes_per_param(cfg, cfg.train.data_parallel_size)
    optimizer = (params_per_gpu - expert_params_per_gpu) * opt_per_param
    if expert_params_per_gpu:
        expert_per_param, expert_note = _optimizer_bytes_per_param(cfg, expert_data_parallel_size)
        optimizer += expert_params_per_gpu * expert_per_param
        opt_note += f"; routed experts {expert_per_param:.4g} B/param {expert_note}"
    activations, act_note = _activation_bytes(cfg)
    return MemoryEstimate(
        weights=params_per_gpu * params_bytes,
        gradients=params_per_gpu * grad_bytes,
        optimizer=int(optimizer),
        activations=activations,
        notes={
            "weights": f"{params_bytes} B/param ({str(m.params_dtype).replace('torch.', '')})",
            "gradients": f"{grad_bytes} B/param ({'fp32' if grad_bytes == 4 else 'params dtype'} buffer)",
            "optimizer": f"{opt_per_param:.4g} B/param {opt_note}",
            "activations": act_note,
        },
    )
