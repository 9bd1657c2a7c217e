"""Which tokenizer turns text into ids (and tells the model its vocabulary size)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

__all__ = ["TokenizerConfig"]


@dataclass
class TokenizerConfig:
    """Tokenizer kind and the files it loads."""

    tokenizer_type: Literal[
        "NullTokenizer", "ByteLevelTokenizer", "HuggingFaceTokenizer", "GPT2BPETokenizer",
        "SentencePieceTokenizer",
    ] = "NullTokenizer"
    """NullTokenizer: ids are given (mock or preprocessed data); ByteLevelTokenizer: UTF-8 bytes
    (256 ids + end-of-document), needs no files; the others load tokenizer_model or vocab files."""

    vocab_size: Optional[int] = None
    """Vocabulary size of NullTokenizer (the model's vocab_size is used when None)."""

    tokenizer_model: Optional[str] = None
    """HuggingFace model name or folder, or SentencePiece .model file."""

    vocab_file: Optional[str] = None
    """Vocabulary file (GPT2BPETokenizer)."""

    merge_file: Optional[str] = None
    """BPE merges file (GPT2BPETokenizer)."""

    trust_remote_code: bool = False
    """Let HuggingFace tokenizers run code from the model repository."""
