"""--dry-run: finalize and validate for the run's world size, then summarize what would run.

The parameter count is exact: the model is built on PyTorch's meta device (no memory) and its
megatron-core modules are counted (training/param_count.py). Memory is an estimate
(cli/memory.py documents the formulas).
"""

from __future__ import annotations

import os
from typing import Optional

from megatron_bridge_cli.cli.memory import estimate_memory
from megatron_bridge_cli.errors import ConfigError

__all__ = ["dry_run_world_size", "summarize"]


def dry_run_world_size(world_size: Optional[int], nproc_per_node: Optional[int], nnodes: Optional[int],
                       recipe: Optional[str] = None) -> int:
    """--world-size, else WORLD_SIZE, else --nproc-per-node x --nnodes, else the built-in
    recipe's documented world size (so ``--recipe llama3_8b --dry-run`` checks the layout the
    recipe is written for), else 1."""
    if world_size is None and os.environ.get("WORLD_SIZE"):
        try:
            world_size = int(os.environ["WORLD_SIZE"])
        except ValueError:
            raise ConfigError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer") from None
    if world_size is None and nproc_per_node is not None:
        world_size = nproc_per_node * (nnodes or 1)
    if world_size is None:
        from megatron_bridge_cli.cli.recipe_loader import recipe_table

        recipes, default = recipe_table()
        world_size = getattr(recipes.get(recipe or default), "documented_world_size", 1)
    if world_size < 1:
        raise ConfigError(f"--world-size ({world_size}) must be at least 1")
    return world_size


def _n(value) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def _size(num_bytes: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:,.2f} {unit}"
    return f"{int(num_bytes)} B"


def _dtype(d) -> str:
    return str(d).replace("torch.", "")


def _model_line(m) -> str:
    heads = f"{m.num_attention_heads} heads / {m.num_query_groups} query groups x {m.kv_channels} channels"
    layers = f"{m.num_layers} layers"
    if getattr(m, "encoder_num_layers", None) is not None or type(m).__name__.startswith("T5"):
        layers = f"{getattr(m, 'encoder_num_layers', None) or m.num_layers} encoder + {m.num_layers} decoder layers"
    vocab = f"vocab {m.vocab_size} -> {m.padded_vocab_size} padded" if m.vocab_size else "vocab unknown"
    ffn = f"ffn {m.ffn_hidden_size}"
    if getattr(m, "num_moe_experts", None):
        shared = m.moe_shared_expert_intermediate_size
        ffn = (f"MoE {m.num_moe_experts} experts of ffn {m.moe_ffn_hidden_size}, top {m.moe_router_topk}"
               f"{f' + shared expert ffn {shared}' if shared else ''}, {m.moe_token_dispatcher_type} dispatcher")
    return (f"{type(m).__name__}: {layers}, hidden {m.hidden_size}, {ffn}, {heads}, "
            f"seq {m.seq_length}, {vocab}")


def _experts_text(m, world_size: int) -> str:
    """How the routed experts are split (empty for dense models)."""
    from megatron_bridge_cli.config.moe_checks import expert_data_parallel_size

    if not getattr(m, "num_moe_experts", None):
        return ""
    etp = m.expert_tensor_parallel_size or m.tensor_model_parallel_size
    return (f"; experts: EP {m.expert_model_parallel_size} x ETP {etp} x PP {m.pipeline_model_parallel_size} "
            f"x expert-DP {expert_data_parallel_size(m, world_size)}, "
            f"{m.num_moe_experts // m.expert_model_parallel_size} of {m.num_moe_experts} experts of each layer per GPU")


def _derived_lines(cfg, world_size: int) -> list[str]:
    m, t, s, o = cfg.model, cfg.train, cfg.scheduler, cfg.optimizer
    vp = m.virtual_pipeline_model_parallel_size
    tokens = t.global_batch_size * m.seq_length
    unit = "iters" if t.train_iters is not None else "samples"
    grads = "fp32" if cfg.ddp.grad_reduce_in_fp32 else _dtype(m.params_dtype)
    eval_text = (f"eval every {t.eval_interval} iterations x {t.eval_iters} batches "
                 f"({t.eval_num_microbatches} micro-batches each)" if t.eval_iters else "no evaluation")
    return [
        f"  model         {_model_line(m)}",
        f"  parallelism   TP {m.tensor_model_parallel_size} x PP {m.pipeline_model_parallel_size}"
        f"{f' (VP {vp})' if vp else ''} x CP {m.context_parallel_size} x DP {t.data_parallel_size} "
        f"= world size {world_size}{_experts_text(m, world_size)}",
        f"  batch         global {t.global_batch_size} = micro {t.micro_batch_size} x DP {t.data_parallel_size} "
        f"x {t.num_microbatches} micro-batches; {_n(tokens)} tokens per step",
        f"  run           {_n(t.total_iters)} iterations, {_n(t.total_iters * tokens)} tokens; {eval_text}",
        f"  lr schedule   {s.lr_decay_style}, lr {o.lr:g} -> {o.min_lr:g}; scheduler steps (in samples, set by "
        f"--train.train_{unit}): warmup {_n(s.lr_warmup_steps)}, decay {_n(s.lr_decay_steps)}",
        f"  precision     params {_dtype(m.params_dtype)}, bf16 {str(m.bf16).lower()}, fp16 "
        f"{str(m.fp16).lower()}, gradients reduced in {grads}",
    ]


def summarize(cfg, world_size: int) -> str:
    """The --dry-run report of an unfinalized container; raises ValidationError when invalid."""
    from megatron_bridge_cli.config.moe_checks import expert_data_parallel_size
    from megatron_bridge_cli.training.param_count import count_parameters
    from megatron_bridge_cli.training.preflight import prepare

    final = prepare(cfg, world_size)
    try:
        count = count_parameters(final.model)
    except (AssertionError, ValueError, TypeError, RuntimeError, ImportError) as e:
        # megatron-core checks some combinations only while building modules: still the config's fault
        raise ConfigError(f"the model cannot be built from this configuration (on the meta device, to count "
                          f"its parameters): {type(e).__name__}: {e}") from None
    moe = bool(count.routed_experts)
    expert_dp = expert_data_parallel_size(final.model, world_size) if moe else 1
    mem = estimate_memory(final, count.per_gpu_max, count.per_gpu_experts, expert_dp)
    lines = [f"dry run: configuration is valid for world size {world_size}"]
    lines += _derived_lines(final, world_size)
    lines.append(f"parameters: {count.total}")
    if moe:
        m = final.model
        lines.append(f"active parameters per token: {count.active} (top {m.moe_router_topk} of "
                     f"{m.num_moe_experts} routed experts per MoE layer, plus everything else)")
        lines.append(f"  routed experts {_n(count.routed_experts)}, all else {_n(count.total - count.routed_experts)}")
    lines.append(f"parameters per GPU: {count.per_gpu_max} (largest TP/PP{'/EP' if moe else ''} shard"
                 f"{f'; {_n(count.per_gpu_experts)} of them routed experts' if moe else ''})")
    if count.per_layer:
        lines.append(f"  embedding {_n(count.embedding)}, per layer {_n(count.per_layer)}, "
                     f"final norm + untied output layer {_n(count.head)}")
    lines.append("memory per GPU (estimate for the fullest GPU; formulas: megatron_bridge_cli/cli/memory.py):")
    for name, label in (("weights", "weights"), ("gradients", "gradients"), ("optimizer", "optimizer state"),
                        ("activations", "activations")):
        lines.append(f"  {label:<16}{_size(getattr(mem, name)):>12}  {mem.notes[name]}")
    lines.append(f"  {'total':<16}{_size(mem.total):>12}  (plus CUDA context, buffers and fragmentation)")
    return "\n".join(lines) + "\n"
