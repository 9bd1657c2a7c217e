"""Tokenizers and text -> indexed dataset preprocessing, read back by megatron-core."""

import numpy
import pytest
from megatron.core.datasets.indexed_dataset import IndexedDataset

from megatron_bridge_cli.config import TokenizerConfig
from megatron_bridge_cli.data.preprocess import iter_documents, stdlib_text_files, write_indexed_dataset
from megatron_bridge_cli.data.tokenizers import build_tokenizer
from megatron_bridge_cli.errors import ConfigError


def test_byte_level_round_trip():
    tok = build_tokenizer(TokenizerConfig(tokenizer_type="ByteLevelTokenizer"))
    ids = tok.tokenize("naïve café ✓")
    assert max(ids) < 256 and tok.eod == 256 and tok.vocab_size == 257
    assert tok.detokenize(ids + [tok.eod]) == "naïve café ✓"


def test_null_tokenizer_sizes():
    tok = build_tokenizer(TokenizerConfig(vocab_size=1000))
    assert tok.vocab_size == 1001 and tok.eod == 1000
    assert build_tokenizer(TokenizerConfig(), model_vocab_size=512).eod == 511
    with pytest.raises(ConfigError, match="vocab_size"):
        build_tokenizer(TokenizerConfig())


def test_huggingface_tokenizer_needs_a_model():
    with pytest.raises(ConfigError, match="tokenizer_model"):
        build_tokenizer(TokenizerConfig(tokenizer_type="HuggingFaceTokenizer"))


def test_preprocess_writes_documents_megatron_core_reads(tmp_path):
    (tmp_path / "a.txt").write_text("hello world")
    (tmp_path / "b.jsonl").write_text('{"text": "first"}\n\n{"text": "second doc"}\n')
    tok = build_tokenizer(TokenizerConfig(tokenizer_type="ByteLevelTokenizer"))
    docs = iter_documents([tmp_path / "a.txt", tmp_path / "b.jsonl"])
    stats = write_indexed_dataset(docs, tok, tmp_path / "out" / "corpus_text_document")
    assert stats["documents"] == 3 and stats["tokens"] == len("hello world") + len("first") + len("second doc") + 3
    dataset = IndexedDataset(str(tmp_path / "out" / "corpus_text_document"))
    assert len(dataset) == 3
    first = dataset[0]
    assert first.dtype == numpy.uint16 and tok.detokenize(first) == "hello world" and first[-1] == tok.eod
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["corpus_text_document.bin", "corpus_text_document.idx"]


def test_stdlib_selection_is_deterministic_and_bounded():
    files = stdlib_text_files(300_000)
    assert files == stdlib_text_files(300_000)
    assert 0 < sum(f.stat().st_size for f in files) <= 300_000
