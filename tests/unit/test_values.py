"""One home for the value rules: the same YAML means the same values through every door
(ConfigContainer.from_yaml, --recipe FILE.yaml, --config-file), and flags agree with YAML."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import typing
from typing import List, Optional, Tuple, Union

import pytest
import torch
import yaml

from megatron_bridge_cli import serialization, typeinfo, values
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


# ----------------------------------------------------------------------------- every field, every door
def _via_config_file(path):
    cfg = RECIPES[DEFAULT_RECIPE]()
    merge_config_file(cfg, str(path))
    return cfg


DOORS = {
    "from_yaml": lambda path: ConfigContainer.from_yaml(str(path)),
    "--recipe FILE.yaml": lambda path: load_recipe(str(path)),
    "--config-file": _via_config_file,
}


def test_every_door_gives_identical_values_in_every_field(loose_yaml):
    loaded = {door: load(loose_yaml) for door, load in DOORS.items()}
    texts = {door: cfg.to_yaml() for door, cfg in loaded.items()}
    assert len(set(texts.values())) == 1
    first, *rest = loaded.values()
    for other in rest:
        for f in typeinfo.init_fields(first):
            a, b = getattr(first, f.name), getattr(other, f.name)
            if not dataclasses.is_dataclass(a):
                continue
            for g in typeinfo.init_fields(a):
                va, vb = getattr(a, g.name), getattr(b, g.name)
                assert va == vb and type(va) is type(vb), f"{f.name}.{g.name}"
    first.finalize(world_size=1)  # the typed values derive: 64 // heads, not '64' // heads


def _edited_yaml(tmp_path, edits: dict):
    """The default recipe as to_yaml writes it, with ``edits`` pasted in as raw YAML text."""
    data = yaml.safe_load(RECIPES[DEFAULT_RECIPE]().to_yaml())
    for n, (section, key) in enumerate(edits):
        assert key in data[section], key
        data[section][key] = f"@@{n}@@"
    text = yaml.safe_dump(data, sort_keys=False)
    for n, raw in enumerate(edits.values()):
        text = text.replace(f"'@@{n}@@'", raw)
    path = tmp_path / "edited.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize("section, key, raw, message", [
    ("model", "hidden_size", "abc", "expected an integer"),
    ("model", "hidden_size", "64.5", "expected an integer"),
    ("model", "params_dtype", "bf17", "expected a dtype (e.g. bf16"),
    ("optimizer", "lr", "fast", "expected a number (e.g. 3e-4)"),
    ("optimizer", "adam_eps", "null", "not null"),
    ("model", "activation_func", "not_a_function", "expected a function name"),
    ("model", "window_size", "[1, x]", "expected an integer"),
    ("model", "window_size", "[1, 2, 3]", "expected 2 comma-separated values"),
])
def test_a_bad_yaml_value_names_the_field_through_every_door(tmp_path, door, section, key, raw, message):
    with pytest.raises(ConfigError) as e:
        DOORS[door](_edited_yaml(tmp_path, {(section, key): raw}))
    assert f"{section}.{key}" in str(e.value) and message in str(e.value), str(e.value)


# ----------------------------------------------------------------------------- floats: 1e-4 everywhere
def _fields_taking_floats(obj, prefix=""):
    """(path, hint, nullable) of every field of the default recipe whose hint mentions float."""
    found = []
    hints = typeinfo.field_type_hints(type(obj))
    for f in typeinfo.init_fields(obj):
        value, path = getattr(obj, f.name), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            found += _fields_taking_floats(value, path + ".")
        elif hints[f.name] is float or "float" in repr(hints[f.name]):
            found.append((path, hints[f.name], f.default is None))
    return found


FLOAT_FIELDS = _fields_taking_floats(RECIPES[DEFAULT_RECIPE]())


def test_the_float_fields_include_lists_optionals_and_unions():
    shapes = {typeinfo.type_name(hint) for _, hint, _ in FLOAT_FIELDS}
    assert {"FLOAT", "FLOAT|null"} <= shapes and any("[FLOAT" in s for s in shapes), shapes
    assert len(FLOAT_FIELDS) > 40


@pytest.mark.parametrize("path, hint, nullable", FLOAT_FIELDS, ids=[p for p, _, _ in FLOAT_FIELDS])
def test_every_float_field_reads_1e_4_from_yaml_and_from_a_flag(path, hint, nullable):
    inner, _ = typeinfo.unwrap_optional(hint)
    if any(m is float for m in typeinfo.members(inner)):
        assert values.conform("1e-4", hint, nullable) == 1e-4  # YAML `x: 1e-4` (a string to PyYAML)
        assert values.from_text(["1e-4"], hint, nullable) == 1e-4  # --x=1e-4
        return
    member = next(m for m in typeinfo.members(inner) if typeinfo.is_list(m))  # float only inside a list
    args = typing.get_args(member)
    fixed = typeinfo.origin(member) is tuple and args and Ellipsis not in args
    kinds = list(args) if fixed else [typeinfo.item_hint(member)] * 2
    text = ["1e-4" if a is float else "1" for a in kinds]
    want = [1e-4 if a is float else 1 for a in kinds]
    assert list(values.conform(text, hint, nullable)) == want
    assert list(values.from_text([",".join(text)], hint, nullable)) == want
    assert list(values.from_text(text, hint, nullable)) == want


@pytest.mark.parametrize("hint, data, expected", [
    (float, "1e-4", 1e-4),
    (Optional[float], "1e-4", 1e-4),
    (List[float], ["1e-4", "2", "0.5"], [1e-4, 2, 0.5]),
    (Optional[List[float]], ["1e-4"], [1e-4]),
    (Tuple[float, float], ["1e-4", "2e-4"], (1e-4, 2e-4)),
    (Union[float, List[float]], "1e-4", 1e-4),
    (Union[float, List[float]], ["1e-4", "1e-5"], [1e-4, 1e-5]),
    (Union[int, float], "1e-4", 1e-4),
    (Union[int, float], "1e6", 1000000),  # the int member takes whole numbers, from text and YAML alike
])
def test_yaml_and_flag_text_agree_on_floats_inside_containers(hint, data, expected):
    assert values.conform(data, hint) == expected
    assert values.from_text([data] if isinstance(data, str) else [",".join(data)], hint) == expected


# ----------------------------------------------------------------------------- one module
def test_the_yaml_codec_decodes_through_the_value_rules():
    assert serialization.decode_dataclass is values.decode_dataclass
    assert serialization.encode is values.encode
    assert values.resolve_target("torch.bfloat16", "x") is torch.bfloat16
    assert "torch" in values.ALLOWED_PREFIXES


def test_typeinfo_is_cheap_to_import():
    probe = "import sys, megatron_bridge_cli.typeinfo; print(sorted(m for m in ('torch', 'yaml') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    assert typeinfo.is_dtype(torch.dtype) and typeinfo.type_name(Optional[torch.dtype]) == "DTYPE|null"
