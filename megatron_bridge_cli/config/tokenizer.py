"""Which tokenizer turns text into ids (and tells the model its vocabulary size)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

__all__ = ["TokenizerConfig"]


@dataclass
class TokenizerConfig:
    """Tokenizer kind and the files it loads."""

    tokenizer_type: Literal["NullTokenizer", "ByteLevelTokenizer", "HuggingFaceTokenizer"] = "NullTokenizer"
    """NullTokenizer: ids are given (mock or preprocessed data), vocab_size ids + end-of-document;
    ByteLevelTokenizer: UTF-8 bytes (256 ids + end-of-document), needs no files;
    HuggingFaceTokenizer: loads tokenizer_model with `transformers` (GPT-2 BPE, SentencePiece, ...)."""

    vocab_size: Optional[int] = None
    """Ids of NullTokenizer before its end-of-document id (so the vocabulary is vocab_size + 1)."""

    tokenizer_model: Optional[str] = None
    """HuggingFace tokenizer folder (or cached model name) for HuggingFaceTokenizer."""

    trust_remote_code: bool = False
    """Let HuggingFace tokenizers run code from the model repository."""

    vocab_extra_ids: int = 0
    """Sentinel tokens (<extra_id_0>, ...) that T5 span corruption puts in place of masked spans
    (Megatron-LM's --vocab-extra-ids; T5 has 100). When > 0 they are appended after the
    vocabulary together with a decoder start and a mask token (vocab_extra_ids + 2 ids); a
    HuggingFace tokenizer with sentinels of its own (t5-base) uses those instead."""

    def added_tokens(self) -> int:
        """Ids appended after NullTokenizer's or ByteLevelTokenizer's vocabulary for T5."""
        return self.vocab_extra_ids + 2 if self.vocab_extra_ids > 0 else 0
