"""Fixtures shared by the training integration tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def stdlib_data(tmp_path_factory):
    """A small real-text indexed dataset (Python stdlib sources, byte-level): its prefix."""
    from megatron_bridge_cli.data.preprocess import iter_documents, stdlib_text_files, write_indexed_dataset
    from megatron_bridge_cli.data.tokenizers import ByteLevelTokenizer

    prefix = tmp_path_factory.mktemp("data") / "stdlib"
    files = stdlib_text_files(400_000)
    write_indexed_dataset(iter_documents(files), ByteLevelTokenizer(), prefix)
    return str(prefix)


@pytest.fixture(scope="session")
def stdlib_sentences(tmp_path_factory):
    """The same text split into sentences (lines), as T5's span-corruption dataset reads it."""
    from megatron_bridge_cli.data.preprocess import iter_documents, stdlib_text_files, write_indexed_dataset
    from megatron_bridge_cli.data.tokenizers import ByteLevelTokenizer

    prefix = tmp_path_factory.mktemp("data") / "stdlib_sentences"
    files = stdlib_text_files(400_000)
    write_indexed_dataset(iter_documents(files), ByteLevelTokenizer(), prefix, sentences=True)
    return str(prefix)
