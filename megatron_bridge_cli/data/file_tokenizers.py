"""Tokenizers read from local files: SentencePiece, GPT-2 BPE and tiktoken.

Each is megatron-core's ``MegatronLegacyTokenizer`` (tokenize, detokenize, vocab_size, vocab,
inv_vocab, eod), so preprocessing, the datasets and T5's sentinels use them as they use the
byte-level one. They never touch the network: every path must be an existing file (tiktoken
would fetch an encoding by name or URL; here a name is refused). A file that does not load is a
ConfigError naming the flag.

End-of-document is the tokenizer's own end token where it has one (SentencePiece's ``</s>``,
GPT-2's ``<|endoftext|>``), else one id appended after the vocabulary; ``detokenize`` drops it.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import os
from typing import Optional

from megatron.core.datasets.megatron_tokenizer import MegatronLegacyTokenizer

from megatron_bridge_cli.errors import ConfigError

__all__ = ["SentencePieceTokenizer", "GPT2BPETokenizer", "TikTokenizer", "TIKTOKEN_PATTERNS", "file_problem",
           "read_tiktoken_ranks"]

_EXTRA = "pip install '.[tokenizers]'"

# The split patterns of OpenAI's published encodings (tiktoken_ext/openai_public.py).
TIKTOKEN_PATTERNS = {
    "r50k": r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s""",
    "cl100k": r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",
    "o200k": "|".join([
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""", r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""", r"""\s*[\r\n]+""", r"""\s+(?!\S)""", r"""\s+""",
    ]),
}
ENDOFTEXT = "<|endoftext|>"


def file_problem(kind: str, flag: str, path) -> Optional[str]:
    """Why ``--tokenizer.<flag>=path`` cannot be read by tokenizer ``kind``, or None."""
    if not path:
        return f"--tokenizer.tokenizer_type={kind} needs --tokenizer.{flag}"
    if os.path.isfile(path):
        return None
    what = "is a folder" if os.path.isdir(path) else "does not exist"
    hint = ""
    if kind == "TikTokenizer" and os.sep not in path and "." not in path:  # "cl100k_base": tiktoken would download it
        hint = f" (encodings are not fetched by name: pass the path of a local {path}.tiktoken file)"
    return f"--tokenizer.{flag}={path}: the file {what}; {kind} reads local files only{hint}"


def _local_file(flag: str, path, kind: str) -> str:
    problem = file_problem(kind, flag, path)
    if problem:
        raise ConfigError(problem)
    return path


def _import(module: str, kind: str):
    try:
        return __import__(module)
    except ImportError:
        raise ConfigError(f"--tokenizer.tokenizer_type={kind} needs the `{module}` package: {_EXTRA}") from None


class SentencePieceTokenizer(MegatronLegacyTokenizer):
    """A SentencePiece ``.model`` (Llama 2, T5, Mistral v1...): ids are the model's pieces."""

    def __init__(self, model_file: str):
        spm = _import("sentencepiece", "SentencePieceTokenizer")
        path = _local_file("tokenizer_model", model_file, "SentencePieceTokenizer")
        super().__init__(path, tokenizer_type="SentencePieceTokenizer")
        try:
            self._sp = spm.SentencePieceProcessor(model_file=path)
        except (RuntimeError, OSError) as e:
            raise ConfigError(f"--tokenizer.tokenizer_model={path!r} is not a SentencePiece model: {e}") from None
        self._pieces = self._sp.get_piece_size()
        eos = self._sp.eos_id()
        self._eod = eos if eos >= 0 else self._pieces  # a model trained without </s>: one id appended

    def tokenize(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def detokenize(self, ids) -> str:
        return self._sp.decode([int(i) for i in ids if int(i) < self._pieces and int(i) != self._eod])

    @property
    def vocab_size(self) -> int:
        return max(self._pieces, self._eod + 1)

    @functools.cached_property
    def vocab(self):
        return {v: k for k, v in self.inv_vocab.items()}

    @functools.cached_property
    def inv_vocab(self):
        names = {i: self._sp.id_to_piece(i) for i in range(self._pieces)}
        names.setdefault(self._eod, "<eod>")
        return names

    @property
    def eod(self) -> int:
        return self._eod

    def special_token_ids(self) -> dict:
        """``bos``/``eos`` where the model has them (T5's sentinels reuse them)."""
        ids = {"bos": self._sp.bos_id(), "eos": self._sp.eos_id()}
        return {k: v for k, v in ids.items() if v >= 0}


class GPT2BPETokenizer(MegatronLegacyTokenizer):
    """GPT-2's byte-level BPE from ``vocab.json`` + ``merges.txt`` (Megatron-LM's --vocab-file
    and --merge-file), with GPT-2's split pattern. End-of-document is ``<|endoftext|>``."""

    def __init__(self, vocab_file: str, merge_file: str):
        tk = _import("tokenizers", "GPT2BPETokenizer")
        vocab = _local_file("vocab_file", vocab_file, "GPT2BPETokenizer")
        merges = _local_file("merge_file", merge_file, "GPT2BPETokenizer")
        super().__init__(vocab, merges, tokenizer_type="GPT2BPETokenizer")
        try:
            with open(vocab, encoding="utf-8") as f:
                table = json.load(f)
            if not isinstance(table, dict) or not all(isinstance(i, int) for i in table.values()):
                raise ValueError("expected a JSON object of token -> integer id")
        except (ValueError, UnicodeDecodeError) as e:
            raise ConfigError(f"--tokenizer.vocab_file={vocab!r} is not a GPT-2 vocab.json: {e}") from None
        try:
            tok = tk.Tokenizer(tk.models.BPE.from_file(vocab, merges))
        except Exception as e:  # the Rust loader raises plain Exception for a malformed merges file
            raise ConfigError(f"--tokenizer.merge_file={merges!r} does not fit --tokenizer.vocab_file={vocab!r} "
                              f"as GPT-2 BPE merges: {e}") from None
        tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)  # GPT-2's regex split
        tok.decoder = tk.decoders.ByteLevel()
        tok.add_special_tokens([ENDOFTEXT])  # its own id when vocab.json has it, else appended
        self._tok = tok
        self._eod = tok.token_to_id(ENDOFTEXT)
        self._size = max(tok.get_vocab(with_added_tokens=True).values()) + 1

    def tokenize(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def detokenize(self, ids) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

    @property
    def vocab_size(self) -> int:
        return self._size

    @functools.cached_property
    def vocab(self):
        return self._tok.get_vocab(with_added_tokens=True)

    @functools.cached_property
    def inv_vocab(self):
        return {i: t for t, i in self.vocab.items()}

    @property
    def eod(self) -> int:
        return self._eod


def read_tiktoken_ranks(path: str) -> dict[bytes, int]:
    """A tiktoken BPE file: one ``base64(token) rank`` per line. Parsed here rather than by
    ``tiktoken.load_tiktoken_bpe``, which caches files by path in a temp folder (a changed file at
    the same path would be read stale) and fetches URLs."""
    ranks = {}
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
            except (ValueError, binascii.Error):
                raise ConfigError(f"--tokenizer.tokenizer_model={path!r} is not a tiktoken BPE file: line {n} is "
                                  f"{line[:60]!r}, expected a base64 token, a space and its rank") from None
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:  # tiktoken's BPE starts from single bytes (and panics on one without a rank)
        raise ConfigError(f"--tokenizer.tokenizer_model={path!r} is not a byte-level tiktoken BPE file: "
                          f"{len(missing)} of the 256 single bytes have no rank (e.g. {missing[0]})")
    if len(set(ranks.values())) != len(ranks):
        raise ConfigError(f"--tokenizer.tokenizer_model={path!r}: two tokens share a rank")
    return ranks


class TikTokenizer(MegatronLegacyTokenizer):
    """A tiktoken BPE ranks file (``cl100k_base.tiktoken`` and the like) with a split pattern.
    Ids are the file's ranks; ``<|endoftext|>`` is the id after the highest rank (so for OpenAI's
    files it differs from OpenAI's own special-token id)."""

    def __init__(self, ranks_file: str, pattern: str = "cl100k"):
        tiktoken = _import("tiktoken", "TikTokenizer")
        path = _local_file("tokenizer_model", ranks_file, "TikTokenizer")
        super().__init__(path, tokenizer_type="TikTokenizer", pattern=pattern)
        ranks = read_tiktoken_ranks(path)
        self._eod = max(ranks.values()) + 1
        try:
            self._enc = tiktoken.Encoding(name=os.path.basename(path), pat_str=TIKTOKEN_PATTERNS.get(pattern, pattern),
                                          mergeable_ranks=ranks, special_tokens={ENDOFTEXT: self._eod})
        except ValueError as e:  # the Rust regex engine rejects the pattern
            raise ConfigError(f"--tokenizer.tiktoken_pattern={pattern!r} is neither one of "
                              f"{', '.join(TIKTOKEN_PATTERNS)} nor a valid regular expression: {e}") from None
        self._tokens = {rank: token for token, rank in ranks.items()}

    def tokenize(self, text: str) -> list[int]:
        return self._enc.encode_ordinary(text)  # "<|endoftext|>" in the text is text, not a document end

    def detokenize(self, ids) -> str:
        return self._enc.decode([int(i) for i in ids if int(i) in self._tokens])

    @property
    def vocab_size(self) -> int:
        return self._eod + 1

    @functools.cached_property
    def vocab(self):
        return {v: k for k, v in self.inv_vocab.items()}

    @functools.cached_property
    def inv_vocab(self):
        # tokens are bytes: latin-1 names each byte string by one distinct str (as ByteLevelTokenizer does)
        return {rank: token.decode("latin-1") for rank, token in self._tokens.items()} | {self._eod: ENDOFTEXT}

    @property
    def eod(self) -> int:
        return self._eod
