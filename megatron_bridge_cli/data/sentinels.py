"""The special tokens megatron-core's T5 span-corruption dataset reads from its tokenizer.

``T5MaskedWordPieceDataset`` (megatron-core 0.16) asks the tokenizer for
``additional_special_tokens_ids`` (the sentinels, one per masked span, used in order), ``bos``
(decoder start), ``eos`` (end of the target), ``mask`` (written over masked tokens; they are
cut from the encoder input, so it never reaches the model), ``cls`` and ``sep`` (never masked)
and ``inv_vocab`` (id -> piece; pieces starting with '##' continue a word). Its ``pad`` is
optional: without one megatron-core pads with -1, which cannot collide with a real id, and
the padding masks come from that.

:class:`SentinelTokenizer` adds these to any tokenizer: the base tokenizer's own where it has
them (a HuggingFace t5-base tokenizer brings <extra_id_0..99>), otherwise new ids appended after
its vocabulary in this order: decoder start, mask, then ``vocab_extra_ids`` sentinels. The
byte-level tokenizer thus becomes 256 bytes, end-of-document (256), ``<s>`` (257),
``<mask>`` (258) and ``<extra_id_0>`` (259), ... Data preprocessed with the base tokenizer
keeps its meaning: no id of the base vocabulary moves.
"""

from __future__ import annotations

from collections.abc import Mapping

from megatron.core.datasets.megatron_tokenizer import MegatronLegacyTokenizer

__all__ = ["SentinelTokenizer"]


class _IdNames(Mapping):
    """``inv_vocab`` of a tokenizer without a vocabulary (ids as given): every id is its own word."""

    def __init__(self, size: int, names: dict[int, str]):
        self._size, self._names = size, names

    def __getitem__(self, i):
        if not 0 <= int(i) < self._size:
            raise KeyError(i)
        return self._names.get(int(i), str(int(i)))

    def __iter__(self):
        return iter(range(self._size))

    def __len__(self) -> int:
        return self._size


class SentinelTokenizer(MegatronLegacyTokenizer):
    """``base`` plus the T5 special tokens (see the module docstring)."""

    def __init__(self, base: MegatronLegacyTokenizer, vocab_extra_ids: int):
        own = base.special_token_ids() if hasattr(base, "special_token_ids") else {}
        self._base, self._added = base, {}
        next_id = base.vocab_size

        def add(name: str) -> int:
            nonlocal next_id
            self._added[next_id] = name
            next_id += 1
            return next_id - 1

        self._bos = own["bos"] if "bos" in own else add("<s>")
        self._mask = own["mask"] if "mask" in own else add("<mask>")
        self._sentinels = own.get("sentinels") or [add(f"<extra_id_{i}>") for i in range(vocab_extra_ids)]
        self._eos = own.get("eos", base.eod)
        # Document ends are never masked: they stand in for cls/sep when the base has none.
        self._cls, self._sep = own.get("cls", base.eod), own.get("sep", base.eod)
        self._vocab_size, self._inv_vocab = next_id, None
        super().__init__(tokenizer_type=f"{type(base).__name__}+T5", vocab_extra_ids=vocab_extra_ids,
                         base=getattr(base, "unique_identifiers", {}))

    # -- what preprocessing and GPT datasets use: the base tokenizer's behaviour
    def tokenize(self, text: str) -> list[int]:
        return self._base.tokenize(text)

    def detokenize(self, ids) -> str:
        return self._base.detokenize([i for i in ids if int(i) not in self._added])

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def vocab(self):
        return {name: i for i, name in self.inv_vocab.items()}

    @property
    def inv_vocab(self):
        # Read once per token by the masking code: build it once.
        if self._inv_vocab is None:
            try:
                self._inv_vocab = dict(self._base.inv_vocab) | self._added
            except NotImplementedError:
                self._inv_vocab = _IdNames(self._vocab_size, self._added)
        return self._inv_vocab

    @property
    def eod(self) -> int:
        return self._base.eod

    # -- what T5MaskedWordPieceDataset reads
    @property
    def additional_special_tokens_ids(self) -> list[int]:
        return list(self._sentinels)

    @property
    def bos(self) -> int:
        return self._bos

    @property
    def eos(self) -> int:
        return self._eos

    @property
    def mask(self) -> int:
        return self._mask

    @property
    def cls(self) -> int:
        return self._cls

    @property
    def sep(self) -> int:
        return self._sep
