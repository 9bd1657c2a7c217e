"""Train/validation/test datasets and the per-rank iterators the training loop pulls from.

Datasets are megatron-core's: ``GPTDataset`` over indexed ``.bin/.idx`` files (blended and
split), or ``MockGPTDataset`` when no data path is given (``blend=None`` selects it in 0.16);
for ``--dataset=t5`` its T5 span-corruption dataset (data/t5_data.py); for ``--dataset=sft``
finetuning samples from JSONL files (data/sft.py).
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

from dataclasses import dataclass
from typing import Iterator, Optional

import torch

from megatron_bridge_cli.data.checks import parse_blend

__all__ = ["DataIterators", "build_datasets", "build_iterators", "split_blend", "dataset_sizes"]


def split_blend(paths: Optional[list[str]]) -> Optional[tuple[list[str], Optional[list[float]]]]:
    """``['0.3 a 0.7 b']`` or ``['0.3', 'a', '0.7', 'b']`` or ``['a', 'b']`` -> megatron-core blend
    (validated by data/checks.py before a run gets here)."""
    return parse_blend(paths)


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
    return dict(random_seed=d.random_seed, sequence_length=d.sample_length, **_blends(d),
                path_to_cache=d.path_to_cache, mmap_bin_files=d.mmap_bin_files, tokenizer=tokenizer)


def _megatron_dataset_config(cfg, tokenizer):
    from megatron.core.datasets.gpt_dataset import (
        GPTDatasetConfig as McoreGPTDatasetConfig,
    )

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
    from megatron.core.datasets.blended_megatron_dataset_builder import (
        BlendedMegatronDatasetBuilder,
    )
    from megatron.core.datasets.gpt_dataset import GPTDataset, MockGPTDataset

    from megatron_bridge_cli.config.data import FinetuningDatasetConfig, T5DatasetConfig

    if isinstance(cfg.dataset, FinetuningDatasetConfig):  # JSONL samples, not megatron-core's datasets
        from megatron_bridge_cli.data.sft import build_sft_datasets

        return build_sft_datasets(cfg, tokenizer, dataset_sizes(cfg), needs_data)
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


def _loader(dataset, consumed: int, micro_batch: int, dp_rank: int, dp_size: int, cyclic: bool, num_workers: int,
            pin_memory: bool = False):
    if dataset is None or len(dataset) == 0:
        return None
    sampler = _GlobalBatchSampler(len(dataset), consumed, micro_batch, dp_rank, dp_size, cyclic)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,  # pinned batches make the loop's non_blocking copies to the GPU asynchronous
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
    from megatron.core.datasets.blended_megatron_dataset_config import (
        parse_and_normalize_split,
    )

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
    # --dataset.pin_memory works with CUDA only: without it there is no device to pin for (torch
    # would warn on every loader and pin nothing), so it is off, as documented.
    pin = d.pin_memory and torch.cuda.is_available()
    train_ds, valid_ds, test_ds = datasets

    def per_chunk(ds, consumed, mbs, cyclic):
        return [
            _loader(ds, consumed, mbs, dp_rank, dp_size, cyclic, workers, pin) if needs else None
            for needs in chunk_needs_data
        ]

    return DataIterators(
        train=per_chunk(train_ds, consumed_train, t.micro_batch_size, cyclic=False),
        valid=per_chunk(valid_ds, consumed_valid, eval_mbs, cyclic=True),
        test=per_chunk(test_ds, 0, eval_mbs, cyclic=True),
        has_valid=t.eval_iters > 0 and _split_present(cfg, 1),
        has_test=t.eval_iters > 0 and _split_present(cfg, 2),
    )
