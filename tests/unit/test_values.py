"""One home for the value rules: the same YAML means the same values through every door
(ConfigContainer.from_yaml, --recipe FILE.yaml, --config-file), and flags agree with YAML."""

from __future__ import annotations

import pytest
import torch
import yaml

from megatron_bridge_cli import values
from megatron_bridge_cli.cli.layering import merge_config_file
from megatron_bridge_cli.cli.main import main
from megatron_bridge_cli.cli.recipe_loader import load_recipe
from megatron_bridge_cli.config import ConfigContainer
from megatron_bridge_cli.errors import ConfigError
from megatron_bridge_cli.recipes import DEFAULT_RECIPE, RECIPES

# Loosely typed YAML, as people write it: a dtype alias, a quoted int, PyYAML's string 1e-4.
EDITS = {("model", "params_dtype"): "bf16", ("model", "hidden_size"): "64", ("optimizer", "lr"): "1e-4",
         ("optimizer", "adam_eps"): "1e-8", ("optimizer", "min_lr"): 0, ("model", "window_size"): [4, 4]}
EXPECTED = {("model", "params_dtype"): torch.bfloat16, ("model", "hidden_size"): 64, ("optimizer", "lr"): 1e-4,
            ("optimizer", "adam_eps"): 1e-8, ("optimizer", "min_lr"): 0.0, ("model", "window_size"): (4, 4)}


@pytest.fixture
def loose_yaml(tmp_path):
    text = RECIPES[DEFAULT_RECIPE]().to_yaml()
    data = yaml.safe_load(text)
    for (section, key), value in EDITS.items():
        data[section][key] = value
    text = yaml.safe_dump(data, sort_keys=False).replace("lr: '1e-4'", "lr: 1e-4").replace("adam_eps: '1e-8'",
                                                                                          "adam_eps: 1e-8")
    assert "lr: 1e-4" in text and yaml.safe_load(text)["optimizer"]["lr"] == "1e-4"  # PyYAML: a string
    path = tmp_path / "full.yaml"
    path.write_text(text)
    return path


def _values(cfg) -> dict:
    return {(s, k): getattr(getattr(cfg, s), k) for s, k in EXPECTED}


def test_every_door_gives_the_same_typed_values(loose_yaml):
    via_from_yaml = ConfigContainer.from_yaml(str(loose_yaml))
    via_recipe = load_recipe(str(loose_yaml))
    via_config_file = RECIPES[DEFAULT_RECIPE]()
    merge_config_file(via_config_file, str(loose_yaml))
    for cfg in (via_from_yaml, via_recipe, via_config_file):
        got = _values(cfg)
        assert got == EXPECTED
        assert type(got[("model", "hidden_size")]) is int and type(got[("optimizer", "lr")]) is float


def test_a_loose_yaml_recipe_dry_runs(loose_yaml, capsys):
    # Before one home for the rules: "--model: unsupported operand type(s) for //: 'str' and 'int'".
    assert main(["--recipe", str(loose_yaml), "--dry-run"]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("text, hint, value", [("1e-4", float, 1e-4), ("-3e-4", float, -3e-4), ("1e3", int, 1000),
                                                ("bf16", torch.dtype, torch.bfloat16), ("1,2", tuple[int, int], (1, 2))])
def test_flag_text_and_yaml_values_agree(text, hint, value):
    assert values.from_text([text], hint) == value
    assert values.conform(yaml.safe_load(text) if hint is not tuple[int, int] else [1, 2], hint) == value


def test_bad_yaml_value_names_the_field(tmp_path):
    path = tmp_path / "bad.yaml"
    text = RECIPES[DEFAULT_RECIPE]().to_yaml().replace("\n  num_layers: ", "\n  num_layers: two #", 1)
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"model.num_layers: invalid value 'two': expected an integer"):
        ConfigContainer.from_yaml(str(path))


@pytest.mark.parametrize("content, message", [
    (b"model:\n  num_layers: 2\n  num_layers: 3\n", "duplicate key 'num_layers' (first at line 2)"),
    (b"train: {micro_batch_size: 1}\ntrain: {}\n", "duplicate key 'train' (first at line 1)"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "is not UTF-8 text"),
    (b"model:\x00\n", "holds NUL bytes"),
])
def test_yaml_files_that_are_not_what_they_seem(tmp_path, content, message, capsys):
    path = tmp_path / "odd.yaml"
    path.write_bytes(content)
    assert main(["--config-file", str(path), "--print-config"]) == 2
    err = capsys.readouterr().err
    assert message in err and str(path) in err and "Traceback" not in err
