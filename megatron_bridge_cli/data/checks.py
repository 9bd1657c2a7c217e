"""Pre-flight checks of the data a run names: blend strings, index files, non-empty splits,
and the JSONL files of --dataset=sft.

Each check returns problems as text naming the flag (validation reports them all at once);
none imports megatron-core's dataset code until the files are known to be well formed, since
its readers ``assert`` on a bad header and memory-map whatever they are given.

A megatron-core ``.idx`` file (``IndexedDataset``, version 1) is: the 9-byte magic
``MMIDIDX\\0\\0``, a little-endian u64 version, a u8 dtype code, u64 sequence and document
counts, then int32 lengths and int64 pointers per sequence and int64 document indices.
"""

from __future__ import annotations

import math
import os
import struct
from typing import Optional

__all__ = ["parse_blend", "BlendError", "data_problems", "index_problem", "sft_problems"]

_INDEX_MAGIC = b"MMIDIDX\x00\x00"
_HEADER = struct.Struct("<9sQBQQ")
# megatron-core's DType codes -> item size in the .bin file.
_DTYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 8, 7: 4, 8: 2}
_PATH_FLAGS = ("data_path", "train_data_path", "valid_data_path", "test_data_path")


class BlendError(ValueError):
    """A blend list that is neither prefixes nor weight/prefix pairs."""


def _number(token: str) -> Optional[float]:
    try:
        return float(token)
    except ValueError:
        return None


def parse_blend(paths: Optional[list[str]]) -> Optional[tuple[list[str], Optional[list[float]]]]:
    """``['0.3 a 0.7 b']``, ``['0.3', 'a', '0.7', 'b']`` or ``['a', 'b']`` -> (prefixes, weights).

    Stricter than megatron-core's ``get_blend_from_list``, which takes ``0.5 a 0.3`` as three
    prefixes and asserts on ``a 0.5 b 0.3``: a weight must precede each prefix, be a finite
    positive number, and then every prefix has one."""
    if not paths:
        return None
    tokens = [t for p in paths for t in str(p).split()]
    if not tokens:
        return None
    numbers = [_number(t) for t in tokens]
    if all(n is None for n in numbers):
        return tokens, None
    if len(tokens) % 2 or any(n is None for n in numbers[0::2]) or any(n is not None for n in numbers[1::2]):
        raise BlendError(
            f"{' '.join(tokens)!r} is not a blend: give prefixes ('a b') or weight-prefix pairs "
            "('0.3 a 0.7 b'), a weight before every prefix"
        )
    weights = numbers[0::2]
    bad = [t for t, w in zip(tokens[0::2], weights) if not (math.isfinite(w) and w > 0)]
    if bad:
        raise BlendError(f"blend weights must be positive finite numbers, got {', '.join(bad)}")
    return tokens[1::2], weights


def index_problem(prefix: str) -> Optional[str]:
    """Why ``prefix.idx``/``prefix.bin`` are not a megatron-core indexed dataset, or None."""
    idx, bin_ = prefix + ".idx", prefix + ".bin"
    try:
        size = os.path.getsize(idx)
        with open(idx, "rb") as f:
            head = f.read(_HEADER.size)
            if not head.startswith(_INDEX_MAGIC):
                return f"{idx} is not a megatron-core index file (no MMIDIDX header)"
            if len(head) < _HEADER.size:
                return f"{idx} is truncated ({size} bytes, shorter than an index header)"
            _, version, code, sequences, documents = _HEADER.unpack(head)
            if version != 1 or code not in _DTYPE_SIZES:
                return f"{idx} has an unknown index version ({version}) or token type ({code})"
            expected = _HEADER.size + sequences * (4 + 8) + documents * 8
            if size != expected:
                return f"{idx} is truncated or corrupt: {size} bytes, its header says {expected}"
            if sequences == 0:
                return f"{idx} holds no sequences"
            f.seek(_HEADER.size + (sequences - 1) * 4)
            (last_length,) = struct.unpack("<i", f.read(4))
            f.seek(_HEADER.size + sequences * 4 + (sequences - 1) * 8)
            (last_pointer,) = struct.unpack("<q", f.read(8))
        bin_size = os.path.getsize(bin_)
    except OSError as e:
        return f"cannot read {e.filename}: {e.strerror}"
    if bin_size != last_pointer + last_length * _DTYPE_SIZES[code]:
        return (f"{bin_} ({bin_size} bytes) does not match {idx} "
                f"({last_pointer + last_length * _DTYPE_SIZES[code]} bytes); preprocess them again together")
    return None


def _file_problems(d) -> list[str]:
    problems = []
    for flag in _PATH_FLAGS:
        try:
            blend = parse_blend(getattr(d, flag))
        except BlendError as e:
            problems.append(f"--dataset.{flag}: {e}")
            continue
        for prefix in blend[0] if blend else []:
            missing = [prefix + ext for ext in (".bin", ".idx") if not os.path.isfile(prefix + ext)]
            if missing:
                problems.append(
                    f"--dataset.{flag}: {' and '.join(missing)} not found (a prefix names PREFIX.bin and "
                    "PREFIX.idx; build them with scripts/preprocess_data.py)"
                )
                continue
            bad = index_problem(prefix)
            if bad:
                problems.append(f"--dataset.{flag}: {bad}")
    return problems


def _split_problems(cfg) -> list[str]:
    """A split that gets no whole document of a prefix makes megatron-core's GPTDataset loop
    forever (its epoch count never reaches the requested tokens): refuse it up front. T5's
    sample mapping loops the same way over documents it cannot use (data/t5_data.py)."""
    from megatron.core.datasets.blended_megatron_dataset_config import parse_and_normalize_split
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    from megatron_bridge_cli.config.data import T5DatasetConfig

    d, t = cfg.dataset, cfg.train
    t5 = isinstance(d, T5DatasetConfig)
    if t5:
        from megatron_bridge_cli.data.t5_data import usable_documents
    needed = [True, t.eval_iters > 0, t.eval_iters > 0]
    names = ["training", "validation", "test"]
    what = "document T5 can sample from (one sentence, or sentences of at most 512 tokens)" if t5 else "document"
    blend = parse_blend(d.data_path)
    ranges = []  # (flag, prefix, split index or None for the whole file, (lo, hi))
    if blend:
        weights = parse_and_normalize_split(d.split)
        acc = 0.0
        for i, w in enumerate(weights[:3]):
            ranges += [("data_path", prefix, i, (acc, acc + w)) for prefix in blend[0] if needed[i] and w > 0]
            acc += w
    elif t5:
        for i, flag in enumerate(("train_data_path", "valid_data_path", "test_data_path")):
            per = parse_blend(getattr(d, flag))
            ranges += [(flag, prefix, None, (0.0, 1.0)) for prefix in (per[0] if per and needed[i] else [])]
    problems = []
    for flag, prefix, i, (lo, hi) in ranges:
        indexed = IndexedDataset(prefix, mmap=True)
        docs = len(indexed.document_indices) - 1
        first, last = int(round(lo * docs)), int(round(hi * docs))
        usable = int(usable_documents(indexed)[first:last].sum()) if t5 else last - first
        if usable >= 1:
            continue
        if i is None:
            problems.append(f"--dataset.{flag}: {prefix} ({docs} documents) has no {what}; "
                            "preprocess it with scripts/preprocess_data.py --split-sentences")
        else:
            example = "" if d.split.replace(" ", "") == "90,5,5" else " (e.g. --dataset.split=90,5,5)"
            problems.append(
                f"--dataset.split={d.split!r} leaves the {names[i]} split of {prefix} ({docs} documents) "
                f"without a {what}; give it a larger share{example} or more documents"
            )
    return problems


def _jsonl_count(flag: str, path: str, d) -> tuple[int, Optional[str]]:
    """Samples in one SFT file, or the problem with its first bad line."""
    from megatron_bridge_cli.data.sft import line_problem, read_jsonl

    if not os.path.isfile(path):
        return 0, f"--dataset.{flag}: {path} not found (--dataset=sft reads JSONL files, one sample a line)"
    count = 0
    try:
        for number, obj in read_jsonl(path):
            problem = line_problem(obj, d)
            if problem:
                return count, f"--dataset.{flag}: {path} line {number} {problem}"
            count += 1
    except ValueError as e:  # not JSON, or not UTF-8 text
        return count, f"--dataset.{flag}: {e}"
    except OSError as e:
        return count, f"--dataset.{flag}: cannot read {path}: {e.strerror}"
    return count, None


def _sft_layout_problems(cfg) -> list[str]:
    """Packed rows need their attention mask honoured in every model chunk; per-batch lengths
    need a schedule without fixed activation shapes; epochs count from one up."""
    m, d, problems = cfg.model, cfg.dataset, []
    if d.num_epochs is not None and d.num_epochs < 1:
        problems.append(f"--dataset.num_epochs={d.num_epochs}: give at least 1 pass over the training file, or "
                        "leave it unset and use --train.train_iters")
    if d.dataloader_type not in ("single", "batch"):  # the flag's choices catch this; Python overrides land here
        problems.append(f"--dataset.dataloader_type={d.dataloader_type!r}: expected one of: single, batch")
    if d.dataloader_type == "batch":
        # Pipeline stages exchange activations of one fixed [seq_length, micro-batch, hidden] shape.
        if m.pipeline_model_parallel_size > 1:
            problems.append("--dataset.dataloader_type=batch: pipeline stages send activations of a fixed sequence "
                            "length; use --dataset.dataloader_type=single with "
                            f"--model.pipeline_model_parallel_size={m.pipeline_model_parallel_size}")
        if d.packed:
            problems.append("--dataset.dataloader_type=batch pads micro-batches of single samples; packed rows "
                            "already fill seq_length: use --dataset.dataloader_type=single with --dataset.packed, "
                            "or --no-dataset.packed")
    if not d.packed:
        return problems
    if m.use_transformer_engine():
        problems.append("--dataset.packed needs --model.layer_spec=local: the Transformer Engine attention runs a "
                        "plain causal mask and would let packed samples see each other")
    if m.pipeline_model_parallel_size > 2 or (m.pipeline_model_parallel_size == 2
                                              and (m.virtual_pipeline_model_parallel_size or 1) > 1):
        problems.append("--dataset.packed: only the first and last pipeline chunks read the batch, and the others "
                        "would not see its attention mask; use --model.pipeline_model_parallel_size of 1 or 2 "
                        "(without virtual stages), or pad instead (--no-dataset.packed)")
    return problems


def sft_problems(cfg) -> list[str]:
    """--dataset=sft: its JSONL files exist and every line is a sample (the first bad line is
    named), and each split the run reads gets at least one sample."""
    from megatron_bridge_cli.data.sft import split_bounds

    d, t = cfg.dataset, cfg.train
    per_split = [getattr(d, flag) for flag in ("train_data_path", "valid_data_path", "test_data_path")]
    if not (d.data_path or any(per_split)):
        return ["--dataset=sft needs JSONL files: set --dataset.data_path (divided by --dataset.split) or "
                "--dataset.train_data_path (and --dataset.valid_data_path)"] + _sft_layout_problems(cfg)
    problems = _sft_layout_problems(cfg)
    flags = ("train_data_path", "valid_data_path", "test_data_path") if any(per_split) else ("data_path",)
    counts = {}
    for flag in flags:
        counts[flag] = 0
        for path in getattr(d, flag) or []:
            n, problem = _jsonl_count(flag, str(path), d)
            counts[flag] += n
            if problem:
                problems.append(problem)
    if problems:
        return problems
    if any(per_split):
        if not counts["train_data_path"]:
            problems.append("--dataset.train_data_path: no training samples (set it, with at least one line)")
        return problems
    from megatron.core.datasets.blended_megatron_dataset_config import parse_and_normalize_split

    n = counts["data_path"]
    if any(_number(part.strip()) is None for part in d.split.split(",")):
        return problems  # validation reports the malformed --dataset.split
    weights = parse_and_normalize_split(d.split)
    if not all(math.isfinite(w) and w >= 0 for w in weights):
        return [f"--dataset.split={d.split!r} gives no split a share; e.g. --dataset.split=90,10,0"]
    bounds = split_bounds(d.split, n)
    needed = [True, t.eval_iters > 0 and len(weights) > 1 and weights[1] > 0,
              t.eval_iters > 0 and len(weights) > 2 and weights[2] > 0]
    for i, name in enumerate(("training", "validation", "test")):
        if needed[i] and bounds[i + 1] == bounds[i]:
            problems.append(f"--dataset.split={d.split!r} leaves the {name} split of --dataset.data_path ({n} samples) "
                            "empty; give it a larger share (e.g. --dataset.split=90,10,0) or more samples")
    return problems


def data_problems(cfg, finalized: bool) -> list[str]:
    """Every problem with the files the dataset section names. The split check needs the
    derived run length, so it runs only on a finalized container whose files are sound."""
    from megatron_bridge_cli.config.data import FinetuningDatasetConfig

    d = cfg.dataset
    if isinstance(d, FinetuningDatasetConfig):
        return sft_problems(cfg)
    if d.uses_mock_data():
        return []
    problems = _file_problems(d)
    if finalized and not problems:
        problems = _split_problems(cfg)
    return problems
