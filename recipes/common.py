"""Parts every pretraining recipe shares, so recipes state only what is specific to them."""

from __future__ import annotations

from typing import Optional

from megatron_bridge_cli.config import (
    CheckpointConfig,
    ConfigContainer,
    GPTDatasetConfig,
    LoggerConfig,
    OptimizerConfig,
    SchedulerConfig,
    TokenizerConfig,
    TrainingConfig,
)
from megatron_bridge_cli.config.models import ModelProviderBase

__all__ = ["pretrain_container"]


def pretrain_container(
    model: ModelProviderBase,
    *,
    global_batch_size: int,
    micro_batch_size: int,
    train_iters: int,
    lr: float,
    min_lr: Optional[float] = None,
    warmup_iters: int = 2000,
    weight_decay: float = 0.1,
    adam_beta2: float = 0.95,
    data_path: Optional[list[str]] = None,
    tokenizer: Optional[TokenizerConfig] = None,
    eval_interval: int = 2000,
    eval_iters: int = 32,
    log_interval: int = 10,
    save: Optional[str] = None,
    save_interval: int = 2000,
) -> ConfigContainer:
    """A ConfigContainer with the usual pretraining setup around ``model``: Adam
    (beta2 0.95, clip 1.0), cosine decay to min_lr (default lr/10) after linear warmup,
    mock data unless data_path is given, periodic evaluation and checkpoints."""
    return ConfigContainer(
        model=model,
        train=TrainingConfig(
            global_batch_size=global_batch_size,
            micro_batch_size=micro_batch_size,
            train_iters=train_iters,
            eval_interval=eval_interval,
            eval_iters=eval_iters,
        ),
        optimizer=OptimizerConfig(
            optimizer="adam",
            lr=lr,
            min_lr=lr / 10 if min_lr is None else min_lr,
            weight_decay=weight_decay,
            adam_beta1=0.9,
            adam_beta2=adam_beta2,
            adam_eps=1e-8,
            clip_grad=1.0,
        ),
        scheduler=SchedulerConfig(lr_decay_style="cosine", lr_warmup_iters=warmup_iters),
        dataset=GPTDatasetConfig(data_path=data_path),
        logger=LoggerConfig(log_interval=log_interval),
        tokenizer=tokenizer or TokenizerConfig(),
        checkpoint=CheckpointConfig(save=save, save_interval=save_interval if save else None),
    )
