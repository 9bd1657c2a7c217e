"""The Python entry points: ``pretrain(config, forward_step_func)`` and ``finetune(...)``.

A user's script builds a ConfigContainer (from a recipe, YAML or by hand), overrides fields as
it likes, and calls one of these; finalization and validation happen inside, right before
training, exactly as for ``bridge-train`` (whose ``run_training`` is the same code path). Run
the script as one process (``python train.py``) or under ``torchrun``/``srun``.

``forward_step_func`` replaces the built-in forward step with Megatron's convention
``forward_step(data_iterator, model) -> (output_tensor, loss_func)``, where
``loss_func(output_tensor)`` returns ``(loss, num_tokens, {"lm loss": tensor([sum, count])})``
or ``(loss, {"lm loss": value})``; what it reports under "lm loss" is what the log shows.
A leading state argument, ``forward_step(state, data_iterator, model)``, receives a
:class:`~megatron_bridge_cli.training.setup.StepState` (the finalized config and the
iteration counters).

Mistakes raise :class:`~megatron_bridge_cli.errors.ConfigError` (listing every problem)
before any process group exists.
"""

from __future__ import annotations

from typing import Callable, Optional

from megatron_bridge_cli.errors import ConfigError

__all__ = ["pretrain", "finetune"]


def pretrain(config, forward_step_func: Optional[Callable] = None) -> int:
    """Train ``config`` (an unfinalized ConfigContainer) from its initial or loaded state;
    returns 0 when training stops normally (see run_training)."""
    from megatron_bridge_cli.training.entry import run_training

    return run_training(config, forward_step_func)


def finetune(config, forward_step_func: Optional[Callable] = None) -> int:
    """Like :func:`pretrain`, starting from released or pretrained weights: the config must
    name them (``checkpoint.pretrained_checkpoint``, or ``checkpoint.load`` to resume a
    finetuning run)."""
    ck = config.checkpoint
    if not (ck.pretrained_checkpoint or ck.load):
        raise ConfigError("finetune() needs base weights: set config.checkpoint.pretrained_checkpoint "
                          "(or checkpoint.load to resume a finetuning run); use pretrain() to start from scratch")
    return pretrain(config, forward_step_func)
