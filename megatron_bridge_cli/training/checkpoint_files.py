"""What a checkpoint folder holds, read from the file system alone (no torch.distributed).

Two users: validation, before any process group exists (``checkpoint_problems``: every mistake
about what to load or where to save, each naming its flag), and the loader, which loads the
folder ``resolve`` chose, so that the check and the load never disagree.

A checkpoint folder (``iter_NNNNNNN``) is *complete* when dist_checkpointing finished writing
it: ``metadata.json``, ``common.pt`` and torch's ``.metadata`` index are all there. It is
*readable* when those parse and every shard file is at least as long as the index says (a
truncated shard). Tensor bytes themselves carry no checksum in torch_dist, so bytes flipped
inside a tensor are beyond any check here (and megatron-core's).

The tracker ``latest_checkpointed_iteration.txt`` holds an iteration number (or ``release``,
read as 0). Only a folder the tracker names is the latest checkpoint: an ``iter_N`` newer than
the tracker is a save that was killed between its rename and the tracker's update, and
``iter_N.tmp`` a save that never finished.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from typing import Optional

from megatron_bridge_cli.errors import ConfigError
from megatron_bridge_cli.hf.directory import hf_directory_problem, hub_id_problem, is_hf_directory, read_hf_config

__all__ = ["TRACKER", "DCP_FILES", "iteration_dir", "read_tracker", "saved_iterations", "defect", "tensor_shapes",
           "Choice", "resolve", "checkpoint_problems"]

TRACKER = "latest_checkpointed_iteration.txt"
DCP_FILES = ("metadata.json", "common.pt", ".metadata")
"""What dist_checkpointing writes into every checkpoint folder besides the shards."""
_ITER = re.compile(r"iter_(\d+)")


def iteration_dir(root: str, iteration: int) -> str:
    return os.path.join(root, f"iter_{iteration:07d}")


def read_tracker(root: str) -> tuple[Optional[str], Optional[int]]:
    """(the tracker's text or None when there is none, its iteration or None when garbage)."""
    path = os.path.join(root, TRACKER)
    if not os.path.isfile(path):
        return None, None
    try:
        with open(path, "rb") as f:
            raw = f.read(4096)
        text = raw.decode("utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return repr(raw[:40]) if "raw" in locals() else "<unreadable>", None
    if text == "release":
        return text, 0
    return text, int(text) if text.isdigit() else None


def saved_iterations(root: str) -> list[int]:
    """Iterations with an ``iter_NNNNNNN`` folder under ``root`` (any state), newest first."""
    try:
        names = os.listdir(root)
    except OSError:
        return []
    found = [int(m.group(1)) for m in map(_ITER.fullmatch, names) if m]
    return sorted((i for i in found if os.path.isdir(iteration_dir(root, i))), reverse=True)


class _IndexUnpickler(pickle.Unpickler):
    """Reads torch's ``.metadata`` index, resolving only the classes such an index holds, so a
    crafted file runs no code (validation reads it before the user asked for anything to load)."""

    def find_class(self, module: str, name: str):
        import torch

        # Pickle protocol 4 resolves dotted names attribute by attribute, so a name like
        # 'os.system' under an allowed module would reach anything that module imported: only
        # plain names, and under torch's checkpoint package only classes defined there.
        if "." in name:
            raise _NotAnIndex(f"{module}.{name}")
        if (module, name) in _INDEX_GLOBALS or module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return super().find_class(module, name)
        if module.startswith("torch.distributed.checkpoint."):
            found = super().find_class(module, name)
            if isinstance(found, type) and found.__module__.startswith("torch.distributed.checkpoint."):
                return found
        raise _NotAnIndex(f"{module}.{name}")


class _NotAnIndex(pickle.UnpicklingError):
    pass


_INDEX_GLOBALS = {("torch", "Size"), ("torch.serialization", "_get_layout"), ("collections", "OrderedDict")}


def _index(path: str):
    """torch's checkpoint index of ``path``, or None when it holds something other than torch's
    own classes (not checked then: megatron-core's load will say what it finds)."""
    with open(os.path.join(path, ".metadata"), "rb") as f:
        try:
            return _IndexUnpickler(f).load()
        except _NotAnIndex:
            return None


def tensor_shapes(path: str) -> dict[str, tuple[int, ...]]:
    """{tensor key: global shape} of the checkpoint folder ``path`` (empty when unknown)."""
    try:
        index = _index(path)
    except Exception:  # noqa: BLE001 - defect() reports unreadable indexes
        return {}
    found = {}
    for key, meta in (getattr(index, "state_dict_metadata", None) or {}).items():
        size = getattr(meta, "size", None)
        if size is not None:
            found[key] = tuple(int(n) for n in size)
    return found


def _shard_extents(path: str) -> Optional[dict[str, int]]:
    """{shard file: bytes the index says it holds at least}, or None when unknown."""
    index = _index(path)
    if index is None:
        return None
    extents: dict[str, int] = {}
    for info in (getattr(index, "storage_data", None) or {}).values():
        name = getattr(info, "relative_path", None)
        if isinstance(name, str):
            extents[name] = max(extents.get(name, 0), int(info.offset) + int(info.length))
    return extents


def defect(path: str) -> Optional[str]:
    """Why the checkpoint folder ``path`` cannot be loaded (a short phrase), or None."""
    missing = [name for name in DCP_FILES if not os.path.isfile(os.path.join(path, name))]
    if missing:
        return f"it is incomplete ({', '.join(missing)} missing: its save did not finish)"
    try:
        with open(os.path.join(path, "metadata.json"), encoding="utf-8") as f:
            meta = json.load(f)
        if not isinstance(meta, dict) or "sharded_backend" not in meta:
            return "its metadata.json is not dist_checkpointing's"
    except (OSError, ValueError):
        return "its metadata.json is unreadable or not JSON"
    try:
        with zipfile.ZipFile(os.path.join(path, "common.pt")) as z:
            if z.testzip() is not None:  # CRC of every member: common.pt is small
                return "its common.pt is corrupted (a checksum does not match)"
    except (OSError, zipfile.BadZipFile, EOFError, ValueError):
        return "its common.pt is truncated or corrupted (not a readable torch file)"
    try:
        extents = _shard_extents(path)
    except Exception:  # noqa: BLE001 - any unpickling failure means the same thing here
        return "its .metadata index is truncated or corrupted"
    for name, need in sorted((extents or {}).items()):
        shard = os.path.join(path, name)
        if not os.path.isfile(shard):
            return f"its shard file {name} is missing"
        size = os.path.getsize(shard)
        if size < need:
            return f"its shard file {name} is truncated ({size:,} bytes; the index needs {need:,})"
    return None


@dataclass
class Choice:
    """What to load for one flag: a folder, or the problem that stops the run."""

    path: Optional[str] = None
    problem: Optional[str] = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(folder, why) of newer checkpoints passed over by --checkpoint.fallback_to_previous."""
    nothing: bool = False
    """The problem is that there is no checkpoint at all (no folder, empty, no tracker)."""


def _fallback(root: str, below: Optional[int], skipped: list[tuple[str, str]]) -> Optional[str]:
    """The newest loadable iteration folder older than ``below`` (any, when None)."""
    for it in saved_iterations(root):
        if below is not None and it >= below:
            continue
        path = iteration_dir(root, it)
        why = defect(path)
        if why is None:
            return path
        skipped.append((path, why))
    return None


def resolve(flag: str, root: Optional[str], step: Optional[int] = None, *, required: bool = False,
            fallback: bool = False) -> Choice:
    """The checkpoint folder ``--flag=root`` (and ``--checkpoint.ckpt_step``) points at.

    ``required``: a folder with no checkpoint is a problem (otherwise: train from scratch).
    ``fallback``: a latest checkpoint that cannot be loaded gives way to the newest older one
    that can (never with an explicit step).
    """
    if not root:
        return Choice()
    where = f"--{flag}={root}"
    if not os.path.exists(root):
        return Choice(problem=f"{where}: no such folder" if required else None, nothing=required)
    if not os.path.isdir(root):
        name = os.path.basename(root)
        parent = os.path.dirname(root) or "."
        if name in (TRACKER, *DCP_FILES) or name.endswith(".distcp"):
            hint = f"did you mean --{flag}={parent}?"
        else:
            hint = "give the folder --checkpoint.save wrote (the one holding latest_checkpointed_iteration.txt)"
        return Choice(problem=f"{where} is a file, not a checkpoint folder; {hint}")
    if _ITER.fullmatch(os.path.basename(os.path.normpath(root))) or os.path.isfile(os.path.join(root, "metadata.json")):
        why = defect(root)  # an iteration folder itself
        return Choice(root) if why is None else Choice(problem=f"{where}: the checkpoint cannot be loaded: {why}")
    if step is not None:
        path = iteration_dir(root, step)
        if not os.path.isdir(path):
            have = ", ".join(map(str, sorted(saved_iterations(root)))) or "none"
            return Choice(problem=f"--checkpoint.ckpt_step={step}: {path} does not exist (iterations saved in "
                                  f"{root}: {have})")
        why = defect(path)
        return Choice(path) if why is None else Choice(problem=f"--checkpoint.ckpt_step={step}: {path} cannot be "
                                                               f"loaded: {why}")
    text, it = read_tracker(root)
    if text is None:
        if not required:
            return Choice()  # nothing saved yet: train from scratch
        if not os.listdir(root):
            return Choice(problem=f"{where} is an empty folder: there is no checkpoint to load", nothing=True)
        saved = saved_iterations(root)
        hint = f"; its newest folder is {iteration_dir(root, saved[0])}" if saved else ""
        return Choice(problem=f"{where} holds no checkpoint ({TRACKER} is missing){hint}", nothing=True)
    if it is None:
        latest, why = os.path.join(root, TRACKER), f"it holds {text[:40]!r}, not an iteration number or 'release'"
    else:
        latest = iteration_dir(root, it)
        why = defect(latest) if os.path.isdir(latest) else f"{TRACKER} names iteration {it}, but the folder does not exist"
    if why is None:
        return Choice(latest)
    skipped = [(latest, why)]
    older = _fallback(root, it, skipped)
    if fallback and older is not None:
        return Choice(older, skipped=skipped)
    problem = f"{where}: the latest checkpoint {latest} cannot be loaded: {why}."
    if older is not None:
        n = int(_ITER.fullmatch(os.path.basename(older)).group(1))
        problem += (f" The newest loadable one is {older}: add --checkpoint.fallback_to_previous to load it "
                    f"(or --checkpoint.ckpt_step={n}).")
    else:
        problem += " No older checkpoint there can be loaded either."
    return Choice(problem=problem)


def checkpoint_problems(cfg) -> list[str]:
    """Every problem with the checkpoints ``cfg`` loads and the folder it saves to, as
    one-paragraph texts naming the flag and the path. Looks at files only."""
    ck = cfg.checkpoint
    problems = []
    fallback = bool(getattr(ck, "fallback_to_previous", False))
    if ck.load:
        choice = resolve("checkpoint.load", ck.load, ck.ckpt_step, required=ck.exit_on_missing_checkpoint,
                         fallback=fallback)
        if choice.nothing:
            choice.problem += ("; --checkpoint.exit_on_missing_checkpoint asks for one (without it the run "
                               "trains from scratch)")
        problems += [choice.problem] if choice.problem else []
    if ck.pretrained_checkpoint and is_hf_directory(ck.pretrained_checkpoint):
        problems += hf_checkpoint_problems(cfg)
    elif ck.pretrained_checkpoint:
        choice = resolve("checkpoint.pretrained_checkpoint", ck.pretrained_checkpoint, required=True,
                         fallback=fallback)
        hub = hub_id_problem(ck.pretrained_checkpoint, "checkpoint.pretrained_checkpoint")
        problems += [hub or choice.problem] if choice.problem else []
    if ck.save:
        from megatron_bridge_cli.training.preflight import output_dir_problem

        problem = output_dir_problem("checkpoint.save", ck.save)
        problems += [problem] if problem else []
    if ck.save_hf:
        problems += save_hf_problems(cfg)
    return problems


def save_hf_problems(cfg) -> list[str]:
    """--checkpoint.save_hf exports the final checkpoint: it needs one, of a whole model."""
    from megatron_bridge_cli.training.preflight import output_dir_problem

    ck = cfg.checkpoint
    if not ck.save:
        return [f"--checkpoint.save_hf={ck.save_hf} exports the final checkpoint; set --checkpoint.save too"]
    if cfg.peft is not None:
        return [f"--checkpoint.save_hf={ck.save_hf}: a --peft run saves adapters only; merge them into the base "
                "after the run (python scripts/merge_lora.py RUN MERGED), then export MERGED with "
                "python -m megatron_bridge_cli.hf.export MERGED OUT"]
    problem = output_dir_problem("checkpoint.save_hf", os.path.dirname(os.path.abspath(ck.save_hf)))
    return [problem] if problem else []


def hf_checkpoint_problems(cfg) -> list[str]:
    """A HuggingFace folder as --checkpoint.pretrained_checkpoint: its files, and every
    architecture field of the model against its config.json."""
    from megatron_bridge_cli.hf.families import architecture_mismatches

    path, flag = cfg.checkpoint.pretrained_checkpoint, "checkpoint.pretrained_checkpoint"
    problem = hf_directory_problem(path, flag)
    if problem:
        return [problem]
    try:
        hf = read_hf_config(path, flag)
        found = architecture_mismatches(cfg.model, hf, os.path.join(path, "config.json"))
    except ConfigError as e:
        return [str(e)]
    if not found:
        return []
    return [f"--{flag}={path} does not fit the model: " + "; ".join(found)
            + " (set these --model fields to the file's values, or build the model from the folder with "
              f"--model=hf:{path})"]
