"""--help (overview, one section, everything, search) and --list-recipes."""

from __future__ import annotations

import re

import pytest

from megatron_bridge_cli.cli.main import main
from megatron_bridge_cli.recipes import DEFAULT_RECIPE, RECIPES


def run(capsys, *argv: str) -> str:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    assert rc == 0, err
    return out


def test_overview_lists_options_and_sections_not_hundreds_of_flags(capsys):
    out = run(capsys, "--help")
    assert out.startswith("usage: bridge-train [--recipe NAME | FILE.py[:FUNCTION] | FILE.yaml]")
    for option in ("--config-file FILE", "--print-config", "--dry-run", "--world-size N", "--list-recipes",
                   "--nproc-per-node N"):
        assert option in out
    assert re.search(r"^  model +\[GPTModelProvider, \d+ flags\] Model architecture", out, re.M)
    assert "Kinds: gpt, t5, mamba." in out
    assert re.search(r"^  peft +\[off, 8 flags\]", out, re.M)
    assert "--model.num_layers" not in out  # megatron-core's fields wait for --help model
    assert len(out.splitlines()) < 120
    assert run(capsys, "-h") == out


def test_section_help_shows_type_current_value_and_docstring(capsys):
    out = run(capsys, "--help", "model")
    layers = RECIPES[DEFAULT_RECIPE]().model.num_layers
    assert f"--model.num_layers INT  (current: {layers}; GPTModelProvider default: 0)" in out
    assert "Number of transformer layers in a transformer block." in out  # megatron-core's docstring
    assert "--model.bf16 BOOL | --no-model.bf16  (current: false)" in out
    assert "--model.params_dtype DTYPE  (current: float32)" in out
    assert "--model.activation_func CALLABLE  (current: silu; GPTModelProvider default: gelu)" in out
    assert "--model.window_size TUPLE[INT,INT]|null" in out
    assert "more flag(s) of other kinds (MambaModelProvider, T5ModelProvider)" in out
    assert "--train." not in out and "--optimizer." not in out


def test_section_help_reflects_the_command_line(capsys):
    other = sorted(set(RECIPES) - {DEFAULT_RECIPE})[0]
    assert "--model.num_layers INT  (current: 7;" in run(capsys, "--model.num_layers=7", "--help", "model")
    assert "(current: " in run(capsys, "--recipe", other, "--help", "train")
    out = run(capsys, "--help=peft")
    assert "off; switch on with --peft={lora,dora,null}" in out and "--peft.dim INT  (default: 32)" in out
    assert "--peft.dim INT  (current: 8; LoRAConfig default: 32)" in run(capsys, "--peft=lora", "--peft.dim=8",
                                                                          "--help", "peft")


def test_help_on_a_broken_command_line_still_helps(capsys):
    assert main(["--model.nope=1", "--help", "train"]) == 0
    out, err = capsys.readouterr()
    assert "--train.micro_batch_size" in out and "note: showing the default recipe's values" in err


def test_help_search_and_all(capsys):
    out = run(capsys, "--help", "lr_warmup")
    assert out.startswith("flags matching 'lr_warmup':")
    assert "--scheduler.lr_warmup_iters INT" in out and "--model." not in out
    everything = run(capsys, "--help", "all")
    assert "--model.num_layers" in everything and "--inprocess_restart.soft_timeout" in everything
    assert everything.count("\n  --") > 480


def test_list_recipes(capsys):
    out = run(capsys, "--list-recipes")
    assert out.startswith("built-in recipes")
    for name in RECIPES:
        assert re.search(rf"^[* ] {name} ", out, re.M)
    assert f"* {DEFAULT_RECIPE} " in out


def test_version(capsys):
    assert run(capsys, "--version").startswith("bridge-train 0.")


@pytest.mark.parametrize("topic", ["model", "optimizer", "ddp", "mixed_precision", "inprocess_restart"])
def test_every_flag_of_a_section_is_documented(topic, capsys):
    out = run(capsys, "--help", topic)
    assert "(undocumented)" not in out
