"""Values the training loop cannot honor: refused by validation instead of silently ignored.

Every field of the tree either changes what a run does or is refused here (or by the other
checks) when set to a value that would change nothing; tests/unit/test_field_coverage.py walks
every flag to hold that. What is refused, and why:

* hooks the training loop installs itself (``model.grad_scale_func``, ``model.timers``, ...):
  a value from a config would be overwritten at setup;
* megatron-core fields that are deprecated, or that megatron-core 0.16 never reads in training
  (inference-only ones, Megatron-FSDP-only ones, as bridge-train wraps the model in
  DistributedDataParallel);
* features that need machinery of Megatron-LM's training loop that bridge-train does not have
  (Transformer Engine CUDA graphs, QK-clip, multi-token prediction, TP-overlap userbuffers,
  hybrid context parallel data);
* settings that act only together with another one (an autocast dtype without autocast, rerun
  error injection outside its mode) or need a package that is absent (TE's RNG tracker).
"""

from __future__ import annotations

import dataclasses

import torch

from megatron_bridge_cli.config.models.provider import transformer_engine_available

__all__ = ["check_unsupported"]

LOOP_HOOKS = ("grad_scale_func", "no_sync_func", "grad_sync_func", "param_sync_func",
              "finalize_model_grads_func", "timers")
"""TransformerConfig callables the loop sets at setup (as Megatron-LM's training does)."""

DEPRECATED = {
    "moe_extended_tp": "use --model.expert_tensor_parallel_size",
    "async_tensor_model_parallel_allreduce": "megatron-core overlaps the all-reduce wherever it can; leave it true",
    "moe_enable_deepep": "use --model.moe_token_dispatcher_type=flex --model.moe_flex_dispatcher_backend=deepep",
    "moe_router_padding_for_fp8": "use --model.moe_router_padding_for_quantization (with FP8)",
}
"""megatron-core model fields that are deprecated (ignored, or quietly rewritten into another field)."""

NOT_READ_IN_TRAINING = {
    "apply_residual_connection_post_layernorm": "megatron-core 0.16 has no post-layernorm residual path",
    "moe_token_dropping": "megatron-core 0.16 does not read it; drop tokens with --model.moe_expert_capacity_factor",
    "cuda_graph_use_single_mempool": "megatron-core 0.16 does not read it",
    "use_inference_optimized_layers": "only megatron-core's inference engine reads it",
    "inference_sampling_seed": "only megatron-core's inference engine reads it",
    "is_hybrid_model": "only megatron-core's inference engine reads it",
}
"""megatron-core model fields whose value changes nothing in a training run: field -> why/what instead."""

NEEDS_MEGATRON_LM_LOOP = {
    "mtp_num_layers": "multi-token prediction layers are not built by the model providers yet",
    "multi_latent_attention": "multi-latent attention needs megatron-core's MLATransformerConfig settings and "
                              "layer specs, which the providers do not build",
    "qk_clip": "QK-clip runs after each optimizer step in Megatron-LM's training loop (clip_qk), "
               "which bridge-train does not do yet",
    "log_max_attention_logit": "the training loop does not log the max attention logit yet",
    "moe_per_layer_logging": "the loop logs MoE router losses averaged over layers only",
    "hybrid_context_parallel": "hybrid context parallel needs packed variable-length samples and Megatron-LM's "
                               "hybrid-CP data loader, which bridge-train does not have",
    "external_cuda_graph": "Transformer Engine CUDA graphs are captured by Megatron-LM's training loop "
                           "(TECudaGraphHelper), which bridge-train does not run",
}
"""Model fields whose non-default value needs training-loop machinery bridge-train lacks."""

FSDP_ONLY = ("data_parallel_sharding_strategy", "gradient_reduce_div_fusion", "suggested_communication_unit_size",
             "preserve_fp32_weights", "keep_fp8_transpose_cache", "fsdp_double_buffer",
             "outer_dp_sharding_strategy", "fsdp_manual_registration")
"""DistributedDataParallelConfig fields that only Megatron FSDP reads."""


def _default(obj, name: str):
    f = next(f for f in dataclasses.fields(obj) if f.name == name)
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return f.default


def _changed(obj, name: str) -> bool:
    """True when ``obj.name`` exists and differs from its class default."""
    if not any(f.name == name for f in dataclasses.fields(obj)):
        return False
    return getattr(obj, name) != _default(obj, name)


def _on_gloo(cfg) -> bool:
    backend = cfg.dist.distributed_backend
    return backend == "gloo" or (backend is None and not torch.cuda.is_available())


def _model_problems(cfg) -> list[str]:
    m, problems = cfg.model, []
    for name in LOOP_HOOKS:
        if getattr(m, name, None) is not None:
            problems.append(f"--model.{name} is installed by the training loop at setup (from the --ddp, "
                            "--optimizer and --logger settings); remove it from the config")
    for name, instead in DEPRECATED.items():
        if _changed(m, name):
            problems.append(f"--model.{name} is deprecated in megatron-core; {instead}")
    for name, why in NOT_READ_IN_TRAINING.items():
        if _changed(m, name):
            problems.append(f"--model.{name}={getattr(m, name)} would change nothing: {why}")
    for name, why in NEEDS_MEGATRON_LM_LOOP.items():
        if _changed(m, name):
            problems.append(f"--model.{name}={getattr(m, name)} is not supported: {why}")
    if getattr(m, "cuda_graph_impl", "none") == "transformer_engine":
        problems.append("--model.cuda_graph_impl=transformer_engine is not supported: "
                        f"{NEEDS_MEGATRON_LM_LOOP['external_cuda_graph']}; use --model.cuda_graph_impl=local (CUDA)")
    co = cfg.comm_overlap
    tp_overlap = [f for f, on in (("--model.tp_comm_overlap", m.tp_comm_overlap),
                                  ("--comm_overlap.tp_comm_overlap", co is not None and co.tp_comm_overlap)) if on]
    if tp_overlap:
        problems.append(f"{' and '.join(tp_overlap)}: tensor-parallel communication overlap needs Transformer Engine "
                        "userbuffers, which the training loop does not initialize yet; leave it false")
    if _changed(m, "tp_comm_bootstrap_backend"):
        problems.append(f"--model.tp_comm_bootstrap_backend={m.tp_comm_bootstrap_backend} only bootstraps the "
                        "tensor-parallel overlap userbuffers, which are not used; remove it")
    if m.pipeline_model_parallel_comm_backend is not None and _on_gloo(cfg):
        problems.append(f"--model.pipeline_model_parallel_comm_backend={m.pipeline_model_parallel_comm_backend} "
                        "needs CUDA (the run communicates over gloo); leave it unset")
    return problems


def _precision_problems(cfg) -> list[str]:
    m, mp, problems = cfg.model, cfg.mixed_precision, []
    autocast = bool(m.enable_autocast) or (mp is not None and mp.autocast_enabled)
    if mp is not None and "model.autocast_dtype" not in cfg.explicit_paths:
        dtype = mp.autocast_dtype or mp.params_dtype
    else:
        dtype = m.autocast_dtype or m.params_dtype
    mp_autocast = mp is not None and mp.autocast_enabled
    which = "--mixed_precision.autocast_enabled" if mp_autocast else "--model.enable_autocast"
    if autocast and dtype not in (torch.bfloat16, torch.float16):
        problems.append(f"{which} autocasts to {str(dtype).replace('torch.', '')}, which changes nothing; set "
                        "--mixed_precision.autocast_dtype=bf16 (or fp16), or turn autocast off")
    if not autocast:
        if mp is not None and mp.autocast_dtype not in (None, mp.params_dtype):
            problems.append("--mixed_precision.autocast_dtype takes effect only with "
                            "--mixed_precision.autocast_enabled")
        if m.autocast_dtype not in (None, m.params_dtype):
            problems.append("--model.autocast_dtype takes effect only with --model.enable_autocast "
                            "(or --mixed_precision.autocast_enabled)")
    if (cfg.rng.te_rng_tracker or m.use_te_rng_tracker) and not transformer_engine_available():
        flag = "--rng.te_rng_tracker" if cfg.rng.te_rng_tracker else "--model.use_te_rng_tracker"
        problems.append(f"{flag} needs Transformer Engine (without it megatron-core silently uses its own tracker): "
                        "pip install '.[te]' on a GPU machine, or leave it false")
    return problems


def _optimizer_ddp_problems(cfg) -> list[str]:
    o, ddp, mp, problems = cfg.optimizer, cfg.ddp, cfg.mixed_precision, []
    if o.timers is not None:
        problems.append("--optimizer.timers is installed by the training loop (--logger.timing_log_level); remove it")
    if o.main_grads_dtype != torch.float32:
        problems.append("--optimizer.main_grads_dtype would change nothing: megatron-core 0.16 keeps main gradients "
                        "in fp32; leave it fp32")
    for name in ("use_megatron_fsdp", "use_custom_fsdp"):
        if getattr(ddp, name, False):
            problems.append(f"--ddp.{name}: bridge-train wraps the model in megatron-core's DistributedDataParallel, "
                            "not Megatron FSDP; use --ddp.use_distributed_optimizer to shard optimizer state")
    for name in FSDP_ONLY:
        if _changed(ddp, name):
            problems.append(f"--ddp.{name} applies only to Megatron FSDP, which bridge-train does not use; remove it")
    fp8_params = cfg.model.fp8_param or (mp is not None and mp.fp8_param_gather)
    if ddp.fp8_param_gather and not fp8_params:
        problems.append("--ddp.fp8_param_gather alone changes nothing; use --mixed_precision.fp8_param_gather "
                        "(FP8 weights, Transformer Engine)")
    return problems


def _rerun_problems(cfg) -> list[str]:
    r, problems = cfg.rerun_state_machine, []
    if r.rerun_mode != "validate_results":  # megatron-core's injector acts only when it validates
        for name in ("error_injection_rate", "error_injection_type"):
            if _changed(r, name):
                problems.append(f"--rerun_state_machine.{name} injects errors only with --rerun_state_machine."
                                f"rerun_mode=validate_results (it is {r.rerun_mode}); set that mode or remove it")
    ddp = getattr(cfg, "ddp", None)
    if r.rerun_mode != "disabled" and not (r.check_for_nan_in_loss or r.check_for_spiky_loss
                                           or getattr(ddp, "check_for_nan_in_grad", False)):
        problems.append(f"--rerun_state_machine.rerun_mode={r.rerun_mode} has nothing to check: "
                        "--rerun_state_machine.check_for_nan_in_loss, --rerun_state_machine.check_for_spiky_loss "
                        "and --ddp.check_for_nan_in_grad are all off; turn one on or set rerun_mode=disabled")
    return problems


def check_unsupported(cfg) -> list[str]:
    """Problems for values this training loop cannot honor, each naming the flag and what would work."""
    return _model_problems(cfg) + _precision_problems(cfg) + _optimizer_ddp_problems(cfg) + _rerun_problems(cfg)
