"""Validation before any work: the config (finalize) and the world it will meet (files, dirs).

``prepare(cfg, world_size)`` is the one gate every path goes through: ``--dry-run``, the
launcher's check before ``--nproc-per-node`` spawns workers, and ``run_training`` in each
worker. It finalizes the container and then looks at the file system: the data files, the
checkpoints to load, and every folder the run will write to. All problems are reported
together, each naming its flag, so a job is refused before a GPU-hour is spent rather than
failing at its first write.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from typing import Optional

from megatron_bridge_cli.config.finalize import finalize
from megatron_bridge_cli.errors import ConfigError, ValidationError

__all__ = ["prepare", "output_dir_problem", "file_problems"]


def output_dir_problem(flag: str, path: str) -> Optional[str]:
    """Why the run could not create and write ``path``, or None. Leaves nothing behind:
    an existing folder gets a probe file, a missing one a probe folder in its nearest existing
    ancestor (uniquely named, so ranks checking at once do not race)."""
    target = os.path.abspath(os.path.expanduser(path))
    probe_in = target
    while not os.path.exists(probe_in):
        parent = os.path.dirname(probe_in)
        if parent == probe_in:
            break
        probe_in = parent
    if not os.path.isdir(probe_in):
        return f"--{flag}={path}: {probe_in} is a file, so the folder cannot be created there"
    try:
        if probe_in == target:
            fd, name = tempfile.mkstemp(prefix=".bridge-train-probe-", dir=target)
            os.close(fd)
            os.unlink(name)
        else:
            shutil.rmtree(tempfile.mkdtemp(prefix=".bridge-train-probe-", dir=probe_in))
    except OSError as e:
        where = "written" if probe_in == target else "created"
        return f"--{flag}={path}: the folder cannot be {where} ({e.strerror} in {probe_in}); choose a writable location"
    return None


def _logger_dirs(cfg) -> list[str]:
    lg, problems = cfg.logger, []
    dirs = [("logger.tensorboard_dir", lg.tensorboard_dir)]
    if lg.wandb_project:
        dirs.append(("logger.wandb_save_dir", lg.wandb_save_dir))
    for flag, path in dirs:
        problem = output_dir_problem(flag, path) if path else None
        if problem:
            problems.append(problem)
    return problems


def file_problems(cfg, finalized: bool) -> list[str]:
    """What the file system says about the run: data, checkpoints, output folders."""
    from megatron_bridge_cli.data.checks import data_problems
    from megatron_bridge_cli.data.tokenizers import tokenizer_problems
    from megatron_bridge_cli.training.checkpoint_files import checkpoint_problems

    return (tokenizer_problems(cfg, finalized) + data_problems(cfg, finalized) + checkpoint_problems(cfg)
            + _logger_dirs(cfg))


def _tokenizer_vocab_size(cfg) -> Optional[int]:
    """The vocabulary of the tokenizer's files, for finalize to give an unset --model.vocab_size
    (None when it is set, or when the files do not load: file_problems says why)."""
    if cfg.model.vocab_size is not None:
        return None
    from megatron_bridge_cli.data.tokenizers import tokenizer_vocab_size

    try:
        return tokenizer_vocab_size(cfg.tokenizer)
    except ConfigError:
        return None


def _hf_tokenizer(cfg):
    """Starting from a HuggingFace folder with tokenizer files and no tokenizer chosen by a
    config file or flag (--tokenizer.*): that folder's tokenizer, chat template included (a
    copy of ``cfg``). The weights' own tokenizer wins over the recipe's default."""
    from megatron_bridge_cli.hf.directory import is_hf_directory

    path = cfg.checkpoint.pretrained_checkpoint
    chosen = any(p == "tokenizer" or p.startswith("tokenizer.") for p in cfg.explicit_paths)
    if chosen or not is_hf_directory(path):
        return cfg
    if not any(os.path.isfile(os.path.join(path, f)) for f in ("tokenizer.json", "tokenizer_config.json")):
        return cfg
    cfg = copy.deepcopy(cfg)
    cfg.tokenizer.tokenizer_type, cfg.tokenizer.tokenizer_model = "HuggingFaceTokenizer", path
    return cfg


def _with_epochs(cfg):
    """``cfg`` with --dataset.num_epochs turned into --train.train_iters (a copy; the config
    package does not read files, so the pre-flight counts the training rows here). Unchanged
    when num_epochs is unset or the files do not read (file_problems says why)."""
    from megatron_bridge_cli.config.data import FinetuningDatasetConfig

    if not isinstance(cfg.dataset, FinetuningDatasetConfig):
        return cfg
    from megatron_bridge_cli.data.sft import epoch_iterations

    iterations = epoch_iterations(cfg)
    if iterations is None:
        return cfg
    cfg = copy.deepcopy(cfg)
    cfg.train.train_iters, cfg.train.train_samples = iterations, None
    return cfg


def prepare(cfg, world_size: int):
    """Finalize ``cfg`` for ``world_size`` ranks and check the files it names.

    Returns the finalized copy; raises ValidationError listing every problem, config and file
    system alike.
    """
    cfg = _with_epochs(_hf_tokenizer(cfg))
    try:
        final, problems = finalize(cfg, world_size, _tokenizer_vocab_size(cfg)), []
    except ValidationError as e:
        final, problems = None, list(e.problems)
    problems += file_problems(final if final is not None else cfg, finalized=final is not None)
    if problems:
        raise ValidationError(problems)
    return final
