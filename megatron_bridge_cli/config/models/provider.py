"""What every model provider shares: deferred megatron-core validation and vocab padding.

A provider is a megatron-core ``TransformerConfig`` (so every transformer knob is a field and
gets a flag) plus the few model-level settings the config lacks, and ``provide()`` builds the
megatron-core model from it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Literal, Optional

from megatron.core.transformer.transformer_config import TransformerConfig

from megatron_bridge_cli.config.strict import StrictFields, relax

__all__ = ["DeferredPostInit", "ModelProviderBase", "transformer_engine_available"]


def transformer_engine_available() -> bool:
    """True when Transformer Engine is importable (checked without importing it)."""
    return importlib.util.find_spec("transformer_engine") is not None


HEAD_DIM = 128
"""Channels per attention head assumed when num_attention_heads is left at 0."""


class DeferredPostInit:
    """Mixin that postpones a megatron-core dataclass's ``__post_init__`` to ``finalize()``.

    megatron-core derives values (``ffn_hidden_size``, ``kv_channels``, init methods, ...) and
    raises on inconsistent settings in ``__post_init__``. Running that at construction would
    freeze derived values before recipes, YAML files and flags have been applied, so
    ``cfg.model.hidden_size = 4096`` after creation would leave a stale ``ffn_hidden_size``.
    Here construction does nothing; ``finalize()`` runs megatron-core's original checks.
    """

    def __post_init__(self) -> None:
        """Deliberately empty: see the class docstring."""

    def finalize(self) -> None:
        """Run the wrapped megatron-core class's ``__post_init__`` (derivations and checks).
        megatron-core sets attributes of its own there, so the object is relaxed first."""
        relax(self)
        super().__post_init__()  # type: ignore[misc]


@dataclass
class ModelProviderBase(StrictFields, DeferredPostInit, TransformerConfig):
    """Fields every model family adds to megatron-core's TransformerConfig."""

    num_attention_heads: int = 0
    """Attention heads. 0 derives hidden_size // 128 at finalize (heads of 128 channels, as
    Llama and GPT-3 175B have)."""

    seq_length: int = 1024
    """Maximum sequence length the model is trained on (tokens per sample)."""

    vocab_size: Optional[int] = None
    """Vocabulary size before padding. None takes the tokenizer's vocabulary size."""

    make_vocab_size_divisible_by: int = 128
    """Pad the vocabulary to a multiple of this times the tensor-parallel size, for GEMM efficiency."""

    should_pad_vocab: bool = True
    """Pad the vocabulary as described by make_vocab_size_divisible_by. False keeps vocab_size as is
    (needed to load released checkpoints whose embedding tables are not padded)."""

    layer_spec: Literal["auto", "transformer_engine", "local"] = "auto"
    """Layer implementation: 'transformer_engine' (fused TE kernels, needs a GPU and the te extra),
    'local' (plain megatron-core modules, runs anywhere), or 'auto' (TE when it imports, else local)."""

    padded_vocab_size: Optional[int] = field(default=None, init=False, repr=False)
    """Derived by finalize(): the embedding table's row count after padding."""

    _finalized = False  # class attribute, not a field: set per instance by finalize()

    def finalize(self) -> None:
        if self.num_attention_heads == 0 and self.hidden_size > 0:
            if self.hidden_size % HEAD_DIM:
                raise ValueError(f"model.num_attention_heads is not set and cannot be derived: hidden_size "
                                 f"{self.hidden_size} is not a multiple of {HEAD_DIM}; set --model.num_attention_heads")
            self.num_attention_heads = self.hidden_size // HEAD_DIM
        super().finalize()
        self._finalized = True
        if self.vocab_size is not None:
            self.padded_vocab_size = self.compute_padded_vocab_size(self.vocab_size)

    def compute_padded_vocab_size(self, vocab_size: int) -> int:
        """Round ``vocab_size`` up to a multiple of make_vocab_size_divisible_by x TP."""
        if not self.should_pad_vocab:
            return vocab_size
        multiple = self.make_vocab_size_divisible_by * self.tensor_model_parallel_size
        return -(-vocab_size // multiple) * multiple

    def resolved_vocab_size(self) -> int:
        """The vocabulary size the embedding is built with (padded when finalized)."""
        if self.padded_vocab_size is not None:
            return self.padded_vocab_size
        if self.vocab_size is None:
            raise ValueError("model.vocab_size is not set and no tokenizer has provided one")
        return self.compute_padded_vocab_size(self.vocab_size)

    def use_transformer_engine(self) -> bool:
        """Whether provide() uses the Transformer Engine layer spec."""
        if self.layer_spec == "auto":
            return transformer_engine_available()
        return self.layer_spec == "transformer_engine"

    def ensure_finalized(self) -> None:
        """Finalize on first use so a provider works standalone (model independence), and
        outside a training job give it a one-rank runtime to be built in."""
        if not self._finalized:
            self.finalize()
        from megatron_bridge_cli.training.standalone import ensure_single_rank_runtime

        ensure_single_rank_runtime(self)
