"""--dry-run: exact parameter counts (checked against really built models), derived values, memory."""

from __future__ import annotations

import re

import pytest

from megatron_bridge_cli.cli import memory
from megatron_bridge_cli.cli.parser import parse_command_line
from megatron_bridge_cli.cli.layering import resolve
from megatron_bridge_cli.cli.main import main
from megatron_bridge_cli.config import finalize
from tests.parallel import single_rank_parallel_state


def build(*argv: str):
    g, options = parse_command_line(list(argv))
    return resolve(g.recipe, g.config_files, options)


# Pinned here so the expected figures do not move when the default recipe is retuned.
BATCH = ["--train.global_batch_size=16", "--train.micro_batch_size=4", "--train.train_iters=200",
         "--scheduler.lr_warmup_iters=20", "--tokenizer.tokenizer_type=ByteLevelTokenizer"]


def dry_run(capsys, *argv: str) -> str:
    rc = main(["--dry-run", *BATCH, *argv])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return out


def figure(out: str, label: str) -> int:
    return int(re.search(rf"^{label}: (\d+)", out, re.M).group(1))


def one_rank():
    """A real one-process gloo group and megatron-core parallel state (TP=PP=1) on CPU."""
    return single_rank_parallel_state()


def built_model_parameters(*argv: str, world_size: int = 1) -> list[tuple[int, bool]]:
    """Build the model these flags describe for real (CPU memory, TP=PP=1, vocab padded as for
    the configured TP): each parameter's size and whether megatron-core marked it as split
    across tensor-parallel ranks."""
    final = finalize(build(*BATCH, *argv), world_size)
    final.model.tensor_model_parallel_size = 1
    with one_rank():
        model = final.model.provide()
        return [(p.numel(), bool(getattr(p, "tensor_model_parallel", False))) for p in model.parameters()]


SMALL = [
    [],  # the default recipe: RoPE, tied embeddings, SwiGLU, RMSNorm
    ["--model.num_layers=3", "--model.hidden_size=64", "--model.ffn_hidden_size=100",
     "--model.position_embedding_type=learned_absolute", "--no-model.share_embeddings_and_output_weights",
     "--model.num_query_groups=2", "--model.add_bias_linear", "--model.normalization=LayerNorm",
     "--no-model.gated_linear_unit", "--model.activation_func=gelu"],
    ["--model=t5", "--model.num_layers=2", "--model.encoder_num_layers=3", "--model.hidden_size=64",
     "--model.num_attention_heads=4", "--model.layer_spec=local", "--model.seq_length=64",
     "--model.position_embedding_type=learned_absolute", "--dataset=t5", "--tokenizer.vocab_extra_ids=16"],
]


@pytest.mark.parametrize("flags", SMALL, ids=["default", "gpt-variant", "t5"])
def test_parameter_count_equals_a_really_built_model(flags, capsys):
    out = dry_run(capsys, *flags)
    assert figure(out, "parameters") == sum(n for n, _ in built_model_parameters(*flags))


def test_per_gpu_count_with_pipeline_split(capsys):
    """The printed figure is count_parameters' (which tests/integration/test_param_count_sharded.py
    proves equal to the shards megatron-core builds per pipeline stage), not arithmetic redone here."""
    from megatron_bridge_cli.training.param_count import count_parameters

    out = dry_run(capsys, "--world-size", "2", "--model.pipeline_model_parallel_size=2")
    final = finalize(build(*BATCH, "--model.pipeline_model_parallel_size=2"), 2)
    counted = count_parameters(final.model)
    assert (figure(out, "parameters"), figure(out, "parameters per GPU")) == (counted.total, counted.per_gpu_max)
    assert counted.total // 2 < counted.per_gpu_max < counted.total  # the stage with the (tied) embedding


def test_per_gpu_count_with_tensor_parallel(capsys):
    flags = ["--model.tensor_model_parallel_size=2"]
    out = dry_run(capsys, "--world-size", "2", *flags)
    built = built_model_parameters(*flags, world_size=2)
    assert figure(out, "parameters") == sum(n for n, _ in built)
    assert figure(out, "parameters per GPU") == sum(n // 2 if split else n for n, split in built)


def test_summary_shows_derived_values(capsys):
    out = dry_run(capsys, "--world-size", "2")
    assert "DP 2 = world size 2" in out
    assert "global 16 = micro 4 x DP 2 x 2 micro-batches" in out
    assert "200 iterations" in out and "warmup 320, decay 3,200" in out
    assert "vocab 257 -> 384 padded" in out
    for part in ("weights", "gradients", "optimizer state", "activations", "total"):
        assert re.search(rf"^  {part} +[\d.,]+ (GiB|MiB|KiB|B)\b", out, re.M), part


def test_world_size_comes_from_the_environment(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "0")
    assert "DP 4 = world size 4" in dry_run(capsys)
    assert "DP 2 = world size 2" in dry_run(capsys, "--world-size", "2")  # the flag wins
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.delenv("RANK")
    assert "= world size 8" in dry_run(capsys, "--nproc-per-node", "4", "--nnodes", "2",
                                       "--train.micro_batch_size=2")


def test_dry_run_shows_the_explicit_value_that_beat_a_preset(capsys, caplog):
    out = dry_run(capsys, "--model.params_dtype=fp32", "--mixed_precision=bf16_mixed")
    assert "params float32, bf16 true" in out
    assert "--model.params_dtype=torch.float32 (explicit) overrides" in caplog.text


# ----------------------------------------------------------------------------- memory formulas
def paper_config(tp: int = 1):
    cfg = build("--model.bf16", "--model.hidden_dropout=0.1", "--model.attention_dropout=0.1",
                "--no-model.gated_linear_unit", "--model.ffn_hidden_size=512", "--model.num_query_groups=null",
                f"--model.tensor_model_parallel_size={tp}")
    return finalize(cfg, tp)


@pytest.mark.parametrize("tp", [1, 2])
def test_activation_formula_reduces_to_korthikanti(tp):
    """f = 4h, MHA, no GLU, 16-bit, dropout: s b h (10 + 24/t + 5 a s / (h t)) per layer."""
    final = paper_config(tp)
    m, b = final.model, final.train.micro_batch_size
    s, h, a = m.seq_length, m.hidden_size, m.num_attention_heads
    per_layer, _ = memory._layer_activation_bytes(final, flash=False)
    assert per_layer == pytest.approx(s * b * h * (10 + 24 / tp + 5 * a * s / (h * tp)))
    m.sequence_parallel = True  # (needs TE to validate, so set on the finalized copy)
    per_layer, _ = memory._layer_activation_bytes(final, flash=False)
    assert per_layer == pytest.approx(s * b * h * (34 / tp + 5 * a * s / (h * tp)))
    per_layer, _ = memory._layer_activation_bytes(final, flash=True)
    assert per_layer == pytest.approx(s * b * h * 34 / tp)


def test_weights_gradients_optimizer_bytes_per_parameter():
    mixed = finalize(build("--mixed_precision=bf16_mixed"), 2)
    est = memory.estimate_memory(mixed, 1000)
    assert (est.weights, est.gradients, est.optimizer) == (2000, 4000, 12000)  # 18 B/param
    sharded = finalize(build("--mixed_precision=bf16_mixed", "--optimizer.use_distributed_optimizer",
                             "--ddp.use_distributed_optimizer"), 2)
    assert memory.estimate_memory(sharded, 1000).optimizer == 6000  # 12 B / DP 2
    fp32 = memory.estimate_memory(finalize(build(), 1), 1000)
    assert (fp32.weights, fp32.gradients, fp32.optimizer) == (4000, 4000, 8000)
