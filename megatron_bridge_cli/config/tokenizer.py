"""Which tokenizer turns text into ids (and tells the model its vocabulary size)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from megatron_bridge_cli.config.strict import StrictFields

__all__ = ["TokenizerConfig"]


@dataclass
class TokenizerConfig(StrictFields):
    """Tokenizer kind and the files it loads."""

    tokenizer_type: Literal["NullTokenizer", "ByteLevelTokenizer", "HuggingFaceTokenizer", "SentencePieceTokenizer",
                            "GPT2BPETokenizer", "TikTokenizer"] = "NullTokenizer"
    """NullTokenizer: ids are given (mock or preprocessed data), vocab_size ids + end-of-document;
    ByteLevelTokenizer: UTF-8 bytes (256 ids + end-of-document), needs no files;
    HuggingFaceTokenizer: loads tokenizer_model with `transformers` (GPT-2 BPE, SentencePiece, ...);
    SentencePieceTokenizer: a SentencePiece .model file (tokenizer_model);
    GPT2BPETokenizer: GPT-2 byte-level BPE from vocab_file (vocab.json) and merge_file (merges.txt);
    TikTokenizer: a tiktoken BPE ranks file (tokenizer_model, e.g. cl100k_base.tiktoken) split by
    tiktoken_pattern. The last three read local files only (`pip install '.[tokenizers]'`)."""

    vocab_size: Optional[int] = None
    """Ids of NullTokenizer before its end-of-document id (so the vocabulary is vocab_size + 1)."""

    tokenizer_model: Optional[str] = None
    """HuggingFaceTokenizer: tokenizer folder (or cached model name); SentencePieceTokenizer: the
    .model file; TikTokenizer: the .tiktoken ranks file (a local path: encodings are never
    downloaded by name)."""

    vocab_file: Optional[str] = None
    """GPT2BPETokenizer: the vocabulary, token -> id (vocab.json; Megatron-LM's --vocab-file)."""

    merge_file: Optional[str] = None
    """GPT2BPETokenizer: the BPE merges, one pair per line (merges.txt; Megatron-LM's --merge-file)."""

    tiktoken_pattern: str = "cl100k"
    """TikTokenizer: how text is split into words before BPE: cl100k (GPT-3.5/4's), o200k (GPT-4o's),
    r50k (GPT-2's), or a regular expression of your own. End-of-document <|endoftext|> is the
    id after the file's highest rank."""

    trust_remote_code: bool = False
    """Let HuggingFace tokenizers run code from the model repository."""

    vocab_extra_ids: int = 0
    """Sentinel tokens (<extra_id_0>, ...) that T5 span corruption puts in place of masked spans
    (Megatron-LM's --vocab-extra-ids; T5 has 100). When > 0 they are appended after the
    vocabulary together with a decoder start and a mask token (vocab_extra_ids + 2 ids); a
    HuggingFace tokenizer with sentinels of its own (t5-base) uses those instead."""

    def added_tokens(self) -> int:
        """Ids appended after the vocabulary for T5 (every tokenizer but a HuggingFace one with
        sentinels of its own)."""
        return self.vocab_extra_ids + 2 if self.vocab_extra_ids > 0 else 0
