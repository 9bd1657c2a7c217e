"""HuggingFace checkpoints in and out (issue 13), proven numerically.

For each family a tiny random model is made by ``transformers`` here (2 layers, hidden 64, a
96-token vocabulary, the family's features on: Llama 3.1 RoPE scaling and GQA, Mistral's
sliding window, Qwen2's QKV biases, Qwen3's QK-norm with tied embeddings and a head_dim that
is not hidden/heads, GPT-2's learned positions, LayerNorm biases and Conv1D weights), its
weights perturbed so that biases and norms are not at their init, and saved as safetensors.

One module fixture runs the jobs once; the assertions share them:
* hf_worker at TP=1 (1 process), TP=2 and PP=2 (2 processes each, gloo): megatron-core
  models built as training builds them, weights streamed from the HF folder, logits recorded;
  at TP=1 the imported model is also exported back to an HF folder;
* ``bridge-train --model=hf:DIR --checkpoint.pretrained_checkpoint=DIR`` trains Qwen3 for 3
  iterations at TP=2 and writes ``--checkpoint.save_hf``; hf_worker then records the logits of
  the trained checkpoint (bridge-train's model) at TP=1.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.integration.harness import JOB_TIMEOUT, PYTHON, ROOT, assert_ok, env
from tests.integration.hf_worker import tokens_for

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

WORKER = Path(__file__).with_name("hf_worker.py")
SEQ = 32
VOCAB = 96
COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=256)
FAMILIES = {
    "llama": lambda: transformers.LlamaConfig(
        **COMMON, rope_theta=500000.0, rope_scaling={
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192}),
    "mistral": lambda: transformers.MistralConfig(**COMMON, sliding_window=8, rope_theta=1e6),
    "qwen2": lambda: transformers.Qwen2Config(**COMMON, rope_theta=1e6),
    "qwen3": lambda: transformers.Qwen3Config(**COMMON, head_dim=32, tie_word_embeddings=True),
    "gpt2": lambda: transformers.GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=SEQ),
}
LAYOUTS = {"tp1": (1, 1, 1), "tp2": (2, 2, 1), "pp2": (2, 1, 2)}  # nproc, TP, PP


def make_family(name: str, folder: Path):
    torch.manual_seed(sum(map(ord, name)))
    model = transformers.AutoModelForCausalLM.from_config(FAMILIES[name]()).float().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # norms and biases away from 1 and 0
    model.save_pretrained(folder)
    with torch.no_grad():
        ref = model(tokens_for(VOCAB, SEQ)).logits
    return ref


def worker(spec: dict, nproc: int, tmp: Path, name: str) -> str:
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(spec))
    launch = [PYTHON] if nproc == 1 else [PYTHON, "-m", "torch.distributed.run", "--standalone",
                                          f"--nproc-per-node={nproc}"]
    proc = subprocess.run(["timeout", "--kill-after=10", str(JOB_TIMEOUT), *launch, str(WORKER), str(path)],
                          cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return assert_ok(proc)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hf")
    refs = {name: make_family(name, tmp / name) for name in FAMILIES}
    trained, exported = tmp / "trained", tmp / "trained_hf"
    proc = subprocess.run(
        ["timeout", "--kill-after=10", str(JOB_TIMEOUT), PYTHON, "-m", "megatron_bridge_cli", "--nproc-per-node", "2",
         f"--model=hf:{tmp / 'qwen3'}", f"--checkpoint.pretrained_checkpoint={tmp / 'qwen3'}",
         "--model.tensor_model_parallel_size=2", f"--model.seq_length={SEQ}", "--tokenizer.tokenizer_type=NullTokenizer",
         "--train.train_iters=3", "--train.global_batch_size=2", "--train.micro_batch_size=1", "--train.eval_iters=0",
         "--optimizer.lr=1e-2", "--scheduler.lr_warmup_iters=0", f"--checkpoint.save={trained}",
         f"--checkpoint.save_hf={exported}"],
        cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    train_log = assert_ok(proc)
    logs = {}
    for layout, (nproc, tp, pp) in LAYOUTS.items():
        cases = [{"arch": str(tmp / n), "weights": str(tmp / n), "logits": str(tmp / f"{n}_{layout}.pt")}
                 for n in FAMILIES]
        if layout == "tp1":
            for case, n in zip(cases, FAMILIES):
                case["export"] = str(tmp / f"{n}_roundtrip")
            cases.append({"arch": str(tmp / "qwen3"), "weights": str(trained), "logits": str(tmp / "trained.pt")})
        logs[layout] = worker({"tp": tp, "pp": pp, "seq": SEQ, "cases": cases}, nproc, tmp, layout)
    return {"tmp": tmp, "refs": refs, "train_log": train_log, "logs": logs, "exported": exported}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_imported_logits_equal_transformers(runs, family, layout):
    """megatron-core's logits on the imported weights equal the HF model's (fp32, <= 1e-4)."""
    ours = torch.load(runs["tmp"] / f"{family}_{layout}.pt", weights_only=True)
    ref = runs["refs"][family].transpose(0, 1) if ours.shape[0] == SEQ else runs["refs"][family]
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    diff = (ours - ref).abs().max().item()
    assert diff <= 1e-4, f"{family} at {layout}: max |logit difference| {diff:.3g}"
    assert ref.abs().max().item() > 0.1  # the comparison is not between two near-zero tensors


@pytest.mark.parametrize("family", list(FAMILIES))
def test_export_of_import_is_bitwise_equal(runs, family):
    """Import then export gives back every HF tensor bit for bit, and nothing else."""
    original, roundtrip = runs["tmp"] / family, runs["tmp"] / f"{family}_roundtrip"
    a = _tensors(original)
    b = _tensors(roundtrip)
    assert sorted(a) == sorted(b)
    unequal = [k for k in a if not torch.equal(a[k], b[k])]
    assert not unequal, f"{family}: {unequal[:5]}"
    index = json.loads((roundtrip / "model.safetensors.index.json").read_text())
    assert {k.removeprefix("transformer.") for k in index["weight_map"]} == set(b)


def _tensors(folder: Path) -> dict:
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(safetensors_torch.load_file(str(f)))
    return {k.removeprefix("transformer."): v for k, v in out.items()}


def test_trained_then_exported_model_loads_in_transformers(runs):
    """--checkpoint.save_hf after a TP=2 run: transformers loads it and its logits equal the
    ones bridge-train's model (the trained checkpoint, loaded at TP=1) produces."""
    assert "loaded HuggingFace weights from" in runs["train_log"]
    model = transformers.AutoModelForCausalLM.from_pretrained(runs["exported"]).float().eval()
    assert type(model).__name__ == "Qwen3ForCausalLM"
    with torch.no_grad():
        theirs = model(tokens_for(VOCAB, SEQ)).logits
    ours = torch.load(runs["tmp"] / "trained.pt", weights_only=True)
    assert (ours - theirs).abs().max().item() <= 1e-4
    # training moved the weights: this is not the imported model coming back unchanged
    assert (theirs - runs["refs"]["qwen3"]).abs().max().item() > 1e-3

