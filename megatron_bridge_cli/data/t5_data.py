"""T5 span-corruption datasets: megatron-core's ``T5MaskedWordPieceDataset``, and mock data for it.

What megatron-core 0.16 needs (probed):

* ``T5MaskedWordPieceDatasetConfig``: the encoder length (``sequence_length``), the decoder
  length and the masking settings; ``__post_init__`` asserts the tokenizer has sentinels
  (``additional_special_tokens_ids``), see data/sentinels.py for the rest it reads.
* Samples are packed from whole *sentences* (the sequences of the indexed file) of one document
  by the C++ ``helpers.build_mapping``. It skips every document that has more than one sentence
  and a sentence longer than 512 tokens, and a document of one sentence gives one sample per
  epoch (its beginning): preprocess with ``--split-sentences``.
* Its sample index is cached next to the data (or in ``path_to_cache``), written by rank 0 and
  read by the others; building it calls ``torch.distributed.get_rank()``, so it needs a
  process group.
* megatron-core has no mock T5 dataset (only ``MockGPTDataset``). :class:`MockT5Dataset` is
  the T5 dataset itself over generated documents, in the style of ``MockGPTLowLevelDataset``:
  sentences of consecutive ids (learnable, so a loss falls), no files, no cache.
"""

from __future__ import annotations

from typing import Optional

import numpy
from megatron.core.datasets.t5_dataset import T5MaskedWordPieceDataset, T5MaskedWordPieceDatasetConfig

__all__ = ["t5_dataset_config", "t5_dataset_class", "usable_documents", "MockT5Dataset", "MockT5LowLevelDataset"]


def t5_dataset_config(cfg, source: dict) -> T5MaskedWordPieceDatasetConfig:
    """megatron-core's config from the finalized ``cfg.dataset`` (a T5DatasetConfig); ``source``
    holds what every dataset config takes (seed, length, blends, cache, tokenizer)."""
    d = cfg.dataset
    return T5MaskedWordPieceDatasetConfig(
        **source,
        sequence_length_decoder=d.decoder_sample_length,
        masking_probability=d.masking_probability,
        short_sequence_probability=d.short_sequence_probability,
        masking_max_ngram=d.masking_max_ngram,
        masking_do_full_word=d.masking_do_full_word,
        masking_do_permutation=False,  # a BERT objective; T5 (and Megatron-LM's pretrain_t5) never permutes
        masking_use_longer_ngrams=d.masking_use_longer_ngrams,
        masking_use_geometric_distribution=d.masking_use_geometric_distribution,
    )


def t5_dataset_class(config: T5MaskedWordPieceDatasetConfig) -> type:
    return MockT5Dataset if config.mock else T5MaskedWordPieceDataset


class MockT5LowLevelDataset:
    """Generated documents in the shape of an IndexedDataset with one sequence per sentence.

    Each sentence counts up from a random id (``start, start+1, ...`` modulo the ids below the
    end-of-document id); the last sentence of a document ends with end-of-document. A masked
    span can be inferred from its neighbours, as in MockGPTLowLevelDataset's sequences.
    """

    seed: int = 0
    num_documents: int = 20_000
    sentences_per_document: tuple[int, int] = (4, 16)
    sentence_length: tuple[int, int] = (8, 64)

    def __init__(self, tokenizer):
        rng = numpy.random.default_rng(self.seed)
        self.eod = int(tokenizer.eod)
        self.ids = self.eod if self.eod > 0 else tokenizer.vocab_size  # ids below eod are plain tokens
        per_doc = rng.integers(*self.sentences_per_document, size=self.num_documents, endpoint=True)
        self.document_indices = numpy.concatenate([[0], numpy.cumsum(per_doc)]).astype(numpy.int64)
        n = int(self.document_indices[-1])
        self.sequence_lengths = rng.integers(*self.sentence_length, size=n, endpoint=True).astype(numpy.int32)
        self.starts = rng.integers(0, self.ids, size=n)
        self.last_of_document = numpy.zeros(n, dtype=bool)
        self.last_of_document[self.document_indices[1:] - 1] = True

    def __len__(self) -> int:
        return len(self.sequence_lengths)

    def __getitem__(self, i: int) -> numpy.ndarray:
        length = int(self.sequence_lengths[i])
        ids = (self.starts[i] + numpy.arange(length)) % self.ids
        if self.last_of_document[i]:
            ids[-1] = self.eod
        return ids.astype(numpy.int64)


class MockT5Dataset(T5MaskedWordPieceDataset):
    """megatron-core's T5 dataset over :class:`MockT5LowLevelDataset` (``blend=None``)."""

    def __init__(self, dataset, dataset_path: Optional[str], indexed_indices, num_samples, index_split, config):
        assert config.mock
        super().__init__(dataset, dataset_path, indexed_indices, num_samples, index_split, config)

    @staticmethod
    def build_low_level_dataset(dataset_path: Optional[str], config) -> MockT5LowLevelDataset:
        return MockT5LowLevelDataset(config.tokenizer)

    @staticmethod
    def numel_low_level_dataset(low_level_dataset: MockT5LowLevelDataset) -> int:
        return len(low_level_dataset.document_indices) - 1

    def _build_sample_index(self, sequence_length: int, min_sentences_per_sample: int) -> numpy.ndarray:
        """The same C++ mapping as the real dataset, built in memory on every rank: mock data
        has no folder to cache it in."""
        from megatron.core.datasets import helpers

        indices = numpy.append(self.indices, self.indices[-1] + 1)
        return helpers.build_mapping(
            self.dataset.document_indices[indices],
            self.dataset.sequence_lengths,
            numpy.iinfo(numpy.int32).max - 1 if self.num_samples is not None else 1,
            self.num_samples,
            sequence_length,
            self.config.short_sequence_probability,
            self.config.random_seed,
            False,
            min_sentences_per_sample,
        )


LONG_SENTENCE_LEN = 512
"""megatron-core's helpers.cpp skips documents of several sentences with one longer than this."""


def usable_documents(indexed) -> numpy.ndarray:
    """Which documents of an IndexedDataset megatron-core's T5 sample mapping can use: one
    sentence of any length, or several of at most LONG_SENTENCE_LEN tokens each (a split with
    none of them makes ``helpers.build_mapping`` loop through 2**31 empty epochs)."""
    bounds = numpy.asarray(indexed.document_indices, dtype=numpy.int64)
    sentences = numpy.diff(bounds)
    long = numpy.concatenate([[0], numpy.cumsum(numpy.asarray(indexed.sequence_lengths) > LONG_SENTENCE_LEN)])
    has_long = (long[bounds[1:]] - long[bounds[:-1]]) > 0
    return (sentences == 1) | ((sentences > 1) & ~has_long)
