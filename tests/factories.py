"""Small, complete ConfigContainers for tests."""

from __future__ import annotations

import torch

from megatron_bridge_cli.config import (
    CheckpointConfig,
    CommOverlapConfig,
    ConfigContainer,
    DoRAConfig,
    FaultToleranceConfig,
    GPTDatasetConfig,
    GPTModelProvider,
    InProcessRestartConfig,
    LoggerConfig,
    MixedPrecisionConfig,
    NVRxStragglerDetectionConfig,
    OptimizerConfig,
    ProfilingConfig,
    SchedulerConfig,
    StragglerDetectionConfig,
    TokenizerConfig,
    TrainingConfig,
)


def tiny_container(**train) -> ConfigContainer:
    """A 2-layer GPT container that finalizes at world size 1 and 2."""
    train_kwargs = dict(global_batch_size=8, micro_batch_size=2, train_iters=100)
    train_kwargs.update(train)
    return ConfigContainer(
        model=GPTModelProvider(num_layers=2, hidden_size=64, num_attention_heads=4, seq_length=32, vocab_size=128),
        train=TrainingConfig(**train_kwargs),
        optimizer=OptimizerConfig(lr=1e-3, min_lr=1e-4),
        scheduler=SchedulerConfig(lr_warmup_iters=10),
        dataset=GPTDatasetConfig(),
        logger=LoggerConfig(),
        tokenizer=TokenizerConfig(),
        checkpoint=CheckpointConfig(),
    )


def full_container() -> ConfigContainer:
    """tiny_container with every optional section filled in and non-default values of
    every awkward type: dtypes, callables, partials, enums, tuples, lists, dicts."""
    import functools
    import signal

    import torch.nn.functional as F

    cfg = tiny_container()
    cfg.model.activation_func = F.silu
    cfg.model.params_dtype = torch.bfloat16
    cfg.model.window_size = (128, 0)
    cfg.model.init_method = functools.partial(torch.nn.init.normal_, mean=0.0, std=0.01)
    cfg.model.no_rope_freq = [1, 0]
    cfg.train.exit_signal = signal.SIGUSR1
    cfg.dataset.data_path = ["0.3", "/data/a_text_document", "0.7", "/data/b_text_document"]
    cfg.mixed_precision = MixedPrecisionConfig(bf16=True, params_dtype=torch.bfloat16)
    cfg.comm_overlap = CommOverlapConfig(overlap_grad_reduce=True)
    cfg.peft = DoRAConfig(dim=8, target_modules=["linear_qkv"])
    cfg.profiling = ProfilingConfig(use_pytorch_profiler=True, profile_ranks=[0, 1])
    cfg.ft = FaultToleranceConfig(calc_ft_timeouts=True)
    cfg.straggler = StragglerDetectionConfig()
    cfg.nvrx_straggler = NVRxStragglerDetectionConfig()
    cfg.inprocess_restart = InProcessRestartConfig(max_iterations=3)
    return cfg
