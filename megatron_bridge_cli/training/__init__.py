"""Training: ``pretrain``/``finetune`` for Python scripts; the CLI's path is entry.run_training."""

from megatron_bridge_cli.training.api import finetune, pretrain

__all__ = ["pretrain", "finetune"]
