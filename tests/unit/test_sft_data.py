"""--dataset=sft: JSONL samples, the loss mask, padding vs packing, epochs and the pre-flight
(the real run on the shipped instruction set is tests/integration/test_sft_run.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from megatron_bridge_cli.config.data import FinetuningDatasetConfig
from megatron_bridge_cli.data.checks import data_problems
from megatron_bridge_cli.data.datasets import build_datasets
from megatron_bridge_cli.data.sft import make_row, render_sample, rows_of
from megatron_bridge_cli.data.tokenizers import ByteLevelTokenizer
from megatron_bridge_cli.errors import ValidationError
from megatron_bridge_cli.recipes import RECIPES
from megatron_bridge_cli.training.preflight import prepare

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "scripts" / "data" / "sft_tasks.jsonl"
BYTES = ByteLevelTokenizer()
EOD = BYTES.eod


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def sft_cfg(seq_length: int = 64, eval_iters: int = 1, **dataset):
    """gpt_cpu_tiny, byte-level, with an SFT dataset section."""
    cfg = RECIPES["gpt_cpu_tiny"](seq_length=seq_length, train_iters=10, global_batch_size=8, micro_batch_size=2)
    cfg.dataset = FinetuningDatasetConfig(num_workers=0, **dataset)
    cfg.train.eval_iters = eval_iters
    return cfg


PAIRS = [{"prompt": f"add: {a}+{b}\n=> ", "response": str(a + b)} for a, b in [(1, 2), (30, 4), (55, 60), (7, 7)]]


def trained_texts(row: dict) -> list[str]:
    """The label text under each run of loss-mask ones of a row, eod as '<eod>'."""
    labels, mask = row["labels"].tolist(), row["loss_mask"].tolist()
    texts, current = [], []
    for label, m in zip(labels, mask):
        if m:
            current.append(label)
        elif current:
            texts.append(current)
            current = []
    if current:
        texts.append(current)
    return [BYTES.detokenize(ids) + ("<eod>" if ids[-1] == EOD else "") for ids in texts]


# --------------------------------------------------------------------------- loss mask
@pytest.mark.parametrize("packed", [False, True])
def test_loss_mask_covers_exactly_the_response_tokens(tmp_path, packed):
    path = write_jsonl(tmp_path / "d.jsonl", PAIRS * 5)
    final = prepare(sft_cfg(data_path=[str(path)], split="80,20,0", packed=packed), 1)
    train, valid, test = build_datasets(final, BYTES, needs_data=True)
    assert test is None and len(valid.rows) == (1 if packed else 4)  # 4 samples, 4 rows or 1 pack
    expected = sorted(p["response"] + "<eod>" for p in PAIRS)
    rows = [valid[i] for i in range(len(valid))]
    row = rows[0]
    got = sorted(t for r in rows for t in trained_texts(r))
    assert got == expected  # each response and its closing eod, nothing of the prompts
    for r in rows:
        trained = int(r["loss_mask"].sum())
        # the mask is 1 exactly where the label is a response byte or the eod
        assert trained == sum(len(t) - len("<eod>") + 1 for t in trained_texts(r))
    if packed:
        # four samples in one row: positions restart at each, attention stays inside each sample
        starts = (row["position_ids"] == 0).nonzero().view(-1).tolist()
        assert len(starts) == 4 and starts[0] == 0
        mask = row["attention_mask"][0]
        s0, s1 = starts[0], starts[1]
        # True = masked: the second sample sees none of the first, itself causally
        assert mask[s1, s1 - 1] and mask[s1, s0] and mask[s1 + 1, s1 - 1] and mask[s0, s0 + 1]
        assert not mask[s1 + 1, s1] and not mask[s1, s1] and not mask[s1 - 1, s0]
    else:
        assert "attention_mask" not in rows[0]  # padded rows use the model's causal mask


def test_chat_default_template_trains_the_assistant_turns_only():
    d = FinetuningDatasetConfig()
    chat = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                         {"role": "assistant", "content": "hello"}, {"role": "user", "content": "2+2?"},
                         {"role": "assistant", "content": "4"}]}
    ids, trained = render_sample(chat, BYTES, d)
    assert BYTES.detokenize(ids) == ("<|system|>\nbe brief\n<|user|>\nhi\n<|assistant|>\nhello\n"
                                     "<|user|>\n2+2?\n<|assistant|>\n4\n")
    assert ids[-1] == EOD and trained[-1]
    text = bytes(i for i, t in zip(ids, trained) if t and i < 256).decode()
    assert text == "hello\n4\n"
    row = make_row(rows_of([(ids, trained)], 128, False)[0], 128, EOD, packed=False)
    assert trained_texts(row) == ["hello\n", "4\n<eod>"]


def test_chat_uses_a_huggingface_tokenizers_chat_template(tmp_path):
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from megatron_bridge_cli.data.tokenizers import HuggingFaceTokenizer

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    core = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    chatml = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
              "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    fast = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", chat_template=chatml)
    fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    fast.save_pretrained(tmp_path)
    tok = HuggingFaceTokenizer(str(tmp_path))
    chat = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
                         {"role": "user", "content": "and?"}, {"role": "assistant", "content": "ok"}]}
    ids, trained = render_sample(chat, tok, FinetuningDatasetConfig())
    assert tok.detokenize(ids) == fast.apply_chat_template(chat["messages"], tokenize=False)
    runs, current = [], []
    for i, t in zip(ids + [None], trained + [False]):
        if t:
            current.append(i)
        elif current:
            runs.append(tok.detokenize(current))
            current = []
    assert runs == ["yo<|im_end|>\n", "ok<|im_end|>\n"]  # the turns the template adds, end token included


# --------------------------------------------------------------------------- packed vs padded
_COMPARE = textwrap.dedent("""
    import json, sys, torch
    from megatron_bridge_cli.config import GPTModelProvider
    from megatron_bridge_cli.data.sft import SFTDataset, make_row, render_sample, rows_of
    from megatron_bridge_cli.config.data import FinetuningDatasetConfig
    from megatron_bridge_cli.data.tokenizers import ByteLevelTokenizer

    S = 64
    tok, d = ByteLevelTokenizer(), FinetuningDatasetConfig()
    samples = [render_sample(json.loads(line), tok, d) for line in sys.argv[1:]]
    model = GPTModelProvider(num_layers=2, hidden_size=32, num_attention_heads=4, ffn_hidden_size=64,
                             vocab_size=384, seq_length=S, layer_spec="local", hidden_dropout=0.0,
                             attention_dropout=0.0).provide().eval()
    def losses(rows, packed, plain_causal=False, batch=None):
        batch = batch or [make_row(r, S, tok.eod, packed) for r in rows]
        b = {k: torch.stack([r[k] for r in batch]) for k in batch[0]}
        mask = None if plain_causal or not packed else b["attention_mask"]
        with torch.no_grad():
            out = model(b["tokens"], b["position_ids"], mask, labels=b["labels"])
        # per sample: its trained tokens' losses, in order
        per = []
        for k, r in enumerate(rows):
            start = 0
            for ids, _ in r:
                n = len(ids) - 1
                m = b["loss_mask"][k, start:start + n] > 0
                per.append(out[k, start:start + n][m])
                start += n
        return per
    padded = losses(rows_of(samples, S, False), False)
    packed_rows = rows_of(samples, S, True)
    packed = losses(packed_rows, True)
    leaky = losses(packed_rows, True, plain_causal=True)
    # dataloader_type=batch: micro-batches of 3 rows, each padded to its own longest row
    rows = rows_of(samples, S, False)
    per_batch = SFTDataset(rows, len(rows), S, tok.eod, False, 0, shuffle=False, per_batch=True)
    by_batch, widths = [], []
    for first in range(0, len(rows), 3):
        micro = per_batch.__getitems__(list(range(first, first + 3)))
        widths.append(micro[0]["tokens"].shape[0])
        by_batch += losses(rows[first:first + 3], False, batch=micro)
    print(json.dumps({
        "batch_widths": widths, "longest": [max(len(r[0][0]) - 1 for r in rows[f:f + 3]) for f in range(0, len(rows), 3)],
        "batch_diff": max(float((a - b).abs().max()) for a, b in zip(padded, by_batch)),
        "batch_samples": len(by_batch),
        "rows": len(packed_rows), "samples": len(samples), "tokens": sum(len(p) for p in padded),
        "max_diff": max(float((a - b).abs().max()) for a, b in zip(padded, packed)),
        "leaky_diff": max(float((a - b).abs().max()) for a, b in zip(padded, leaky)),
    }))
""")


@pytest.fixture(scope="module")
def compared() -> dict:
    """Per-token losses of the same 9 shipped samples padded, packed and batch-padded (one
    subprocess: a standalone provide() sets up a process-wide single-rank runtime)."""
    lines = SHIPPED.read_text().splitlines()[:9]
    proc = subprocess.run([sys.executable, "-c", _COMPARE, *lines], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_packed_and_padded_batches_give_the_same_per_token_loss(compared):
    result = compared
    assert result["rows"] < result["samples"] and result["tokens"] > 20  # several samples share a row
    assert result["max_diff"] < 1e-5, result
    assert result["leaky_diff"] > 1e-3, result  # without the block mask, packing would change the losses


def test_dataloader_type_batch_pads_to_the_longest_sample_with_the_same_per_token_loss(compared):
    assert compared["batch_samples"] == compared["samples"] == 9
    assert compared["batch_diff"] < 1e-5, compared
    # each micro-batch is as wide as its longest sample rounded up to 8, shorter than seq_length
    assert compared["batch_widths"] == [min(64, -(-n // 8) * 8) for n in compared["longest"]], compared
    assert sum(compared["batch_widths"]) < 3 * 64, compared


def test_dataloader_type_batch_reaches_the_training_loader(tmp_path):
    """The flag's path: build_datasets -> the DataLoader with its batch sampler -> short batches."""
    from megatron_bridge_cli.data.datasets import _loader

    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"{i}:", "response": "x" * i} for i in range(1, 21)])
    batches = {}
    for kind in ("single", "batch"):
        final = prepare(sft_cfg(eval_iters=0, data_path=[str(path)], split="100,0,0", dataloader_type=kind), 1)
        batches[kind] = next(_loader(build_datasets(final, BYTES, needs_data=True)[0], 0, 2, 0, 1, False, 0))
    single, short = batches["single"], batches["batch"]
    longest = int(single["loss_mask"].nonzero()[:, 1].max()) + 1  # the last trained position (eod) + 1
    assert single["tokens"].shape == (2, 64)
    assert short["tokens"].shape == (2, -(-longest // 8) * 8) and longest <= 40, (short["tokens"].shape, longest)
    width = short["tokens"].shape[1]
    for key in ("tokens", "labels", "loss_mask", "position_ids"):  # the same rows, less padding
        assert short[key].equal(single[key][:, :width]), key
    assert single["loss_mask"][:, width:].sum() == 0


def test_dataloader_type_batch_is_refused_with_pipelining_or_packing(tmp_path):
    path = str(write_jsonl(tmp_path / "d.jsonl", PAIRS * 5))
    cfg = sft_cfg(data_path=[path], split="80,20,0", dataloader_type="batch", packed=True)
    cfg.model.pipeline_model_parallel_size = 2
    problems = " ".join(data_problems(cfg, finalized=False))
    assert "--dataset.dataloader_type=batch: pipeline stages" in problems, problems
    assert "--dataset.dataloader_type=batch pads micro-batches of single samples" in problems, problems
    cfg = sft_cfg(data_path=[path], split="80,20,0", dataloader_type="bach")  # a Python override's typo
    assert "--dataset.dataloader_type='bach': expected one of: single, batch" in data_problems(cfg, finalized=False)


# --------------------------------------------------------------------------- epochs
def test_num_epochs_sets_the_run_length_and_each_sample_is_seen_once_per_epoch(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"{i}:", "response": f"r{i}"} for i in range(20)])
    cfg = sft_cfg(eval_iters=0, data_path=[str(path)], split="90,10,0", num_epochs=2)  # 18 training lines
    cfg.train.eval_iters = 0
    final = prepare(cfg, 1)
    assert cfg.train.train_iters == 10  # the user's container is left alone
    assert final.train.train_iters == -(-2 * 18 // 8) == 5 and final.train.train_samples is None
    train = build_datasets(final, BYTES, needs_data=True)[0]
    seen = [train.row_index(i) for i in range(2 * 18)]
    assert sorted(seen) == sorted(list(range(18)) * 2)  # every training sample twice in the first 36
    cfg.dataset.packed = True  # an epoch is a pass over the rows, here packs of several samples
    packed = prepare(cfg, 1)
    rows = len(build_datasets(packed, BYTES, needs_data=True)[0].rows)
    assert rows < 18 and packed.train.train_iters == -(-2 * rows // 8)
    assert _problems(sft_cfg(data_path=[str(path)], split="90,10,0", num_epochs=0))[0].startswith(
        "--dataset.num_epochs=0")

def test_training_split_cycles_epochs_with_a_seeded_shuffle_per_epoch(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"{i}:", "response": f"r{i}"} for i in range(20)])
    cfg = sft_cfg(eval_iters=0, data_path=[str(path)], split="100,0,0")
    final = prepare(cfg, 1)
    train = build_datasets(final, BYTES, needs_data=True)[0]
    rows = len(train.rows)
    assert rows == 20 and len(train) == 10 * 8  # train_iters x global batch: 4 epochs of 20
    epochs = [[train.row_index(e * rows + k) for k in range(rows)] for e in range(4)]
    assert all(sorted(e) == list(range(rows)) for e in epochs)  # every epoch is each row once
    assert len({tuple(e) for e in epochs}) == 4  # and in its own order
    assert train.row_index(0) == build_datasets(final, BYTES, needs_data=True)[0].row_index(0)
    cfg.dataset.random_seed = 7
    other = build_datasets(prepare(cfg, 1), BYTES, needs_data=True)[0]
    assert [other.row_index(k) for k in range(rows)] != epochs[0]


# --------------------------------------------------------------------------- pre-flight
def _problems(cfg) -> list[str]:
    with pytest.raises(ValidationError) as e:
        prepare(cfg, 1)
    return [p for p in e.value.problems]


def test_preflight_names_the_first_bad_line_and_missing_files(tmp_path):
    good = {"prompt": "a", "response": "b"}
    bad_key = write_jsonl(tmp_path / "k.jsonl", [good, good, {"prompt": "a", "answer": "b"}, {"x": 1}])
    not_json = write_jsonl(tmp_path / "j.jsonl", [good, "{oops", good])
    problems = _problems(sft_cfg(train_data_path=[str(bad_key)], valid_data_path=[str(not_json)]))
    assert any(re.search(r"train_data_path: .*k\.jsonl line 3 has neither 'messages' nor 'response'", p)
               for p in problems), problems
    assert any(re.search(r"valid_data_path: .*j\.jsonl line 2 is not JSON", p) for p in problems), problems
    # configurable keys make the same file valid
    cfg = sft_cfg(data_path=[str(write_jsonl(tmp_path / "q.jsonl", [{"q": "a", "answer": "b"}] * 10))],
                  prompt_key="q", response_key="answer", split="80,20,0")
    assert data_problems(cfg, finalized=False) == []
    chat = write_jsonl(tmp_path / "c.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}])
    assert "line 1 'messages' has no 'assistant' message" in " ".join(_problems(sft_cfg(data_path=[str(chat)])))
    missing = _problems(sft_cfg(data_path=[str(tmp_path / "nope.jsonl")]))
    assert any("nope.jsonl not found" in p for p in missing), missing
    assert any("--dataset=sft needs JSONL files" in p for p in _problems(sft_cfg()))
    empty_valid = _problems(sft_cfg(data_path=[str(write_jsonl(tmp_path / "s.jsonl", [good] * 5))]))  # 969,30,1
    assert any("leaves the validation split" in p and "--dataset.split" in p for p in empty_valid), empty_valid
    nothing = _problems(sft_cfg(data_path=[str(SHIPPED)], split="0,0,0"))
    assert any("--dataset.split='0,0,0' gives no split a share" in p for p in nothing), nothing


def test_cli_refuses_a_bad_file_with_exit_code_2(tmp_path, capsys):
    from megatron_bridge_cli.cli.main import main

    bad = write_jsonl(tmp_path / "b.jsonl", [{"prompt": "a", "response": "b"}, {"prompt": 3, "response": "b"}])
    rc = main(["--dataset=sft", f"--dataset.data_path={bad}", "--train.train_iters=2"])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    assert "b.jsonl line 2 'prompt' must be text" in err and "Traceback" not in err
