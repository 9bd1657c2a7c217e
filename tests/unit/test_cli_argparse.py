"""The argparse front end: the parser's structure, the embedding API, dotlist overrides,
shell completion, the schema cache, and help/completion served without importing torch."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from megatron_bridge_cli.cli import add_config_arguments, apply_arguments
from megatron_bridge_cli.cli import cache
from megatron_bridge_cli.cli.main import main
from megatron_bridge_cli.cli.parser import build_parser, parse_command_line
from megatron_bridge_cli.cli.layering import resolve
from megatron_bridge_cli.errors import ConfigError
from megatron_bridge_cli.recipes import DEFAULT_RECIPE, RECIPES

REPO = Path(__file__).resolve().parents[2]


def build(*argv: str):
    g, overrides = parse_command_line(list(argv))
    return resolve(g.recipe, g.config_files, overrides)


# ----------------------------------------------------------------------------- the parser
def test_one_argparse_parser_one_group_per_section_one_argument_per_field():
    parser = build_parser()
    assert isinstance(parser, argparse.ArgumentParser) and parser.allow_abbrev is False
    groups = {g.title: g for g in parser._action_groups}
    assert {"model", "train", "optimizer", "peft", "model.mtp_loss_scaling_factor"} - set(groups) \
        == {"model.mtp_loss_scaling_factor"}  # sections only, no group per field
    assert groups["model"].description.startswith("megatron-core GPTModel: a TransformerConfig")
    assert groups["peft"].description.startswith("Low-rank adapters")  # off: its first kind's class
    layers = next(a for a in groups["model"]._group_actions if a.dest == "model.num_layers")
    assert layers.option_strings == ["--model.num_layers", "--model.num-layers"]
    assert layers.metavar == "INT" and "Number of transformer layers" in layers.help
    bf16 = [a for a in groups["model"]._group_actions if a.dest == "model.bf16"]
    assert [a.option_strings[0] for a in bf16] == ["--model.bf16", "--no-model.bf16"]
    assert "--model.num_layers" in parser.format_help()  # argparse's own help works (manpage tools)


def test_no_prefix_matching_and_one_paragraph_errors(capsys):
    assert main(["--model.num_lay=3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bridge-train: error: unknown flag --model.num_lay; did you mean --model.num_layers")
    assert "usage:" not in err and err.count("\n") == 1


def test_order_of_application_and_last_flag_wins():
    cfg = build("--peft=lora", "--peft.dim=8", "--model.num_layers=3", "--model.num_layers", "5")
    assert (type(cfg.peft).__name__, cfg.peft.dim, cfg.model.num_layers) == ("LoRAConfig", 8, 5)
    cfg = build("--peft=dora", "--peft.dim=4", "--peft=lora")
    assert type(cfg.peft).__name__ == "LoRAConfig" and cfg.peft.dim == 4  # carried over the switch


# ----------------------------------------------------------------------------- embedding
def test_a_user_parser_with_its_own_flags_and_a_prefix():
    cfg = RECIPES[DEFAULT_RECIPE]()
    parser = argparse.ArgumentParser(prog="my_train.py")
    parser.add_argument("--my-flag", type=int, default=1)
    parser.add_argument("--num_layers", help="the script's own flag: no clash thanks to the prefix")
    add_config_arguments(parser, cfg, prefix="bt.")
    args = parser.parse_args(["--my-flag", "7", "--bt.model.num_layers=3", "--num_layers", "x", "--bt.peft=lora",
                              "--bt.peft.dim", "8", "--no-bt.model.add_bias_linear", "--bt.optimizer.lr", "-3e-4"])
    assert args.my_flag == 7 and args.num_layers == "x"
    assert getattr(args, "model.num_layers") == "3"  # dest = the dotted path, value as typed
    apply_arguments(cfg, args)
    assert (cfg.model.num_layers, cfg.peft.dim, cfg.model.add_bias_linear, cfg.optimizer.lr) == (3, 8, False, -3e-4)
    assert {"model.num_layers", "peft", "peft.dim", "optimizer.lr"} <= cfg.explicit_paths
    with pytest.raises(ConfigError, match=r"--bt.model.num_layers: invalid value 'x': expected an integer"):
        apply_arguments(cfg, parser.parse_args(["--bt.model.num_layers=x"]))


# ----------------------------------------------------------------------------- dotlist overrides
def test_megatron_bridge_dotlist_overrides_are_flags():
    cfg = build("model.num_layers=3", "+train.train_iters=7", "--peft=lora", "peft.dim=8", "++optimizer.lr=1e-4")
    assert (cfg.model.num_layers, cfg.train.train_iters, cfg.peft.dim, cfg.optimizer.lr) == (3, 7, 8, 1e-4)
    assert build("--peft=lora", "~peft").peft is None
    assert build("--model.num_layers=3", "model.num_layers=4").model.num_layers == 4  # order kept across styles


@pytest.mark.parametrize("argv, message", [
    (["trian.train_iters=5"], "unknown override 'trian.train_iters' in 'trian.train_iters=5'; did you mean "
                              "train.train_iters?"),
    (["model.num_layer=5"], "unknown flag --model.num_layer; did you mean --model.num_layers"),
    (["model.num_layers=x"], "--model.num_layers: invalid value 'x': expected an integer"),
    (["stray"], "unexpected argument 'stray'"),
    (["--train.micro_batch_size", "2", "--model.num_layers", "3", "2"],
     "--model.num_layers takes one value, got 2: '3 2' (quote values with spaces)"),
    (["--dry-run", "2"], "unexpected argument '2'"),
    (["~peft=3"], "~KEY removes a value"),
])
def test_dotlist_mistakes(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


# ----------------------------------------------------------------------------- cache
def test_schema_cache_is_rebuilt_on_a_version_or_recipe_file_change(tmp_path, monkeypatch):
    monkeypatch.setenv("BRIDGE_TRAIN_CACHE_DIR", str(tmp_path / "cache"))
    recipe = tmp_path / "my_recipe.py"
    recipe.write_text(textwrap.dedent("""
        from megatron_bridge_cli.recipes import RECIPES

        def tiny():
            cfg = RECIPES["gpt_cpu_tiny"]()
            cfg.model.num_layers = 3
            return cfg
    """))
    spec = f"{recipe}:tiny"
    layers = lambda schema: next(f["value"] for f in schema["flags"] if f["path"] == "model.num_layers")
    assert cache.load_schema(spec) is None
    assert layers(cache.cached_schema(spec)) == "3"
    assert layers(cache.load_schema(spec)) == "3"  # stored
    recipe.write_text(recipe.read_text().replace("= 3", "= 5"))
    os.utime(recipe, ns=(recipe.stat().st_atime_ns, recipe.stat().st_mtime_ns + 10**9))
    assert cache.load_schema(spec) is None  # the file changed: stale
    assert layers(cache.cached_schema(spec)) == "5"
    assert cache.load_schema(spec) is not None
    monkeypatch.setattr(cache, "_version", lambda dist: "9.9" if dist == "megatron-core" else "1.0")
    assert cache.load_schema(spec) is None  # another megatron-core: stale


def test_an_unwritable_cache_only_costs_speed(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("BRIDGE_TRAIN_CACHE_DIR", str(blocker / "cache"))  # under a file: mkdir fails
    assert main(["--help", "peft"]) == 0
    assert "--peft.dim INT" in capsys.readouterr().out


# ----------------------------------------------------------------------------- no torch for help and completion
def _python(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=300)


def test_help_completion_and_flag_errors_import_neither_torch_nor_megatron():
    _python("from megatron_bridge_cli.cli.main import main; main(['--help'])")  # warm the cache
    probe = textwrap.dedent("""
        import sys
        from megatron_bridge_cli.cli.main import main
        rc = main({argv!r})
        heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'megatron', 'numpy', 'yaml'))
        print('HEAVY', heavy, 'RC', rc)
    """)
    for argv, rc in ((["--help"], 0), (["--help", "model"], 0), (["--list-recipes"], 0),
                     (["--model.num_layer=3"], 2), (["--recipe", "llama3_8b", "--help", "optimizer"], 0)):
        done = _python(probe.format(argv=argv))
        if argv[:2] == ["--recipe", "llama3_8b"]:  # a second recipe: its first use builds its schema
            done = _python(probe.format(argv=argv))
        assert f"HEAVY [] RC {rc}" in done.stdout, (argv, done.stdout[-500:], done.stderr[-2000:])


def _complete(line: str, tmp_path: Path, cwd: Path = REPO) -> list[str]:
    out = tmp_path / "completions"
    env = {**os.environ, "_ARGCOMPLETE": "1", "COMP_LINE": line, "COMP_POINT": str(len(line)),
           "_ARGCOMPLETE_STDOUT_FILENAME": str(out), "_ARGCOMPLETE_IFS": "\n",
           "_ARGCOMPLETE_SUPPRESS_SPACE": "1"}
    code = ("import sys, os\nfrom megatron_bridge_cli.cli.main import main\n"
            "heavy = lambda: [m for m in sys.modules if m.split('.')[0] in ('torch', 'megatron')]\n"
            "import atexit\nos._exit = (lambda f: lambda c: (print('HEAVY', heavy(), file=sys.stderr), f(c)))(os._exit)\n"
            "main(['ignored'])\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert "HEAVY []" in done.stderr, done.stderr[-2000:]
    return out.read_text().split("\n") if out.exists() else []


def test_completion_answers_partial_words(tmp_path):
    _complete("bridge-train --mod", tmp_path)  # the first request may build the cache
    words = _complete("bridge-train --model.num_la", tmp_path)
    assert "--model.num_layers" in words and "--model.num-layers" not in words
    assert all(w.startswith("--model.num_la") for w in words)
    assert set(_complete("bridge-train --model.bf16 ", tmp_path)) >= {"true", "false"}
    assert set(_complete("bridge-train --peft ", tmp_path)) >= {"lora", "dora", "null"}  # or a next flag
    assert "--peft.dim" in _complete("bridge-train --peft=lora --peft.d", tmp_path)
    assert set(_complete("bridge-train --model.attention_backend ", tmp_path)) >= {"flash", "local", "auto"}
    assert {"llama3_8b", "llama3_70b"} <= set(_complete("bridge-train --recipe llama3", tmp_path))
    (tmp_path / "run.yaml").write_text("train: {}\n")
    (tmp_path / "notes.txt").write_text("")
    files = _complete("bridge-train --config-file ", tmp_path, cwd=tmp_path)
    assert "run.yaml" in files and "notes.txt" not in files


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_script(shell, capsys):
    assert main(["--completion", shell]) == 0
    script = capsys.readouterr().out
    assert "bridge-train" in script and "_ARGCOMPLETE" in script
