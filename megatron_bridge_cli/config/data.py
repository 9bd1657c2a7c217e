"""Where training samples come from: megatron-core datasets over indexed .bin/.idx files (or mock).

Three kinds share the file and split settings (:class:`DatasetConfigBase`): GPT's causal-LM
samples (``--dataset=gpt``, ``--dataset=mock``), T5's span-corruption samples
(``--dataset=t5``) for encoder-decoder models, and supervised finetuning samples from JSONL
files (``--dataset=sft``).
"""

from __future__ import annotations

from dataclasses import InitVar, dataclass, field
from typing import Literal, Optional

from megatron_bridge_cli.config.strict import StrictFields
from megatron_bridge_cli.errors import ConfigError

__all__ = ["DatasetConfigBase", "GPTDatasetConfig", "MockGPTDatasetConfig", "T5DatasetConfig",
           "FinetuningDatasetConfig", "DATASET_KINDS"]


@dataclass
class DatasetConfigBase(StrictFields):
    """Indexed dataset files, blended and split, and how they are loaded.

    With no data_path (and no per-split paths) mock data is used: generated token sequences
    that need no files, for smoke tests and benchmarks.
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
    """Tokens per sample (T5: encoder input tokens). None uses the model's (model.seq_length;
    T5: model.encoder_seq_length); if set it must equal it."""

    random_seed: int = 1234
    """Seed of the sample shuffling (independent of rng.seed)."""

    mmap_bin_files: bool = True
    """Memory-map the .bin files instead of reading them."""

    path_to_cache: Optional[str] = None
    """Folder for megatron-core's sample index cache. None puts it next to the data."""

    num_workers: int = 2
    """DataLoader worker processes per rank."""

    pin_memory: bool = True
    """Pin host memory of batches (ignored on CPU)."""

    sequence_length: InitVar[Optional[int]] = None
    """megatron-core's name for seq_length, accepted as a keyword (``GPTDatasetConfig(
    sequence_length=2048)``); seq_length is the one name in YAML and flags."""

    sample_length: Optional[int] = field(default=None, init=False, repr=False)
    """Derived: seq_length, or the model's input length."""

    def __post_init__(self, sequence_length: Optional[int]) -> None:
        if sequence_length is None:
            return
        if self.seq_length is not None and self.seq_length != sequence_length:
            raise ConfigError(f"{type(self).__name__}: seq_length={self.seq_length} and sequence_length="
                              f"{sequence_length} name the same setting; give one")
        self.seq_length = sequence_length

    def uses_mock_data(self) -> bool:
        """True when no data files are named, so mock data is used."""
        return not (self.data_path or self.train_data_path or self.valid_data_path or self.test_data_path)

    def derive_lengths(self, model) -> None:
        """Set the derived sample lengths from this section and the model (finalize calls it)."""
        self.sample_length = self.seq_length or model.seq_length


@dataclass
class GPTDatasetConfig(DatasetConfigBase):
    """megatron-core GPTDataset (causal LM samples) over preprocessed indexed files, or
    megatron-core's MockGPTDataset when no data path is given."""

    reset_position_ids: bool = False
    """Restart position ids after each end-of-document token."""

    reset_attention_mask: bool = False
    """Block attention across end-of-document tokens."""

    eod_mask_loss: bool = False
    """Do not train on predicting the token after end-of-document."""

    create_attention_mask: bool = True
    """Materialize the causal attention mask in each batch (local attention needs it)."""


@dataclass
class MockGPTDatasetConfig(GPTDatasetConfig):
    """megatron-core's mock GPT data: random tokens, no files. Data paths are ignored."""

    def uses_mock_data(self) -> bool:
        return True


@dataclass
class T5DatasetConfig(DatasetConfigBase):
    """megatron-core's T5 span-corruption dataset (T5MaskedWordPieceDataset) for encoder-decoder
    models: about masking_probability of each sample's tokens, in spans, are cut out of the
    encoder input and replaced by one sentinel token per span; the decoder predicts
    ``<sentinel_0> span_0 <sentinel_1> span_1 ... <eos>``.

    Samples are packed from whole sentences (the sequences of the indexed file) of one
    document; preprocess with ``scripts/preprocess_data.py --split-sentences``. With no data
    path, generated sentences are used (bridge-train's mock T5 data). The tokenizer must provide
    the sentinels (``--tokenizer.vocab_extra_ids``).
    """

    decoder_seq_length: Optional[int] = None
    """Decoder tokens per sample: start token + one sentinel per span + the masked tokens
    (at most 1 + 2 x masking_probability x (encoder length - 2)). None uses model.seq_length;
    if set it must equal it."""

    masking_probability: float = 0.15
    """Fraction of each sample's tokens that are masked (T5: 0.15)."""

    short_sequence_probability: float = 0.1
    """Probability that a sample is shorter than the encoder length (a random target length)."""

    masking_max_ngram: int = 10
    """Longest masked span, in words (WordPiece tokenizers) or tokens."""

    masking_do_full_word: bool = True
    """Mask whole words: WordPiece continuation pieces ('##...') follow their word's first piece."""

    masking_use_longer_ngrams: bool = False
    """Favour longer spans (probabilities proportional to n instead of 1/n)."""

    masking_use_geometric_distribution: bool = True
    """Draw span lengths from a geometric distribution (p=0.2, SpanBERT), clipped at
    masking_max_ngram, as Megatron-LM's pretrain_t5.py does."""

    decoder_sample_length: Optional[int] = field(default=None, init=False, repr=False)
    """Derived: decoder_seq_length, or model.seq_length."""

    def derive_lengths(self, model) -> None:
        """Encoder length: seq_length or model.encoder_seq_length (or model.seq_length);
        decoder length: decoder_seq_length or model.seq_length."""
        self.sample_length = self.seq_length or getattr(model, "encoder_seq_length", None) or model.seq_length
        self.decoder_sample_length = self.decoder_seq_length or model.seq_length


@dataclass
class FinetuningDatasetConfig(DatasetConfigBase):
    """Supervised finetuning (SFT) samples from JSONL files (data/sft.py), one sample a line:
    ``{"prompt": ..., "response": ...}`` (the keys are configurable; the texts are joined as they
    are, so the prompt carries its own separator), or a chat ``{"messages": [{"role": ...,
    "content": ...}, ...]}`` rendered with the tokenizer's chat template (HuggingFace tokenizers
    that have one) or bridge-train's default template: ``<|ROLE|>\\nCONTENT\\n`` per message.
    The loss covers only the response (the assistant turns) and the end-of-document token that
    closes each sample; a sample longer than seq_length + 1 tokens is cut at the end.

    Samples are padded to seq_length one per row, or packed several to a row
    (--dataset.packed), attending only within their own sample, with position ids restarting
    at each. Runs longer than the data cycle epochs, reshuffled each epoch (seeded by
    random_seed and the epoch); validation and test rows are read in file order.
    """

    data_path: Optional[list[str]] = None
    """JSONL files, read one after another and divided by `split` (contiguous, in file order)."""

    train_data_path: Optional[list[str]] = None
    """Training-only JSONL files; use instead of data_path+split."""

    valid_data_path: Optional[list[str]] = None
    """Validation-only JSONL files."""

    test_data_path: Optional[list[str]] = None
    """Test-only JSONL files."""

    mmap_bin_files: bool = True
    """Not used by --dataset=sft (JSONL files are read whole)."""

    path_to_cache: Optional[str] = None
    """Not used by --dataset=sft (it keeps no sample index on disk)."""

    prompt_key: str = "prompt"
    """Key of the prompt text in a prompt/response line (no loss on it)."""

    response_key: str = "response"
    """Key of the response text in a prompt/response line (trained on)."""

    messages_key: str = "messages"
    """Key of a chat's message list (objects with 'role' and 'content'); a line holding it is a
    chat, trained on its 'assistant' messages."""

    packed: bool = False
    """Pack several samples into each seq_length row (fewer pad tokens, block-diagonal causal
    attention mask); needs the local layer spec (--model.layer_spec=local on a GPU) and every
    pipeline stage reading data (pipeline size 1, or 2 without virtual stages)."""

    dataloader_type: Literal["single", "batch"] = "single"
    """How rows are padded. 'single': every row to seq_length. 'batch': each micro-batch only
    to its longest sample, rounded up to a multiple of 8 (at most seq_length): fewer pad tokens,
    the same per-token loss. 'batch' needs pipeline size 1 (the pipeline's activation shapes
    are fixed) and padded rows (--no-dataset.packed)."""

    num_epochs: Optional[int] = None
    """Train for this many passes over the training split: sets --train.train_iters to
    ceil(num_epochs x training rows / global_batch_size), replacing train_iters/train_samples
    (a row is a sample, or a pack of them with --dataset.packed; the pre-flight reads the files
    to count them). None: the run length is train_iters or train_samples."""

    def uses_mock_data(self) -> bool:
        return False  # SFT needs its files: the data pre-flight says so when none are named


DATASET_KINDS = {"gpt": GPTDatasetConfig, "mock": MockGPTDatasetConfig, "t5": T5DatasetConfig,
                 "sft": FinetuningDatasetConfig}
"""Names that select a dataset kind, e.g. ``--dataset=mock`` or ``--dataset=t5``."""
