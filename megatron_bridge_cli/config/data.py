"""Where training samples come from: megatron-core GPT datasets (indexed .bin/.idx or mock)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

__all__ = ["GPTDatasetConfig", "MockGPTDatasetConfig", "DATASET_KINDS"]


@dataclass
class GPTDatasetConfig:
    """megatron-core GPTDataset over preprocessed indexed files, blended and split.

    With no data_path (and no per-split paths) megatron-core's mock dataset is used: random
    token sequences that need no files, for smoke tests and benchmarks.
    """

    data_path: Optional[list[str]] = None
    """Indexed dataset prefixes (path/to/corpus_text_document, without .bin/.idx), optionally
    weighted: '0.3 a_text_document 0.7 b_text_document'. Split by `split`."""

    split: str = "969,30,1"
    """Train,validation,test proportions of data_path."""

    train_data_path: Optional[list[str]] = None
    """Training-only prefixes (optionally weighted); use instead of data_path+split."""

    valid_data_path: Optional[list[str]] = None
    """Validation-only prefixes (optionally weighted)."""

    test_data_path: Optional[list[str]] = None
    """Test-only prefixes (optionally weighted)."""

    seq_length: Optional[int] = None
    """Tokens per sample. None uses model.seq_length; if set it must equal it."""

    random_seed: int = 1234
    """Seed of the sample shuffling (independent of rng.seed)."""

    reset_position_ids: bool = False
    """Restart position ids after each end-of-document token."""

    reset_attention_mask: bool = False
    """Block attention across end-of-document tokens."""

    eod_mask_loss: bool = False
    """Do not train on predicting the token after end-of-document."""

    create_attention_mask: bool = True
    """Materialize the causal attention mask in each batch (local attention needs it)."""

    mmap_bin_files: bool = True
    """Memory-map the .bin files instead of reading them."""

    path_to_cache: Optional[str] = None
    """Folder for megatron-core's sample index cache. None puts it next to the data."""

    num_workers: int = 2
    """DataLoader worker processes per rank."""

    pin_memory: bool = True
    """Pin host memory of batches (ignored on CPU)."""

    sequence_length: Optional[int] = field(default=None, init=False, repr=False)
    """Derived: seq_length, or model.seq_length."""

    def uses_mock_data(self) -> bool:
        """True when no data files are named, so megatron-core's mock dataset is used."""
        return not (self.data_path or self.train_data_path or self.valid_data_path or self.test_data_path)


@dataclass
class MockGPTDatasetConfig(GPTDatasetConfig):
    """megatron-core's mock GPT data: random tokens, no files. Data paths are ignored."""

    def uses_mock_data(self) -> bool:
        return True


DATASET_KINDS = {"gpt": GPTDatasetConfig, "mock": MockGPTDatasetConfig}
"""Names that select a dataset kind, e.g. ``--dataset=mock``."""
