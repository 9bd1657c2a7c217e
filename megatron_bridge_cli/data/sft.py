"""Supervised finetuning samples from JSONL files (``--dataset=sft``, FinetuningDatasetConfig).

A line is a prompt/response pair (``{"prompt": ..., "response": ...}``, keys configurable) or a
chat (``{"messages": [{"role": ..., "content": ...}, ...]}``). A sample is token ids plus a
"trained" flag per id: the response, or every assistant turn, and the closing end-of-document
token are trained; prompts, system/user turns and role headers are not.

- prompt/response: ``prompt + response`` as written (the prompt carries its own separator),
  then end-of-document.
- chat, tokenizer with a chat template (HuggingFace): the template renders the conversation;
  each assistant turn is the text the template adds for it after the generation prompt.
- chat, other tokenizers: bridge-train's default template, ``<|ROLE|>\\nCONTENT\\n`` per
  message, then end-of-document; an assistant turn trains ``CONTENT\\n``.

A row of the batch holds seq_length positions; sample ids ``x`` give tokens ``x[:-1]``, labels
``x[1:]`` and a loss mask that is 1 where the label is a trained id (ids beyond seq_length + 1
are cut). Padded rows hold one sample each and use the model's causal mask. Packed rows
(``--dataset.packed``) hold consecutive samples while they fit, with position ids restarting at
each sample and a block-diagonal causal ``attention_mask`` (``[1, s, s]`` bool, True = masked, as
megatron-core's local attention takes it), so every sample sees exactly what it sees padded.

``--dataset.dataloader_type=batch`` pads each micro-batch only to its longest row (rounded up to
a multiple of 8, at most seq_length) instead of every row to seq_length: fewer pad positions,
the same per-token loss. ``--dataset.num_epochs`` sets the run length in passes over the
training rows (training/preflight.py derives train_iters from them).

Epochs: the training split is as long as the run asks (``train_iters x global_batch_size``
rows); sample ``i`` is row ``perm_e[i mod rows]`` of epoch ``e = i // rows``, ``perm_e`` a
permutation seeded by ``(dataset.random_seed, e)``. Training samples are shuffled once (seed
``random_seed``) before packing. Validation and test rows keep file order and are read cyclically.
"""

from __future__ import annotations

import json
from typing import Iterator, Optional

import numpy
import torch

from megatron_bridge_cli.errors import ConfigError

__all__ = ["read_jsonl", "line_problem", "split_bounds", "render_sample", "rows_of", "make_row", "SFTDataset",
           "build_sft_datasets", "training_row_count", "epoch_iterations", "row_length", "BATCH_PAD_MULTIPLE",
           "DEFAULT_CHAT_TEMPLATE"]

DEFAULT_CHAT_TEMPLATE = "<|{role}|>\n{content}\n"
"""bridge-train's chat template for tokenizers without one; end-of-document closes the chat."""

_SPLIT_FLAGS = ("train_data_path", "valid_data_path", "test_data_path")


# --------------------------------------------------------------------------- files
def read_jsonl(path: str) -> Iterator[tuple[int, object]]:
    """(line number, parsed object) of each non-blank line; ValueError names the bad line."""
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} line {number} is not JSON ({e.msg})") from None


def line_problem(obj, d) -> Optional[str]:
    """Why one parsed line is not a sample of dataset section ``d``, or None."""
    if not isinstance(obj, dict):
        return "is not a JSON object"
    if d.messages_key in obj:
        messages = obj[d.messages_key]
        if not isinstance(messages, list) or not messages:
            return f"{d.messages_key!r} is not a non-empty list of messages"
        for i, m in enumerate(messages):
            if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
                return f"message {i} of {d.messages_key!r} needs string 'role' and 'content'"
        if not any(m["role"] == "assistant" for m in messages):
            return f"{d.messages_key!r} has no 'assistant' message to train on"
        return None
    missing = [k for k in (d.prompt_key, d.response_key) if k not in obj]
    if missing:
        return (f"has neither {d.messages_key!r} nor {' and '.join(repr(k) for k in missing)} "
                f"(keys: {', '.join(sorted(obj)) or 'none'}; set --dataset.prompt_key/--dataset.response_key"
                f"/--dataset.messages_key)")
    bad = [k for k in (d.prompt_key, d.response_key) if not isinstance(obj[k], str)]
    if bad:
        return f"{' and '.join(repr(k) for k in bad)} must be text"
    return None


def files_of(d) -> list[list[str]]:
    """[train, valid, test] file lists: per-split paths, or data_path for every split."""
    if any(getattr(d, flag) for flag in _SPLIT_FLAGS):
        return [list(getattr(d, flag) or []) for flag in _SPLIT_FLAGS]
    return [list(d.data_path or [])] * 3


def split_bounds(split: str, n: int) -> list[int]:
    """[0, a, b, n]: the sample ranges of a 'train,valid,test' split, contiguous (Megatron's rule)."""
    from megatron.core.datasets.blended_megatron_dataset_config import parse_and_normalize_split

    weights = (parse_and_normalize_split(split) + [0.0, 0.0, 0.0])[:3]
    bounds = [0]
    for w in weights:
        bounds.append(bounds[-1] + int(round(w * n)))
    bounds[-1] = n
    return [min(b, n) for b in bounds]


# --------------------------------------------------------------------------- one sample
def _hf_chat(tokenizer):
    """The `transformers` tokenizer behind ``tokenizer`` when it has a chat template, else None."""
    inner = getattr(tokenizer, "_tok", None)  # data/tokenizers.py's HuggingFaceTokenizer
    return inner if getattr(inner, "chat_template", None) else None


def _template_pieces(hf, messages: list[dict]) -> list[tuple[str, bool]]:
    """(text, trained) pieces of a chat rendered by a HuggingFace chat template: an assistant
    turn is what the template adds after the generation prompt."""

    def render(part, generation_prompt=False):
        return hf.apply_chat_template(part, tokenize=False, add_generation_prompt=generation_prompt) if part else ""

    pieces, done = [], ""
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before, after = render(messages[:i], True), render(messages[: i + 1])
        if not (before.startswith(done) and after.startswith(before)):
            raise ConfigError("the tokenizer's chat template does not render a conversation turn by turn (each "
                              "rendering a prefix of the next), so its assistant turns cannot be found; use "
                              "prompt/response lines (--dataset.prompt_key/--dataset.response_key) instead")
        pieces += [(before[len(done):], False), (after[len(before):], True)]
        done = after
    pieces.append((render(messages)[len(done):], False))
    return pieces


def render_sample(obj: dict, tokenizer, d) -> tuple[list[int], list[bool]]:
    """Token ids of one line and which of them are trained."""
    hf = _hf_chat(tokenizer) if d.messages_key in obj else None
    if hf is not None:
        pieces, close = _template_pieces(hf, obj[d.messages_key]), None  # the template ends its turns
    elif d.messages_key in obj:
        pieces = []
        for m in obj[d.messages_key]:
            assistant = m["role"] == "assistant"
            pieces += [(f"<|{m['role']}|>\n", False), (m["content"] + "\n", assistant)]
        close = obj[d.messages_key][-1]["role"] == "assistant"
    else:
        pieces, close = [(obj[d.prompt_key], False), (obj[d.response_key], True)], True
    ids, trained = [], []
    for text, train in pieces:
        if text:
            piece = list(tokenizer.tokenize(text))
            ids += piece
            trained += [train] * len(piece)
    if close is not None:
        ids.append(tokenizer.eod)
        trained.append(close)
    return ids, trained


# --------------------------------------------------------------------------- rows
def rows_of(samples: list, seq_length: int, packed: bool) -> list[list]:
    """Samples (each cut to seq_length + 1 ids) grouped into rows: one each, or packed in order
    while their seq_length positions (ids - 1 each) fit."""
    rows, used = [], seq_length
    for ids, trained in samples:
        sample = (ids[: seq_length + 1], trained[: seq_length + 1])
        positions = len(sample[0]) - 1
        if positions < 1:
            continue  # a one-token sample has nothing to predict
        if not packed or used + positions > seq_length:
            rows.append([])
            used = 0
        rows[-1].append(sample)
        used += positions
    return rows


def make_row(samples: list, seq_length: int, pad_id: int, packed: bool) -> dict:
    """The batch entries of one row (see the module docstring)."""
    tokens = torch.full((seq_length,), pad_id, dtype=torch.long)
    labels = torch.full((seq_length,), pad_id, dtype=torch.long)
    loss_mask = torch.zeros(seq_length, dtype=torch.float)
    position_ids = torch.arange(seq_length, dtype=torch.long)
    segment = torch.full((seq_length,), len(samples), dtype=torch.long)  # padding: a segment of its own
    start = 0
    for k, (ids, trained) in enumerate(samples):
        n = len(ids) - 1
        tokens[start:start + n] = torch.tensor(ids[:-1])
        labels[start:start + n] = torch.tensor(ids[1:])
        loss_mask[start:start + n] = torch.tensor(trained[1:], dtype=torch.float)
        position_ids[start:start + n] = torch.arange(n)
        segment[start:start + n] = k
        start += n
    row = {"tokens": tokens, "labels": labels, "loss_mask": loss_mask, "position_ids": position_ids}
    if packed:
        causal = torch.tril(torch.ones(seq_length, seq_length, dtype=torch.bool))
        same = segment[:, None] == segment[None, :]
        row["attention_mask"] = ~(causal & same).unsqueeze(0)
    return row


BATCH_PAD_MULTIPLE = 8
"""dataloader_type='batch' pads a micro-batch to its longest row rounded up to this multiple
(tensor-core friendly shapes, and divisible by the tensor-parallel size up to 8)."""


def row_length(row: list) -> int:
    """Positions a row's samples use (ids - 1 each)."""
    return sum(len(ids) - 1 for ids, _ in row)


class SFTDataset(torch.utils.data.Dataset):
    """``length`` rows drawn from ``rows`` epoch after epoch (shuffled per epoch when ``shuffle``).
    ``per_batch``: a micro-batch (``__getitems__``, which the DataLoader calls with a batch
    sampler) is padded to its longest row, rounded up to BATCH_PAD_MULTIPLE, not to seq_length."""

    def __init__(self, rows: list, length: int, seq_length: int, pad_id: int, packed: bool, seed: int,
                 shuffle: bool, per_batch: bool = False):
        self.rows, self.length, self.seq_length, self.pad_id = rows, length, seq_length, pad_id
        self.packed, self.seed, self.shuffle, self.per_batch = packed, seed, shuffle, per_batch
        self._orders: dict[int, numpy.ndarray] = {}

    def __len__(self) -> int:
        return self.length

    def row_index(self, i: int) -> int:
        """Which row sample ``i`` is."""
        epoch, k = divmod(i, len(self.rows))
        if not self.shuffle:
            return k
        if epoch not in self._orders:
            self._orders[epoch] = numpy.random.default_rng([self.seed, epoch]).permutation(len(self.rows))
        return int(self._orders[epoch][k])

    def __getitem__(self, i: int) -> dict:
        return make_row(self.rows[self.row_index(i)], self.seq_length, self.pad_id, self.packed)

    def __getitems__(self, indices: list[int]) -> list[dict]:
        rows = [self.rows[self.row_index(i)] for i in indices]
        length = self.seq_length
        if self.per_batch:
            longest = max(row_length(r) for r in rows)
            length = min(self.seq_length, -(-longest // BATCH_PAD_MULTIPLE) * BATCH_PAD_MULTIPLE)
        return [make_row(r, length, self.pad_id, self.packed) for r in rows]


def _samples(paths: list[str], d, tokenizer) -> list:
    samples = []
    for path in paths:
        for number, obj in read_jsonl(path):
            problem = line_problem(obj, d)
            if problem:  # the pre-flight reports these first; here the file changed since
                raise ConfigError(f"--dataset=sft: {path} line {number} {problem}")
            samples.append(render_sample(obj, tokenizer, d))
    return samples


def build_sft_datasets(cfg, tokenizer, sizes: list[int], needs_data: bool) -> list:
    """[train, valid, test] SFTDatasets of the finalized ``cfg`` (None where a split is empty or
    this rank reads no data). ``sizes`` are the samples each split must provide."""
    d = cfg.dataset
    if not needs_data:
        return [None, None, None]
    seq_length = d.sample_length
    pad_id = tokenizer.pad if _has_pad(tokenizer) else (tokenizer.eod if tokenizer.eod is not None else 0)
    files = files_of(d)
    if any(getattr(d, flag) for flag in _SPLIT_FLAGS):
        splits = [_samples(paths, d, tokenizer) for paths in files]
    else:
        everything = _samples(files[0], d, tokenizer)
        bounds = split_bounds(d.split, len(everything))
        splits = [everything[bounds[i]:bounds[i + 1]] for i in range(3)]
    datasets = []
    for i, (samples, size) in enumerate(zip(splits, sizes)):
        rows = _rows(samples, d, seq_length, training=i == 0)
        if size <= 0 or not rows:
            datasets.append(None)
            continue
        length = size if i == 0 else len(rows)
        datasets.append(SFTDataset(rows, length, seq_length, pad_id, d.packed, d.random_seed, shuffle=i == 0,
                                   per_batch=d.dataloader_type == "batch"))
    return datasets


def _rows(samples: list, d, seq_length: int, training: bool) -> list:
    if training:  # a fixed shuffle before packing, so packs do not follow the file's order
        order = numpy.random.default_rng(d.random_seed).permutation(len(samples))
        samples = [samples[k] for k in order]
    return rows_of(samples, seq_length, d.packed)


def training_row_count(cfg) -> Optional[int]:
    """Rows of one epoch of the (unfinalized) ``cfg``'s training split, as build_sft_datasets
    makes them (a packed row holds several samples), or None when the tokenizer or a file does
    not load (the pre-flight names it)."""
    from megatron_bridge_cli.data.tokenizers import build_tokenizer

    d = cfg.dataset
    try:
        tokenizer = build_tokenizer(cfg.tokenizer, cfg.model.vocab_size)
        samples = _samples(files_of(d)[0], d, tokenizer)
    except (ConfigError, OSError, ValueError):
        return None
    if not any(getattr(d, flag) for flag in _SPLIT_FLAGS):
        bounds = split_bounds(d.split, len(samples))
        samples = samples[bounds[0]:bounds[1]]
    return len(_rows(samples, d, d.seq_length or cfg.model.seq_length, training=True))


def epoch_iterations(cfg) -> Optional[int]:
    """Optimizer steps of --dataset.num_epochs passes over the training rows (the last pass
    completed), or None when num_epochs is unset or the rows cannot be counted."""
    d, gbs = cfg.dataset, cfg.train.global_batch_size
    if d.num_epochs is None or d.num_epochs < 1 or gbs < 1:
        return None
    rows = training_row_count(cfg)
    return -(-d.num_epochs * rows // gbs) if rows else None


def _has_pad(tokenizer) -> bool:
    try:
        pad = tokenizer.pad
    except (AttributeError, NotImplementedError):
        return False
    return isinstance(pad, int) and pad >= 0
