"""SentencePiece, GPT-2 BPE and tiktoken tokenizers on files this test builds itself.

Each is trained here on a few KB of the repo's own sources: a SentencePiece BPE model with
sentencepiece's trainer, a GPT-2 style vocab.json + merges.txt with the `tokenizers` BPE trainer
(byte-level), and a tiktoken ranks file written from those same merges. Then: text -> ids ->
text, end-of-document, vocabulary size, preprocessing with scripts/preprocess_data.py, --dry-run
and a short training run, and the user mistakes (missing file, a hub name, a broken file, a
model vocabulary too small for the tokenizer) exit 2 naming the flag.
"""

from __future__ import annotations

import base64
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy
import pytest
import sentencepiece as spm  # the test extra brings these three: a missing one fails, never skips
import tiktoken  # noqa: F401
import tokenizers as hf_tokenizers
from megatron.core.datasets.indexed_dataset import IndexedDataset

from megatron_bridge_cli.cli.main import main
from megatron_bridge_cli.config.tokenizer import TokenizerConfig
from megatron_bridge_cli.data.tokenizers import build_tokenizer

REPO = Path(__file__).resolve().parents[2]
SP_SIZE, BPE_SIZE = 500, 400
SAMPLE = 'Hello wörld: "tokens" 123, ünïcode 日本語\n\tdef f(x):  return x  # ok'


def _gpt2_byte_decoder() -> dict[str, int]:
    """GPT-2's printable stand-ins for bytes in vocab.json/merges.txt (Ġ is a space), reversed."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, n = {}, 0
    for b in range(256):
        if b in keep:
            chars[chr(b)] = b
        else:
            chars[chr(256 + n)] = b
            n += 1
    return chars


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("tokenizer_files")
    text = "".join(p.read_text() for p in sorted((REPO / "megatron_bridge_cli" / "config").glob("*.py"))[:6])
    (d / "corpus.txt").write_text(text)
    # SentencePiece as Llama's: no normalization, whitespace kept, unknown characters as bytes
    spm.SentencePieceTrainer.train(input=str(d / "corpus.txt"), model_prefix=str(d / "sp"), vocab_size=SP_SIZE,
                                   model_type="bpe", byte_fallback=True, normalization_rule_name="identity",
                                   remove_extra_whitespaces=False, minloglevel=2)
    # GPT-2 style byte-level BPE
    bpe = hf_tokenizers.Tokenizer(hf_tokenizers.models.BPE())
    bpe.pre_tokenizer = hf_tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = hf_tokenizers.trainers.BpeTrainer(vocab_size=BPE_SIZE, special_tokens=["<|endoftext|>"], show_progress=False,
                                                initial_alphabet=hf_tokenizers.pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator([text], trainer)
    bpe.model.save(str(d))  # vocab.json + merges.txt
    # tiktoken ranks from the same merges: every byte, then each merged token in merge order
    byte_of = _gpt2_byte_decoder()
    merges = [line.split() for line in (d / "merges.txt").read_text(encoding="utf-8").splitlines()[1:] if line.strip()]
    ranks = {bytes([b]): b for b in range(256)}
    for a, b in merges:
        ranks[bytes(byte_of[c] for c in a + b)] = len(ranks)
    (d / "bpe.tiktoken").write_bytes(b"".join(base64.b64encode(t) + b" %d\n" % r for t, r in ranks.items()))
    return {"dir": d, "text": text, "ranks": ranks, "byte_of": byte_of}


def flags(kind: str, files: dict) -> list[str]:
    d = files["dir"]
    return {
        "SentencePieceTokenizer": [f"--tokenizer.tokenizer_model={d / 'sp.model'}"],
        "GPT2BPETokenizer": [f"--tokenizer.vocab_file={d / 'vocab.json'}", f"--tokenizer.merge_file={d / 'merges.txt'}"],
        "TikTokenizer": [f"--tokenizer.tokenizer_model={d / 'bpe.tiktoken'}", "--tokenizer.tiktoken_pattern=r50k"],
    }[kind]


def config(kind: str, files: dict, **extra) -> TokenizerConfig:
    fields = {k.split(".")[1]: v for k, v in (f[2:].split("=", 1) for f in flags(kind, files))}
    return TokenizerConfig(tokenizer_type=kind, **(fields | extra))


KINDS = ["SentencePieceTokenizer", "GPT2BPETokenizer", "TikTokenizer"]


def expected(kind: str, files: dict) -> tuple[int, str]:
    """(vocabulary size, name of the end-of-document token) each format defines."""
    return {"SentencePieceTokenizer": (SP_SIZE, "</s>"), "GPT2BPETokenizer": (BPE_SIZE, "<|endoftext|>"),
            "TikTokenizer": (len(files["ranks"]) + 1, "<|endoftext|>")}[kind]


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_eod_and_vocabulary(kind, files):
    tok = build_tokenizer(config(kind, files))
    size, eod_name = expected(kind, files)
    assert tok.vocab_size == size and len(tok.vocab) == len(tok.inv_vocab) == size
    assert tok.inv_vocab[tok.eod] == eod_name and tok.vocab[eod_name] == tok.eod
    for text in (files["text"], SAMPLE):
        ids = tok.tokenize(text)
        assert all(isinstance(i, int) and 0 <= i < size for i in ids) and tok.eod not in ids
        assert tok.detokenize(ids) == text
        assert tok.detokenize(ids + [tok.eod]) == text  # a document end is not text
    assert len(tok.tokenize(files["text"])) < len(files["text"]) / 1.5  # BPE merged something


def test_gpt2_bpe_and_tiktoken_split_alike_on_the_same_merges(files):
    """Two independent implementations (HF `tokenizers`, tiktoken) of one byte-level BPE, the
    tiktoken one with GPT-2's split pattern: the same pieces."""
    gpt2, tik = build_tokenizer(config("GPT2BPETokenizer", files)), build_tokenizer(config("TikTokenizer", files))
    byte_of, inv = files["byte_of"], {r: t for t, r in files["ranks"].items()}
    for text in (files["text"], SAMPLE):
        gpt2_pieces = [bytes(byte_of[c] for c in gpt2.inv_vocab[i]) for i in gpt2.tokenize(text)]
        assert gpt2_pieces == [inv[i] for i in tik.tokenize(text)]
    cl100k = build_tokenizer(config("TikTokenizer", files, tiktoken_pattern="cl100k"))
    assert cl100k.tokenize(files["text"]) != tik.tokenize(files["text"])  # the pattern is applied
    assert cl100k.detokenize(cl100k.tokenize(files["text"])) == files["text"]


def test_t5_sentinels_follow_the_vocabulary(files):
    tok = build_tokenizer(config("SentencePieceTokenizer", files, vocab_extra_ids=4))
    sp = spm.SentencePieceProcessor(model_file=str(files["dir"] / "sp.model"))
    assert tok.bos == sp.bos_id() and tok.eos == tok.eod == sp.eos_id()  # the model's own
    assert tok.mask == SP_SIZE and tok.additional_special_tokens_ids == [SP_SIZE + 1 + i for i in range(4)]
    assert tok.vocab_size == SP_SIZE + 5


def preprocess(kind: str, files: dict, docs: list[str], prefix: Path) -> int:
    """scripts/preprocess_data.py on ``docs`` (as JSONL) with this tokenizer's files."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from preprocess_data import main as preprocess_main
    finally:
        sys.path.pop(0)
    (prefix.parent / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
    script_flags = [re.sub(r"--tokenizer\.(\w+)", lambda m: "--" + m.group(1).replace("_", "-"), f)
                    for f in flags(kind, files)]  # --tokenizer.vocab_file -> --vocab-file
    return preprocess_main(["--input", str(prefix.parent / "docs.jsonl"), "--output-prefix", str(prefix),
                            "--tokenizer-type", kind, *script_flags])


@pytest.mark.parametrize("kind", KINDS)
def test_preprocess_and_dry_run(kind, files, tmp_path, capsys):
    docs = [files["text"][:3000], SAMPLE, "x"]
    assert preprocess(kind, files, docs, tmp_path / "corpus") == 0, capsys.readouterr().err
    tok = build_tokenizer(config(kind, files))
    data = IndexedDataset(str(tmp_path / "corpus"))
    assert len(data) == 3 and data[0].dtype == numpy.uint16
    for i, text in enumerate(docs):
        assert data[i].tolist() == tok.tokenize(text) + [tok.eod]

    size = expected(kind, files)[0]
    for vocab in ([], [f"--model.vocab_size={size + 300}"]):  # the tokenizer's, or a larger one set explicitly
        capsys.readouterr()
        rc = main(["--dry-run", f"--tokenizer.tokenizer_type={kind}", *flags(kind, files), *vocab,
                   f"--dataset.data_path={tmp_path / 'corpus'}", "--dataset.split=1,1,1"])
        out, err = capsys.readouterr()
        assert rc == 0, err
        rows = size + 300 if vocab else size
        padded = math.ceil(rows / 128) * 128  # make_vocab_size_divisible_by (128) x TP (1)
        assert f"vocab {rows} -> {padded} padded" in out


def dry_run(capsys, *argv) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["--dry-run", *argv])
    return rc, capsys.readouterr().err


def test_model_vocabulary_must_hold_the_tokenizer(files, capsys):
    rc, err = dry_run(capsys, "--tokenizer.tokenizer_type=SentencePieceTokenizer",
                      *flags("SentencePieceTokenizer", files), "--model.vocab_size=100")
    assert rc == 2 and "Traceback" not in err
    assert (f"--model.vocab_size 100 < the tokenizer's {SP_SIZE} tokens (--tokenizer.tokenizer_type="
            f"SentencePieceTokenizer --tokenizer.tokenizer_model={files['dir'] / 'sp.model'})") in err
    # T5's sentinels count: 500 pieces + <mask> + 8 sentinels (the model has <s> of its own)
    rc, err = dry_run(capsys, "--tokenizer.tokenizer_type=SentencePieceTokenizer", "--tokenizer.vocab_extra_ids=8",
                      *flags("SentencePieceTokenizer", files), f"--model.vocab_size={SP_SIZE}")
    assert rc == 2 and f"the tokenizer's {SP_SIZE + 9} tokens" in err and "--tokenizer.vocab_extra_ids=8" in err


def test_missing_and_broken_files_name_their_flag(files, tmp_path, capsys):
    rc, err = dry_run(capsys, "--tokenizer.tokenizer_type=SentencePieceTokenizer",
                      f"--tokenizer.tokenizer_model={tmp_path / 'nope.model'}")
    assert rc == 2 and f"--tokenizer.tokenizer_model={tmp_path / 'nope.model'}: the file does not exist" in err
    rc, err = dry_run(capsys, "--tokenizer.tokenizer_type=GPT2BPETokenizer", f"--tokenizer.tokenizer_model={tmp_path}")
    assert rc == 2 and "2 problem(s)" in err and "needs --tokenizer.vocab_file" in err
    assert "needs --tokenizer.merge_file" in err and f"--tokenizer.vocab_file={tmp_path / 'vocab.json'}" in err
    rc, err = dry_run(capsys, "--tokenizer.tokenizer_type=TikTokenizer", "--tokenizer.tokenizer_model=cl100k_base")
    assert rc == 2 and "encodings are not fetched by name" in err and "cl100k_base.tiktoken" in err

    (tmp_path / "broken.model").write_text("not a model")
    (tmp_path / "broken.tiktoken").write_text("aGVsbG8= 0\nthis line is wrong\n")
    (tmp_path / "bytes.tiktoken").write_text("aGVsbG8= 0\n")
    (tmp_path / "list.json").write_text("[1, 2]")
    d = files["dir"]
    for argv, message in [
        (["SentencePieceTokenizer", f"--tokenizer.tokenizer_model={tmp_path / 'broken.model'}"],
         "is not a SentencePiece model"),
        (["TikTokenizer", f"--tokenizer.tokenizer_model={tmp_path / 'broken.tiktoken'}"],
         "is not a tiktoken BPE file: line 2"),
        (["TikTokenizer", f"--tokenizer.tokenizer_model={tmp_path / 'bytes.tiktoken'}"],
         "256 single bytes have no rank"),
        (["TikTokenizer", f"--tokenizer.tokenizer_model={d / 'bpe.tiktoken'}", "--tokenizer.tiktoken_pattern=(oops"],
         "--tokenizer.tiktoken_pattern='(oops' is neither one of r50k, cl100k, o200k nor a valid regular expression"),
        (["GPT2BPETokenizer", f"--tokenizer.vocab_file={tmp_path / 'list.json'}", f"--tokenizer.merge_file={d / 'merges.txt'}"],
         "is not a GPT-2 vocab.json"),
        (["GPT2BPETokenizer", f"--tokenizer.vocab_file={d / 'vocab.json'}", f"--tokenizer.merge_file={d / 'sp.vocab'}"],
         "does not fit --tokenizer.vocab_file"),
    ]:
        rc, err = dry_run(capsys, f"--tokenizer.tokenizer_type={argv[0]}", *argv[1:], "--model.vocab_size=512")
        assert rc == 2 and message in err and "Traceback" not in err, (argv, err)


def test_training_reads_data_made_with_a_file_tokenizer(files, tmp_path):
    """The training loop takes the tokenizer unchanged: a short run on tiktoken-preprocessed data."""
    text = files["text"]
    docs = [text[i:i + 1000] for i in range(0, len(text), 1000)]  # ~30 documents for a 1,1,1 split
    assert preprocess("TikTokenizer", files, docs, tmp_path / "corpus") == 0
    run = subprocess.run([sys.executable, "-m", "megatron_bridge_cli", "--tokenizer.tokenizer_type=TikTokenizer",
                          *flags("TikTokenizer", files),  # --model.vocab_size from the tokenizer
                          f"--dataset.data_path={tmp_path / 'corpus'}", "--dataset.split=1,1,1",
                          "--train.train_iters=3", "--train.eval_interval=3", "--train.eval_iters=1",
                          "--train.global_batch_size=4", "--train.micro_batch_size=2", "--model.num_layers=1",
                          "--model.hidden_size=32", "--model.num_attention_heads=2", "--model.ffn_hidden_size=64",
                          "--model.seq_length=32", "--scheduler.lr_warmup_iters=1", "--logger.log_interval=1"],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    losses = [float(x) for x in re.findall(r"\| lm loss: (\S+) \|", run.stdout)]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
