"""Train/validation/test datasets and the per-rank iterators the training loop pulls from.

Datasets are megatron-core's: ``GPTDataset`` over indexed ``.bin/.idx`` files (blended and
split), or ``MockGPTDataset`` when no data path is given (``blend=None`` selects it in 0.16);
for ``--dataset=t5`` its T5 span-corruption dataset (data/t5_data.py).
Sizes follow Megatron-LM: the training split holds exactly ``total_iters x global_batch_size``
samples; validation ``(total_iters // eval_interval + 1) x eval_iters x eval_global_batch`` and
test ``eval_iters x eval_global_batch``.

Sampling follows Megatron-LM's ``MegatronPretrainingSampler``: global sample ``i`` of step
``k`` is ``k x global_batch + i``; each micro-batch step takes ``micro_batch x DP`` consecutive
samples and data-parallel rank ``r`` gets the ``r``-th slice. The position is just the count of
consumed samples, so resuming from a checkpoint continues with exactly the next sample, and any
DP size sees the same global batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, Optional

import torch

from megatron_bridge_cli.errors import ConfigError

__all__ = ["DataIterators", "build_datasets", "build_iterators", "check_data_paths", "split_blend", "dataset_sizes"]


def split_blend(paths: Optional[list[str]]) -> Optional[tuple[list[str], Optional[list[float]]]]:
    """``['0.3 a 0.7 b']`` or ``['0.3', 'a', '0.7', 'b']`` or ``['a', 'b']`` -> megatron-core blend."""
    if not paths:
        return None
    from megatron.core.datasets.utils import get_blend_from_list

    tokens = [t for p in paths for t in str(p).split()]
    return get_blend_from_list(tokens)


def check_data_paths(cfg) -> None:
    """Raise ConfigError naming the flag when an indexed dataset prefix lacks its files."""
    d = cfg.dataset
    if d.uses_mock_data():
        return
    missing = []
    for flag in ("data_path", "train_data_path", "valid_data_path", "test_data_path"):
        blend = split_blend(getattr(d, flag))
        for prefix in blend[0] if blend else []:
            for ext in (".bin", ".idx"):
                if not os.path.isfile(prefix + ext):
                    missing.append(f"--dataset.{flag}: {prefix + ext} does not exist")
    if missing:
        raise ConfigError(
            "; ".join(missing)
            + " (a prefix names PREFIX.bin and PREFIX.idx; build them with scripts/preprocess_data.py)"
        )
    _check_split_not_empty(cfg)


def _check_split_not_empty(cfg) -> None:
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
    blend = split_blend(d.data_path)
    ranges = []  # (flag, prefix, split index or None for the whole file, (lo, hi))
    if blend:
        weights = parse_and_normalize_split(d.split)
        acc = 0.0
        for i, w in enumerate(weights[:3]):
            ranges += [("data_path", prefix, i, (acc, acc + w)) for prefix in blend[0] if needed[i] and w > 0]
            acc += w
    elif t5:
        for i, flag in enumerate(("train_data_path", "valid_data_path", "test_data_path")):
            per = split_blend(getattr(d, flag))
            ranges += [(flag, prefix, None, (0.0, 1.0)) for prefix in (per[0] if per and needed[i] else [])]
    for flag, prefix, i, (lo, hi) in ranges:
        indexed = IndexedDataset(prefix, mmap=True)
        docs = len(indexed.document_indices) - 1
        first, last = int(round(lo * docs)), int(round(hi * docs))
        usable = int(usable_documents(indexed)[first:last].sum()) if t5 else last - first
        if usable >= 1:
            continue
        if i is None:
            raise ConfigError(f"--dataset.{flag}: {prefix} ({docs} documents) has no {what}; "
                              "preprocess it with scripts/preprocess_data.py --split-sentences")
        raise ConfigError(
            f"--dataset.split={d.split!r} leaves the {names[i]} split of {prefix} ({docs} documents) "
            f"without a {what}; give it a larger share (e.g. --dataset.split=90,5,5) or more documents"
        )


def dataset_sizes(cfg) -> list[int]:
    """Samples needed per split (train, valid, test), as Megatron-LM computes them."""
    t = cfg.train
    eval_gbs = t.eval_global_batch_size or t.global_batch_size
    train = t.total_iters * t.global_batch_size
    if t.eval_iters <= 0:
        return [train, 0, 0]
    evals = (t.total_iters // t.eval_interval + 1) if t.eval_interval else 1
    return [train, (evals + 1) * t.eval_iters * eval_gbs, t.eval_iters * eval_gbs]


def _blends(d) -> dict:
    """blend / blend_per_split / split as megatron-core takes them (both blends None: mock data)."""
    per_split = None
    if d.train_data_path or d.valid_data_path or d.test_data_path:
        per_split = [split_blend(d.train_data_path), split_blend(d.valid_data_path), split_blend(d.test_data_path)]
    mock = d.uses_mock_data()
    return dict(
        blend=None if mock else split_blend(d.data_path),
        blend_per_split=None if mock else per_split,
        split=d.split if (mock or per_split is None) else None,
    )


def _source_kwargs(d, tokenizer) -> dict:
    """What every megatron-core dataset config takes from the dataset section: seed, length,
    where the data is (or mock), the index cache, and the tokenizer."""
    return dict(random_seed=d.random_seed, sequence_length=d.sequence_length, **_blends(d),
                path_to_cache=d.path_to_cache, mmap_bin_files=d.mmap_bin_files, tokenizer=tokenizer)


def _megatron_dataset_config(cfg, tokenizer):
    from megatron.core.datasets.gpt_dataset import GPTDatasetConfig as McoreGPTDatasetConfig

    d = cfg.dataset
    return McoreGPTDatasetConfig(
        **_source_kwargs(d, tokenizer),
        reset_position_ids=d.reset_position_ids,
        reset_attention_mask=d.reset_attention_mask,
        eod_mask_loss=d.eod_mask_loss,
        create_attention_mask=d.create_attention_mask,
    )


def build_datasets(cfg, tokenizer, needs_data: bool):
    """[train, valid, test] megatron-core datasets (None where a split is empty or this rank
    needs no data). Collective: every rank must call it (the builder synchronizes ranks)."""
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, MockGPTDataset

    from megatron_bridge_cli.config.data import T5DatasetConfig

    if isinstance(cfg.dataset, T5DatasetConfig):
        from megatron_bridge_cli.data.t5_data import t5_dataset_class, t5_dataset_config
        from megatron_bridge_cli.data.tokenizers import with_sentinels

        tokenizer = with_sentinels(tokenizer, cfg.tokenizer, cfg.model.vocab_size)
        config = t5_dataset_config(cfg, _source_kwargs(cfg.dataset, tokenizer))
        cls = t5_dataset_class(config)
    else:
        config = _megatron_dataset_config(cfg, tokenizer)
        cls = MockGPTDataset if config.mock else GPTDataset
    sizes = dataset_sizes(cfg)
    return BlendedMegatronDatasetBuilder(cls, sizes, lambda: needs_data, config).build()


class _GlobalBatchSampler:
    """Index lists of this rank's micro-batches, starting after ``consumed`` samples.

    ``cyclic`` wraps around the dataset (evaluation keeps drawing batches however many times it
    runs); the training split is sized for the whole run and is never wrapped.
    """

    def __init__(self, total: int, consumed: int, micro_batch: int, dp_rank: int, dp_size: int, cyclic: bool):
        self.total, self.consumed, self.cyclic = total, consumed, cyclic
        self.micro_batch, self.dp_rank, self.dp_size = micro_batch, dp_rank, dp_size

    def __iter__(self) -> Iterator[list[int]]:
        step = self.micro_batch * self.dp_size
        start = self.consumed
        while self.cyclic or start + step <= self.total:
            first = start + self.dp_rank * self.micro_batch
            yield [(first + i) % self.total for i in range(self.micro_batch)]
            start += step


def _loader(dataset, consumed: int, micro_batch: int, dp_rank: int, dp_size: int, cyclic: bool, num_workers: int):
    if dataset is None or len(dataset) == 0:
        return None
    sampler = _GlobalBatchSampler(len(dataset), consumed, micro_batch, dp_rank, dp_size, cyclic)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        pin_memory=False,  # batches are moved with non_blocking copies only on GPU
        persistent_workers=False,
        # Its own generator: creating an iterator draws a worker seed, which must not move the
        # global RNG (a resumed run creates its iterators at a different point).
        generator=torch.Generator().manual_seed(0),
    )
    return iter(loader)


@dataclass
class DataIterators:
    """Per-model-chunk iterators (a list with one entry per virtual pipeline stage; None where
    a chunk needs no data)."""

    train: list
    valid: list
    test: list
    has_valid: bool = True
    """Every rank agrees whether a validation split exists (evaluation is collective)."""
    has_test: bool = True


def _split_present(cfg, index: int) -> bool:
    d = cfg.dataset
    if d.train_data_path or d.valid_data_path or d.test_data_path:
        return bool([d.train_data_path, d.valid_data_path, d.test_data_path][index])
    from megatron.core.datasets.blended_megatron_dataset_config import parse_and_normalize_split

    weights = parse_and_normalize_split(d.split)
    return index < len(weights) and weights[index] > 0


def build_iterators(cfg, datasets, chunk_needs_data: list[bool], consumed_train: int, consumed_valid: int,
                    dp_rank: int, dp_size: int) -> DataIterators:
    """Iterators for each model chunk of this rank.

    Each chunk that reads data gets its own iterator over the same sample sequence (as
    Megatron-LM does for the interleaved schedule): chunk 0 of the first stage reads tokens,
    the last chunk of the last stage reads labels, and both must see the same micro-batch.
    """
    t, d = cfg.train, cfg.dataset
    eval_mbs = t.eval_micro_batch_size or t.micro_batch_size
    workers = d.num_workers
    train_ds, valid_ds, test_ds = datasets

    def per_chunk(ds, consumed, mbs, cyclic):
        return [
            _loader(ds, consumed, mbs, dp_rank, dp_size, cyclic, workers) if needs else None
            for needs in chunk_needs_data
        ]

    return DataIterators(
        train=per_chunk(train_ds, consumed_train, t.micro_batch_size, cyclic=False),
        valid=per_chunk(valid_ds, consumed_valid, eval_mbs, cyclic=True),
        test=per_chunk(test_ds, 0, eval_mbs, cyclic=True),
        has_valid=t.eval_iters > 0 and _split_present(cfg, 1),
        has_test=t.eval_iters > 0 and _split_present(cfg, 2),
    )
