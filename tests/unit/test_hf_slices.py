"""What one tensor-parallel rank copies out of HF tensors (hf.weights.fill_owned), on real
tensors held in memory: the q/k/v interleaving per query group, gate/up fusion, the vocabulary
padding, column splits, and a wrong shape refused instead of broadcast."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from megatron_bridge_cli.hf.weights import ShapeMismatch, Source, fill_owned

HEADS, GROUPS, D, HIDDEN = 4, 2, 8, 32


def _reader(tensors: dict):
    def read(name, index=None):
        t = tensors[name]
        return t if index is None else t[index]
    return read, (lambda name: tuple(tensors[name].shape))


MODEL = SimpleNamespace(kv_channels=D, num_query_groups=GROUPS, num_attention_heads=HEADS, vocab_size=10)


@pytest.mark.parametrize("rank", [0, 1])
def test_qkv_rows_are_this_ranks_groups_interleaved(rank):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(n, HIDDEN, generator=g) for n in (HEADS * D, GROUPS * D, GROUPS * D))
    read, shape = _reader({"q": q, "k": k, "v": v})
    param = torch.empty((HEADS + 2 * GROUPS) * D // 2, HIDDEN)
    fill_owned(param, Source("qkv", ("q", "k", "v")), rank, 2, MODEL, read, shape)
    per_group = HEADS // GROUPS
    # TP=2 with 2 groups: rank r holds group r = its 2 query heads, then its key head, then its value head
    expected = torch.cat([q[rank * per_group * D:(rank + 1) * per_group * D], k[rank * D:(rank + 1) * D],
                          v[rank * D:(rank + 1) * D]])
    assert torch.equal(param, expected)


def test_gate_up_vocab_and_column_split():
    g = torch.Generator().manual_seed(1)
    gate, up, emb, down = (torch.randn(*s, generator=g) for s in ((16, 4), (16, 4), (10, 4), (4, 16)))
    read, shape = _reader({"gate": gate, "up": up, "emb": emb, "down": down})
    fc1 = torch.empty(16, 4)
    fill_owned(fc1, Source("gate_up", ("gate", "up")), 1, 2, MODEL, read, shape)
    assert torch.equal(fc1, torch.cat([gate[8:], up[8:]]))
    table = torch.full((6, 4), 7.0)  # padded vocabulary 12 over TP=2: rank 1 holds rows 6..11, 10 and 11 padding
    fill_owned(table, Source("vocab", ("emb",)), 1, 2, MODEL, read, shape)
    assert torch.equal(table[:4], emb[6:]) and not table[4:].any()
    fc2 = torch.empty(4, 8)
    fill_owned(fc2, Source("copy", ("down",)), 0, 2, MODEL, read, shape)
    assert torch.equal(fc2, down[:, :8])


def test_a_tensor_of_another_shape_is_refused_not_broadcast():
    read, shape = _reader({"norm": torch.ones(1, 4)})
    with pytest.raises(ShapeMismatch) as e:
        fill_owned(torch.zeros(3, 4), Source("copy", ("norm",)), 0, 1, MODEL, read, shape)
    assert (e.value.hf_name, e.value.got, e.value.want) == ("norm", (1, 4), (3, 4))
