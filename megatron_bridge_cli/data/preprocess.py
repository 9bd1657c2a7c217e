"""Text -> megatron-core indexed dataset (.bin/.idx), one document per file or JSON line.

The output prefix is what ``--dataset.data_path`` takes. Every document ends with the
tokenizer's end-of-document id so GPTDataset can find boundaries. T5's span-corruption data
wants one sequence per sentence (``sentences=True``, ``--split-sentences``).
"""

from __future__ import annotations

import json
import os
import re
import sysconfig
from pathlib import Path
from typing import Iterable, Iterator

import numpy
from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

from megatron_bridge_cli.data.tokenizers import token_dtype

__all__ = ["iter_documents", "split_sentences", "write_indexed_dataset", "stdlib_text_files", "MAX_SENTENCE_TOKENS"]


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


MAX_SENTENCE_TOKENS = 512
"""Longest sentence written by split_sentences: megatron-core's T5/BERT sample mapping skips
every document that has a longer one (helpers.cpp LONG_SENTENCE_LEN)."""

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)")


def split_sentences(text: str) -> list[str]:
    """Lines, and long lines (prose paragraphs) further at sentence ends ('. ', '! ', '? ').

    Dependency-free on purpose (Megatron-LM uses NLTK punkt): for source code a line is the
    natural unit, for prose a sentence. The separators stay with the text before them, so
    joining the pieces gives the text back.
    """
    pieces = []
    for line in text.splitlines(keepends=True):
        if len(line) <= 200:
            pieces.append(line)
            continue
        start = 0
        for m in _SENTENCE_END.finditer(line):
            pieces.append(line[start:m.end()])
            start = m.end()
        pieces.append(line[start:])
    return [p for p in pieces if p]


def write_indexed_dataset(documents: Iterable[str], tokenizer, output_prefix: str | os.PathLike,
                          sentences: bool = False) -> dict:
    """Tokenize ``documents`` into ``<output_prefix>.bin/.idx``; return counts.

    ``sentences``: one sequence per sentence (split_sentences, cut at MAX_SENTENCE_TOKENS),
    grouped by document, as T5's span-corruption dataset reads them; otherwise one sequence
    per document (GPT). Either way the document ends with end-of-document. Written to
    temporary names and renamed at the end, so an interrupted run never leaves a half-written
    dataset under the real name.
    """
    prefix = Path(output_prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    tmp = prefix.with_name(prefix.name + ".tmp")
    dtype = token_dtype(tokenizer.vocab_size)
    builder = IndexedDatasetBuilder(f"{tmp}.bin", dtype=dtype)
    docs = tokens = seqs = 0
    for text in documents:
        if sentences:
            parts = []
            for sentence in split_sentences(text):
                ids = list(tokenizer.tokenize(sentence))
                parts += [ids[i:i + MAX_SENTENCE_TOKENS] for i in range(0, len(ids), MAX_SENTENCE_TOKENS)]
        else:
            parts = [list(tokenizer.tokenize(text))]
        parts = [p for p in parts if p]
        if not parts:
            continue
        if len(parts[-1]) == MAX_SENTENCE_TOKENS and sentences:
            parts.append([])
        parts[-1] = parts[-1] + [tokenizer.eod]
        builder.add_document(numpy.asarray([i for p in parts for i in p], dtype=dtype), [len(p) for p in parts])
        docs += 1
        seqs += len(parts)
        tokens += sum(len(p) for p in parts)
    builder.finalize(f"{tmp}.idx")
    os.replace(f"{tmp}.bin", f"{prefix}.bin")
    os.replace(f"{tmp}.idx", f"{prefix}.idx")
    return {"documents": docs, "sequences": seqs, "tokens": tokens, "prefix": str(prefix)}


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
