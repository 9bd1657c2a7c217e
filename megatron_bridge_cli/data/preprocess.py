"""Text -> megatron-core indexed dataset (.bin/.idx), one document per file or JSON line.

The output prefix is what ``--dataset.data_path`` takes. Every document ends with the
tokenizer's end-of-document id so GPTDataset can find boundaries.
"""

from __future__ import annotations

import json
import os
import sysconfig
from pathlib import Path
from typing import Iterable, Iterator

import numpy
from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

from megatron_bridge_cli.data.tokenizers import token_dtype

__all__ = ["iter_documents", "write_indexed_dataset", "stdlib_text_files"]


def iter_documents(paths: Iterable[str | os.PathLike], json_key: str = "text") -> Iterator[str]:
    """Documents of text files (one per file) and .jsonl files (one per line, field json_key)."""
    for path in paths:
        path = Path(path)
        if path.suffix in (".jsonl", ".json"):
            with path.open(encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        yield json.loads(line)[json_key]
        else:
            yield path.read_text(encoding="utf-8", errors="replace")


def write_indexed_dataset(documents: Iterable[str], tokenizer, output_prefix: str | os.PathLike) -> dict:
    """Tokenize ``documents`` into ``<output_prefix>.bin/.idx``; return counts.

    Written to temporary names and renamed at the end, so an interrupted run never leaves a
    half-written dataset under the real name.
    """
    prefix = Path(output_prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    tmp = prefix.with_name(prefix.name + ".tmp")
    dtype = token_dtype(tokenizer.vocab_size)
    builder = IndexedDatasetBuilder(f"{tmp}.bin", dtype=dtype)
    docs = tokens = 0
    for text in documents:
        ids = tokenizer.tokenize(text)
        if not ids:
            continue
        builder.add_document(numpy.asarray(list(ids) + [tokenizer.eod], dtype=dtype), [len(ids) + 1])
        docs += 1
        tokens += len(ids) + 1
    builder.finalize(f"{tmp}.idx")
    os.replace(f"{tmp}.bin", f"{prefix}.bin")
    os.replace(f"{tmp}.idx", f"{prefix}.idx")
    return {"documents": docs, "tokens": tokens, "prefix": str(prefix)}


def stdlib_text_files(max_bytes: int) -> list[Path]:
    """Python's own standard-library sources, a deterministic selection up to ``max_bytes``.

    Real text found on every machine with Python: the demo trains on it without a download.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    files, total = [], 0
    for path in sorted(root.glob("*.py")):
        size = path.stat().st_size
        if total + size > max_bytes:
            continue
        files.append(path)
        total += size
    return files
