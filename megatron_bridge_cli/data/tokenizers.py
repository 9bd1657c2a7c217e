"""Tokenizers behind TokenizerConfig, in the interface megatron-core datasets expect.

megatron-core's GPTDataset reads ``tokenizer.eod`` (document separator), ``vocab_size`` and
``unique_identifiers`` (part of its index cache key); preprocessing calls ``tokenize``.
"""

from __future__ import annotations

import logging
import os
from typing import Optional

import numpy
from megatron.core.datasets.megatron_tokenizer import MegatronLegacyTokenizer

from megatron_bridge_cli.config.tokenizer import TokenizerConfig
from megatron_bridge_cli.errors import ConfigError

# megatron-core warns that its legacy tokenizer base class is deprecated; its datasets still use
# exactly this interface in 0.16, so the warning says nothing the user can act on.
logging.getLogger("megatron.core.datasets.megatron_tokenizer").setLevel(logging.ERROR)

__all__ = ["ByteLevelTokenizer", "NullTokenizer", "HuggingFaceTokenizer", "build_tokenizer", "with_sentinels",
           "tokenizer_problems", "tokenizer_vocab_size"]


class ByteLevelTokenizer(MegatronLegacyTokenizer):
    """UTF-8 bytes as ids 0-255 and end-of-document as 256: any text, no vocabulary files."""

    def __init__(self):
        super().__init__(tokenizer_type="ByteLevelTokenizer")

    def tokenize(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def detokenize(self, ids) -> str:
        return bytes(int(i) for i in ids if int(i) < 256).decode("utf-8", errors="replace")

    @property
    def vocab_size(self) -> int:
        return 257

    @property
    def vocab(self):
        return {bytes([i]).decode("latin-1"): i for i in range(256)} | {"<eod>": 256}

    @property
    def inv_vocab(self):
        return {i: t for t, i in self.vocab.items()}

    @property
    def eod(self) -> int:
        return 256


class NullTokenizer(MegatronLegacyTokenizer):
    """Ids are already tokens (mock or pre-tokenized data): ``vocab_size`` ids plus end-of-document."""

    def __init__(self, vocab_size: int):
        super().__init__(tokenizer_type="NullTokenizer", vocab_size=vocab_size)
        self._ids = int(vocab_size)

    def tokenize(self, text: str) -> list[int]:
        return [int(t) for t in text.split()]

    def detokenize(self, ids) -> str:
        return " ".join(str(int(i)) for i in ids)

    @property
    def vocab_size(self) -> int:
        return self._ids + 1

    @property
    def vocab(self):
        raise NotImplementedError("NullTokenizer has no vocabulary")

    @property
    def inv_vocab(self):
        raise NotImplementedError("NullTokenizer has no vocabulary")

    @property
    def eod(self) -> int:
        return self._ids


class HuggingFaceTokenizer(MegatronLegacyTokenizer):
    """A `transformers` tokenizer loaded from a local folder (or the local HF cache)."""

    def __init__(self, path: str, trust_remote_code: bool = False):
        super().__init__(path, tokenizer_type="HuggingFaceTokenizer")
        try:
            from transformers import AutoTokenizer
        except ImportError:
            raise ConfigError("--tokenizer.tokenizer_type=HuggingFaceTokenizer needs `pip install transformers`") from None
        try:
            # local_files_only: a folder, or a name already in the local HF cache; never a download
            self._tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, local_files_only=True)
        except OSError as e:
            raise ConfigError(f"--tokenizer.tokenizer_model={path!r} cannot be loaded: {e}") from None

    def tokenize(self, text: str) -> list[int]:
        return self._tok(text, add_special_tokens=False)["input_ids"]

    def detokenize(self, ids) -> str:
        return self._tok.decode(list(ids))

    @property
    def vocab_size(self) -> int:
        return len(self._tok)

    @property
    def vocab(self):
        return self._tok.get_vocab()

    @property
    def inv_vocab(self):
        return {i: t for t, i in self.vocab.items()}

    @property
    def eod(self) -> int:
        return self._tok.eos_token_id

    def special_token_ids(self) -> dict:
        """The special ids this tokenizer has of its own (T5 span corruption reuses them):
        ``bos``, ``eos``, ``mask``, ``cls``, ``sep`` where set, and ``sentinels`` (its
        additional special tokens, e.g. t5-base's <extra_id_0..99>)."""
        t = self._tok
        ids = {name: getattr(t, f"{name}_token_id", None) for name in ("bos", "eos", "mask", "cls", "sep")}
        ids = {k: v for k, v in ids.items() if v is not None}
        sentinels = getattr(t, "additional_special_tokens_ids", None)
        if sentinels:
            ids["sentinels"] = list(sentinels)
        return ids


def build_tokenizer(cfg: TokenizerConfig, model_vocab_size: Optional[int] = None) -> MegatronLegacyTokenizer:
    """The tokenizer ``cfg`` names. NullTokenizer takes its size from the model when unset
    (leaving room for the T5 special tokens). With ``--tokenizer.vocab_extra_ids`` it carries
    T5's sentinels (data/sentinels.py)."""
    if cfg.tokenizer_type == "ByteLevelTokenizer":
        base = ByteLevelTokenizer()
    elif cfg.tokenizer_type == "NullTokenizer":
        ids = cfg.vocab_size if cfg.vocab_size is not None else (model_vocab_size or 0) - 1 - cfg.added_tokens()
        if ids < 1:
            raise ConfigError("NullTokenizer needs --tokenizer.vocab_size or --model.vocab_size")
        base = NullTokenizer(ids)
    elif cfg.tokenizer_type in FILE_TOKENIZERS:
        base = _file_tokenizer(cfg)
    elif not cfg.tokenizer_model:
        raise ConfigError("--tokenizer.tokenizer_type=HuggingFaceTokenizer needs --tokenizer.tokenizer_model")
    else:
        base = HuggingFaceTokenizer(cfg.tokenizer_model, cfg.trust_remote_code)
    return with_sentinels(base, cfg, model_vocab_size) if cfg.vocab_extra_ids > 0 else base


# tokenizer_type -> the flags naming its files
FILE_TOKENIZERS = {
    "SentencePieceTokenizer": ("tokenizer_model",),
    "GPT2BPETokenizer": ("vocab_file", "merge_file"),
    "TikTokenizer": ("tokenizer_model",),
}


def _file_tokenizer(cfg: TokenizerConfig) -> MegatronLegacyTokenizer:
    from megatron_bridge_cli.data import file_tokenizers as F

    if cfg.tokenizer_type == "SentencePieceTokenizer":
        return F.SentencePieceTokenizer(cfg.tokenizer_model)
    if cfg.tokenizer_type == "GPT2BPETokenizer":
        return F.GPT2BPETokenizer(cfg.vocab_file, cfg.merge_file)
    return F.TikTokenizer(cfg.tokenizer_model, cfg.tiktoken_pattern)


def _file_flag_problems(cfg: TokenizerConfig) -> list[str]:
    """Each file flag the tokenizer type needs: set, and naming an existing file."""
    from megatron_bridge_cli.data.file_tokenizers import file_problem

    problems, kind = [], cfg.tokenizer_type
    for name in FILE_TOKENIZERS.get(kind, ()):
        problem = file_problem(kind, name, getattr(cfg, name))
        if problem and name == "merge_file" and not cfg.merge_file and cfg.tokenizer_model:
            folder = cfg.tokenizer_model  # the files given the HuggingFace way, as one folder
            problem += (f" (--tokenizer.tokenizer_model is not read by it; for the files in {folder}: "
                        f"--tokenizer.vocab_file={os.path.join(folder, 'vocab.json')} "
                        f"--tokenizer.merge_file={os.path.join(folder, 'merges.txt')})")
        if problem:
            problems.append(problem)
    return problems


def tokenizer_vocab_size(cfg: TokenizerConfig) -> Optional[int]:
    """Ids of the tokenizer ``cfg`` names, T5's special tokens included: what the model's
    vocabulary must hold. None where the tokenizer takes its size from the model (NullTokenizer
    without --tokenizer.vocab_size). Raises ConfigError when it cannot be loaded."""
    if cfg.tokenizer_type == "NullTokenizer" and cfg.vocab_size is None:
        return None
    return build_tokenizer(cfg).vocab_size


def _source(cfg: TokenizerConfig) -> str:
    names = FILE_TOKENIZERS.get(cfg.tokenizer_type) or (("tokenizer_model",) if cfg.tokenizer_model else ())
    files = " ".join(f"--tokenizer.{n}={getattr(cfg, n)}" for n in names)
    return f"--tokenizer.tokenizer_type={cfg.tokenizer_type}{' ' + files if files else ''}"


def tokenizer_problems(cfg, finalized: bool = True) -> list[str]:
    """Pre-flight check of ``cfg``'s tokenizer: its files exist and load, and the model's
    vocabulary (``--model.vocab_size``) holds every id it produces. Loads the tokenizer (no
    network), so it runs with the file checks rather than in the config package."""
    tok, m = cfg.tokenizer, cfg.model
    problems = _file_flag_problems(tok)
    if problems:
        return problems
    try:
        size = tokenizer_vocab_size(tok)
    except ConfigError as e:
        return [str(e)]
    if size is None:
        return []
    if m.vocab_size is not None and m.vocab_size < size:
        return [f"--model.vocab_size {m.vocab_size} < the tokenizer's {size} tokens ({_source(tok)}"
                f"{f', with --tokenizer.vocab_extra_ids={tok.vocab_extra_ids}' if tok.vocab_extra_ids else ''}): "
                "the embedding needs a row for every id; raise it or leave it unset to take the tokenizer's"]
    if m.vocab_size is None and finalized:  # finalize had no way to learn the size
        return [f"the model's vocabulary size is unknown: set --model.vocab_size={size} (the tokenizer's "
                f"{size} tokens, {_source(tok)})"]
    return []


def with_sentinels(tokenizer: MegatronLegacyTokenizer, cfg: TokenizerConfig,
                   model_vocab_size: Optional[int]) -> MegatronLegacyTokenizer:
    """``tokenizer`` with T5's special tokens (unchanged if it has them already); refuses a
    model whose embedding has no row for some of them."""
    from megatron_bridge_cli.data.sentinels import SentinelTokenizer

    if not isinstance(tokenizer, SentinelTokenizer):
        tokenizer = SentinelTokenizer(tokenizer, cfg.vocab_extra_ids)
    if not tokenizer.additional_special_tokens_ids:
        raise ConfigError(f"T5 span corruption needs sentinel tokens, and --tokenizer.tokenizer_type={cfg.tokenizer_type} "
                          "has none of its own: set --tokenizer.vocab_extra_ids (T5 uses 100)")
    if model_vocab_size is not None and tokenizer.vocab_size > model_vocab_size:
        raise ConfigError(
            f"--model.vocab_size ({model_vocab_size}) is smaller than the vocabulary of --tokenizer.tokenizer_type="
            f"{cfg.tokenizer_type} with T5's special tokens ({tokenizer.vocab_size}, --tokenizer.vocab_extra_ids="
            f"{cfg.vocab_extra_ids}); raise it or leave it unset"
        )
    return tokenizer


def token_dtype(vocab_size: int):
    """Smallest numpy dtype that holds every id (what .bin files store)."""
    return numpy.uint16 if vocab_size <= numpy.iinfo(numpy.uint16).max + 1 else numpy.int32
