"""Merge a PEFT run's adapters into its base model and save a full checkpoint.

    python scripts/merge_lora.py RUN OUT [--pretrained BASE] [--step N]

RUN is the PEFT run's ``--checkpoint.save`` folder (its latest checkpoint, or ``--step``'s);
its run_config.yaml gives the model and the base (``--checkpoint.pretrained_checkpoint``,
overridden by ``--pretrained``). The merged weights, W + (alpha/dim) B A (DoRA: scaled by
m / ||W + (alpha/dim) B A|| per output row), are saved to OUT as an ordinary full
checkpoint (no optimizer state): ``--checkpoint.pretrained_checkpoint=OUT`` loads it without
--peft. One process merges a run of any TP size (the model is built at TP=1, its vocabulary
padded as at the run's TP); under torchrun it merges at the launched layout instead.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from typing import Optional

from megatron_bridge_cli.errors import ConfigError

__all__ = ["merge_lora", "main"]


def _run_config(run: str, step: Optional[int]):
    from megatron_bridge_cli.config import ConfigContainer
    from megatron_bridge_cli.training.checkpoint_state import RUN_CONFIG
    from megatron_bridge_cli.training.checkpointing import checkpoint_dir_to_load

    folder = checkpoint_dir_to_load(run, step)
    if folder is None or not os.path.isfile(os.path.join(folder, RUN_CONFIG)):
        raise ConfigError(f"{run}: no checkpoint{'' if step is None else f' of step {step}'} with a {RUN_CONFIG} "
                          f"there; RUN must be the --checkpoint.save folder of a --peft run")
    cfg = ConfigContainer.from_yaml(os.path.join(folder, RUN_CONFIG))
    if cfg.peft is None:
        raise ConfigError(f"{folder} was not saved by a --peft run (its {RUN_CONFIG} has no peft section): "
                          f"there is nothing to merge")
    return cfg


def merge_lora(run: str, out: str, pretrained: Optional[str] = None, step: Optional[int] = None) -> str:
    """Merge the adapters of ``run`` into the base and save a full checkpoint under ``out``;
    returns the folder written. Collective under torchrun; one process otherwise."""
    import torch

    from megatron_bridge_cli.training import setup as S
    from megatron_bridge_cli.training.checkpointing import Checkpointer, load_checkpoint
    from megatron_bridge_cli.training.checkpoint_files import iteration_dir
    from megatron_bridge_cli.training.env import detect_world
    from megatron_bridge_cli.training.peft import merge_adapters
    from megatron_bridge_cli.training.preflight import prepare

    cfg = _run_config(run, step)
    world = detect_world()
    m = cfg.model
    if world.world_size == 1 and (m.tensor_model_parallel_size > 1 or m.pipeline_model_parallel_size > 1):
        # one process: TP=PP=1, the vocabulary padded to the same size as in the run
        m.make_vocab_size_divisible_by *= m.tensor_model_parallel_size
        m.tensor_model_parallel_size = m.pipeline_model_parallel_size = 1
        m.virtual_pipeline_model_parallel_size = None
    ck = cfg.checkpoint
    ck.load, ck.ckpt_step = run, step
    ck.pretrained_checkpoint = pretrained or ck.pretrained_checkpoint
    ck.load_optim = ck.load_rng = ck.save_optim = ck.save_rng = False
    ck.save, ck.most_recent_k, ck.async_save = out, -1, False
    merged_cfg = copy.deepcopy(cfg)  # what the merged checkpoint's run_config.yaml says
    merged_cfg.peft = None
    merged_cfg.checkpoint.load = merged_cfg.checkpoint.pretrained_checkpoint = None
    merged_cfg.checkpoint.ckpt_step = None
    final = prepare(cfg, world.world_size)
    if S.on_cpu():
        from megatron_bridge_cli.training.cpu_compat import apply_cpu_compat

        apply_cpu_compat()
    S.init_distributed(final, world)
    try:
        S.set_seeds(final)
        model = S.build_model(final)
        optimizer = S.build_optimizer(final, model)
        built = S.Built(model=model, optimizer=optimizer, scheduler=S.build_scheduler(final, optimizer),
                        state=S.TrainingState())
        load_checkpoint(final, built)
        n = sum(merge_adapters(S.unwrap(chunk)) for chunk in model)
        final.peft = None  # the checkpoint now holds the whole model
        saver = Checkpointer(final, merged_cfg)
        saver.save(built)
        saver.close()
        if torch.distributed.get_rank() == 0:
            print(f"merged {n} adapters into {iteration_dir(out, built.state.iteration)}", flush=True)
        return iteration_dir(out, built.state.iteration)
    finally:
        S.destroy_distributed()


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="merge_lora.py", description=__doc__.split("\n\n")[0],
                                     allow_abbrev=False)
    parser.add_argument("run", help="the --checkpoint.save folder of a --peft run")
    parser.add_argument("out", help="folder for the merged full checkpoint")
    parser.add_argument("--pretrained", help="base checkpoint (default: the run's --checkpoint.pretrained_checkpoint)")
    parser.add_argument("--step", type=int, help="merge this iteration's adapters (default: the latest)")
    args = parser.parse_args(argv)
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)  # torch deprecations inside megatron-core
    try:
        merge_lora(args.run, args.out, args.pretrained, args.step)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
