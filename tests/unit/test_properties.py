"""Property-based tests (hypothesis) of the flag parser and the YAML codec, over the real tree.

The fields are not a hand-picked few: they come from the live config tree, the default recipe
with every section kind switched on in one of ``BASES`` (GPT/T5/Mamba models, LoRA/DoRA, every
optional section), and values are generated from each field's type hint. Properties:

- a value of the field's type, written the ways a user may write it (``--s.f=TEXT``,
  ``--s.f TEXT``, ``--no-s.f``, ``1,2`` / ``1 2`` / ``[1, 2]``, ``bf16`` / ``torch.bfloat16``,
  ``silu`` / ``torch.nn.functional.silu``, ``SIGTERM`` / ``Signals.SIGTERM`` ...), parses to
  exactly that value and type;
- any text on a flag, and any YAML value in a config file, gives a value of the field's type or
  a ConfigError naming the flag or file, never another exception (that is a traceback);
- every container built that way survives ``to_yaml``/``from_yaml`` and ``--print-config`` fed
  back through ``--recipe FILE.yaml`` and ``--config-file`` unchanged (explicit paths too), and
  printing it again gives the same text.
"""

from __future__ import annotations

import contextlib
import enum
import io
import json
import math
import typing
from functools import lru_cache
from typing import Any, Literal, NamedTuple

import megatron.core.activations as A
import pytest
import torch
import torch.nn.functional as F
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from megatron_bridge_cli.cli.flags import build_table, kind_class
from megatron_bridge_cli.cli.layering import resolve
from megatron_bridge_cli.cli.main import main
from megatron_bridge_cli.cli.parser import NUMBER, parse_command_line
from megatron_bridge_cli.config import ConfigContainer
from megatron_bridge_cli.errors import ConfigError
from megatron_bridge_cli.typeinfo import (
    field_type_hints, init_fields, is_callable, is_dtype, is_list, is_union, item_hint, members, origin,
    unwrap_optional,
)

# Every section kind is switched on in one of these (test_the_bases_switch_on_every_section_kind).
BASES = (
    (),
    ("--mixed_precision=bf16_mixed", "--comm_overlap=default", "--peft=lora", "--profiling=nsys", "--ft=default",
     "--straggler=default", "--nvrx_straggler=default", "--inprocess_restart=default", "--dataset=sft"),
    ("--model=t5", "--dataset=t5", "--peft=dora", "--profiling=pytorch", "--mixed_precision=fp16_mixed"),
    ("--model=mamba", "--dataset=mock"),
)

SETTINGS = dict(deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

NULL_WORDS = ("null", "None", "~", "NULL", "Null")
TRUE_WORDS = ("true", "True", "TRUE", "1", "yes", "Yes", "on", "ON", "y", "t")
FALSE_WORDS = ("false", "False", "FALSE", "0", "no", "No", "off", "OFF", "n", "f")
DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int8, torch.int32, torch.int64,
          torch.uint8, torch.bool, torch.complex64, torch.float8_e4m3fn, torch.float8_e5m2)
DTYPE_ALIASES = {torch.bfloat16: ("bf16", "BF16"), torch.float16: ("fp16", "half"), torch.float32: ("fp32", "float"),
                 torch.float64: ("fp64", "double")}  # the README's spellings
FUNCTIONS = (  # (short name or None, import path, object)
    ("silu", "torch.nn.functional.silu", F.silu), ("gelu", "torch.nn.functional.gelu", F.gelu),
    ("relu", "torch.nn.functional.relu", F.relu), ("tanh", "torch.nn.functional.tanh", F.tanh),
    ("squared_relu", "megatron.core.activations.squared_relu", A.squared_relu),
    ("quick_gelu", "megatron.core.activations.quick_gelu", A.quick_gelu),
    (None, "torch.nn.init.normal_", torch.nn.init.normal_), (None, "math.sqrt", math.sqrt),
)
ODD_STRINGS = (
    "", " ", "none", "???", "a,b", "[x]", "{a: 1}", "&a", "*a", "!!python/object/apply:os.system", "# c", " lead",
    "trail ", "tab\tin", "new\nline", "cr\rlf", "é", "日本語", "\u2028", "\x85", "\x07", "'", '"', "- x", "a: b",
    "%YAML", "@x", "`x`", "1e-4", "-1", "0x1F", "true", "yes", ".inf", ".nan", "=", "x=y", "--x", "\\", "🙂",
)


class Field(NamedTuple):
    base: int
    path: str
    hint: Any
    nullable: bool
    owner: type


def build(*argv: str) -> ConfigContainer:
    g, options = parse_command_line(list(argv))
    return resolve(g.recipe, g.config_files, options)


def printed(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert main(["--print-config", *argv]) == 0
    return out.getvalue()


def get(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


@lru_cache(maxsize=None)
def fields_of(base: int) -> tuple[Field, ...]:
    """Every field a flag can set in BASES[base]'s tree, typed by the class actually in place."""
    cfg = build(*BASES[base])
    out = []
    for path, flag in sorted(build_table(cfg).flags.items()):
        obj = get(cfg, flag.section)
        f = next((f for f in init_fields(obj) if f.name == flag.name), None) if obj is not None else None
        if f is not None:
            out.append(Field(base, path, field_type_hints(type(obj))[f.name], f.default is None, type(obj)))
    return tuple(out)


# ----------------------------------------------------------------------------- values of a type
def _enum_names(hint) -> set[str]:
    names = set()
    for m in members(unwrap_optional(hint)[0]):
        m = item_hint(m) if is_list(m) else m
        if isinstance(m, type) and issubclass(m, enum.Enum):
            names |= {n.casefold() for n in m.__members__}
        elif origin(m) is Literal:
            names |= {str(c).casefold() for c in typing.get_args(m)}
    return names


def _plain_str_ok(text: str, hint, nullable: bool) -> bool:
    """Text that a str field (or the str member of a union) keeps as the same str."""
    inner, optional = unwrap_optional(hint)
    if (nullable or optional) and text.strip() in NULL_WORDS:
        return False  # null words are null (test_null_words_clear_a_nullable_field)
    if text.lstrip().startswith("{") and "_target_" in text:
        return False  # the --print-config spelling of a _target_ mapping
    if text.strip() == "???":
        return False  # the missing-value marker (test_the_missing_value_marker_is_refused_by_every_door)
    if is_union(inner):  # the other members are tried first (typeinfo.union_order)
        if any(is_list(m) for m in members(inner)) and ("," in text or text.lstrip().startswith("[")):
            return False
        if text.strip().casefold() in _enum_names(inner):
            return False
        with contextlib.suppress(ValueError):
            float(text)
            return False
    return True


STRINGS = st.one_of(st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=20),
                    st.sampled_from(ODD_STRINGS))
ITEM_STRINGS = st.text(st.characters(categories=("L", "N", "P", "S", "Zs"), exclude_characters=",[]{}=~+-#&*!|>'\"%@`"),
                       min_size=1, max_size=8).map(str.strip).filter(bool)


@lru_cache(maxsize=None)
def value_strategy(hint, nullable: bool = False, *, in_union: bool = False):
    """Values of ``hint`` that a flag can spell (None where the type has no text form)."""
    inner, optional = unwrap_optional(hint)
    inner_strategy = _inner_strategy(inner, hint, nullable, in_union)
    if nullable or optional:
        return st.none() if inner_strategy is None else st.one_of(st.none(), inner_strategy)
    return inner_strategy


def _inner_strategy(inner, hint, nullable, in_union):
    if is_union(inner):
        parts = [value_strategy(m, in_union=True) for m in members(inner)]
        parts = [p for p in parts if p is not None]
        strategy = st.one_of(parts) if parts else None
        return None if strategy is None else strategy.filter(lambda v: not isinstance(v, str)
                                                            or _plain_str_ok(v, hint, nullable))
    if inner is bool:
        return st.booleans()
    if inner is int:
        return st.one_of(st.integers(-2**63, 2**63), st.builds(lambda d, k: d * 10**k, st.integers(-9, 9),
                                                                  st.integers(0, 15)))
    if inner is float:
        return st.floats(allow_nan=False)  # NaN parses (validation refuses it), but NaN != NaN
    if inner is str:
        return STRINGS.filter(lambda s: _plain_str_ok(s, hint, nullable))
    if origin(inner) is Literal:
        return st.sampled_from(typing.get_args(inner))
    if isinstance(inner, type) and issubclass(inner, enum.Enum):
        return st.sampled_from(list(inner))
    if is_dtype(inner):
        return st.sampled_from(DTYPES)
    if is_callable(inner):
        return st.sampled_from([f for _, _, f in FUNCTIONS])
    if is_list(inner):
        args = typing.get_args(inner)
        if origin(inner) is tuple and args and Ellipsis not in args:
            parts = [value_strategy(a) for a in args]
            return None if None in parts else st.tuples(*parts)
        item = item_hint(inner)
        items = ITEM_STRINGS if item in (str, Any) else value_strategy(item)
        if items is None:
            return None
        lists = st.lists(items, min_size=2 if in_union else 0, max_size=4)
        return lists if origin(inner) is list else lists.map(origin(inner))
    return None  # a class (dataclass, layout object): no flag text but a _target_ mapping


# ----------------------------------------------------------------------------- spelling a value
def _dash_ok(token: str) -> bool:
    """Whether a token may stand alone after a flag (argparse takes '-x' for an option)."""
    return not token.startswith("-") or bool(NUMBER.match(token))


def _scalar_texts(value, hint) -> list[str]:
    """The ways a user may write a scalar value of ``hint``."""
    if origin(hint) is Literal:
        return [str(value), f" {value} "]
    if isinstance(value, bool):
        return list(TRUE_WORDS if value else FALSE_WORDS)
    if isinstance(value, int) and not isinstance(value, enum.Enum):
        texts = [str(value), f"{value:_}", f" {value} "]
        digits = str(abs(value)).rstrip("0")
        zeros = len(str(abs(value))) - len(digits)
        if value and zeros and len(digits) == 1:
            texts.append(f"{'-' if value < 0 else ''}{digits}e{zeros}")
        return texts
    if isinstance(value, float):
        return [repr(value), repr(value).upper(), repr(value) if repr(value)[0] == "-" else "+" + repr(value)]
    if isinstance(value, enum.Enum):
        texts = [value.name, f"{type(value).__name__}.{value.name}"]
        if sum(n.casefold() == value.name.casefold() for n in type(value).__members__) == 1:
            texts.append(value.name.lower())
        return texts
    if isinstance(value, torch.dtype):
        return [str(value), str(value).removeprefix("torch."), *DTYPE_ALIASES.get(value, ())]
    if callable(value):
        short, path, _ = next(f for f in FUNCTIONS if f[2] is value)
        return [path] + ([short] if short else [])
    return [str(value)]  # str, Literal choices


def _flow_item(value, hint) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        return json.dumps(value)  # Infinity: a YAML string, read by the float rule
    return _scalar_texts(value, hint)[0]


def _member_for(value, hint):
    """The union member a generated value came from (its spelling must stay in that member)."""
    for m in members(hint):
        plain = origin(m) if is_list(m) else m if m in (bool, int, float, str) else None
        if plain is not None and type(value) is plain or plain is None and _fits(value, m):
            return m
    raise AssertionError(f"{value!r} is not of {hint}")


def spellings(path: str, value, hint, nullable: bool):
    """Strategy of argv fragments that set ``path`` to ``value``."""
    inner, optional = unwrap_optional(hint)
    flag = f"--{path}"
    if value is None:
        return st.sampled_from([[f"{flag}={w}"] for w in NULL_WORDS])
    in_union = is_union(inner)
    if in_union:
        inner = _member_for(value, inner)
    if is_list(inner):
        args = typing.get_args(inner)
        hints = args if origin(inner) is tuple and Ellipsis not in args and args else [item_hint(inner)] * len(value)
        texts = [_scalar_texts(v, h)[0] for v, h in zip(value, hints)]
        forms = [[f"{flag}=[{', '.join(_flow_item(v, h) for v, h in zip(value, hints))}]"]]
        comma = ",".join(texts)
        if (all("," not in t and t == t.strip() for t in texts) and not (len(texts) == 1 and texts[0] == "")
                and not comma.startswith("[") and not ((nullable or optional) and comma in NULL_WORDS)
                and not (in_union and len(texts) < 2)):
            forms.append([f"{flag}={comma}"])
        if texts and all(t and _dash_ok(t) and "=" not in t and t[0] not in "~+" for t in texts) \
                and not (in_union and len(texts) < 2) and not (len(texts) == 1 and texts[0].startswith("[")):
            forms.append([flag, *texts])
        return st.sampled_from(forms)
    if isinstance(value, bool) and not in_union:
        forms = [[flag] if value else [f"--no-{path}"]]
    else:
        forms = []
    for text in _scalar_texts(value, inner):
        forms.append([f"{flag}={text}"])
        if not isinstance(value, str) and _dash_ok(text.strip()) and text == text.strip():
            forms.append([flag, text])
    return st.sampled_from(forms)


# ----------------------------------------------------------------------------- type checks
def _fits(value, hint) -> bool:
    """Whether ``value`` is a value of ``hint`` (written here, independently of values.py)."""
    inner, optional = unwrap_optional(hint)
    if inner is Any:
        return True
    if value is None:
        return optional
    if is_union(inner):
        return any(_fits(value, m) for m in members(inner))
    if inner is bool:
        return type(value) is bool
    if inner is int:
        return type(value) is int
    if inner is float:
        return type(value) in (int, float)  # NaN included: validation refuses it (range_checks)
    if inner is str:
        return type(value) is str
    if origin(inner) is Literal:
        return any(value == c and type(value) is type(c) for c in typing.get_args(inner))
    if is_dtype(inner):
        return isinstance(value, torch.dtype)
    if is_callable(inner):
        return callable(value)
    if is_list(inner):
        args = typing.get_args(inner)
        if not isinstance(value, origin(inner)):
            return False
        if origin(inner) is tuple and args and Ellipsis not in args:
            return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args))
        return all(_fits(v, item_hint(inner)) for v in value)
    if origin(inner) is dict:
        return isinstance(value, dict)
    return isinstance(value, origin(inner))


def assert_same(actual, expected, where):
    """Equal, and of the same type all the way down (True is not 1, (4, 0) is not [4, 0])."""
    if isinstance(expected, (list, tuple)):
        assert type(actual) is type(expected) and len(actual) == len(expected), (where, actual, expected)
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_same(a, e, f"{where}[{i}]")
    elif isinstance(expected, (bool, int, float, str)) and not isinstance(expected, enum.Enum) or expected is None:
        assert type(actual) is type(expected) and actual == expected, (where, actual, expected)
    else:  # enum members, dtypes, functions: the very object
        assert actual is expected, (where, actual, expected)


@lru_cache(maxsize=None)
def by_type(base: int, settable_only: bool) -> tuple[tuple[Field, ...], ...]:
    """The fields of BASES[base] grouped by type hint: a test draws a type, then a field of it,
    so the 60-odd types are drawn evenly (more than half of all fields are bools)."""
    groups: dict[str, list[Field]] = {}
    for f in fields_of(base):
        if not settable_only or value_strategy(f.hint, f.nullable) is not None:
            groups.setdefault(repr(f.hint), []).append(f)
    return tuple(tuple(g) for _, g in sorted(groups.items()))


def a_field(base: int, settable_only: bool = False):
    return st.sampled_from(by_type(base, settable_only)).flatmap(st.sampled_from)


@st.composite
def command_lines(draw, max_fields: int = 6):
    """(argv, {path: value}): a base and a few fields set to generated values, spelled out."""
    base = draw(st.integers(0, len(BASES) - 1))
    chosen = draw(st.lists(a_field(base, settable_only=True), min_size=1, max_size=max_fields,
                           unique_by=lambda f: f.path))
    argv, expected = list(BASES[base]), {}
    for f in chosen:
        value = draw(value_strategy(f.hint, f.nullable))
        argv += draw(spellings(f.path, value, f.hint, f.nullable))
        expected[f.path] = (value, f.hint)
    return argv, expected


# ----------------------------------------------------------------------------- the properties
def test_the_bases_switch_on_every_section_kind():
    cfg = build()
    needed = {(path, kind_class(factory)) for path, s in build_table(cfg).sections.items() for _, factory in s.kinds}
    seen = {(path, type(get(build(*b), path))) for b in BASES for path, _ in needed}
    assert needed <= seen, needed - seen


def test_every_field_type_in_the_tree_gets_values():
    """Only fields whose type is a class (settable through a _target_ mapping) get no flag values;
    they still get null where null is allowed."""
    hints = {repr(f.hint) for b in range(len(BASES)) for f in fields_of(b)}
    assert len(hints) > 50  # bool, int, float, str, Literals, enums, dtypes, callables, lists, unions ...
    without = sorted({f"{f.owner.__name__}.{f.path.split('.')[-1]}: {f.hint}" for b in range(len(BASES))
                      for f in fields_of(b) if value_strategy(f.hint, f.nullable) is None})
    assert without == [], without


@settings(max_examples=60, **SETTINGS)
@given(command_lines())
def test_a_value_of_the_field_type_parses_to_itself(case):
    argv, expected = case
    cfg = build(*argv)
    for path, (value, _) in expected.items():
        assert_same(get(cfg, path), value, f"{path} from {argv}")


ANY_TEXT = st.one_of(
    st.text(max_size=30).filter(lambda s: "\x00" not in s), st.sampled_from(ODD_STRINGS),
    st.sampled_from(["nan", "NaN", "-nan", "inf", "-inf", "1e400", "-1e400", "9" * 400, "1e19", "-9223372036854775809",
                     "1_0", "0b1", "1j", "[", "]", "{", "[[1]]", "[null]", "[1, [2]]", "{a: {b: 1}}",
                     "{_target_: torch.load, _call_: false}", "{_target_: torch.nn.functional.silu, _call_: false}",
                     "{_target_: torch.nn.init.normal_, _partial_: true, _args_: 5}",
                     "{_target_: torch.nn.init.normal_, _partial_: yes}", "{_target_: 3}", "{_target_: [a]}",
                     "[&a [1, 1], *a, *a]", "&a [*a]", "load", "save", "torch.os.system", "math.__builtins__",
                     "torch.nn.functional.torch.load", "bf16", "SIGTERM", "flash", "a,b,c", "1,2", "4,0", "1 2"]),
    st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5)),
                 lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=4), kids, max_size=2),
                 max_leaves=6).map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip()),
)


@settings(max_examples=100, **SETTINGS)
@given(data=st.data())
def test_any_flag_text_gives_the_field_type_or_a_config_error_naming_the_flag(data):
    base = data.draw(st.integers(0, len(BASES) - 1))
    field = data.draw(a_field(base))
    text = data.draw(ANY_TEXT)
    try:
        cfg = build(*BASES[base], f"--{field.path}={text}")
    except ConfigError as e:
        assert f"--{field.path}" in str(e), str(e)
        return
    assert _fits(get(cfg, field.path), field.hint), (field.path, text, get(cfg, field.path))


TARGETS = st.sampled_from([
    {"_target_": "torch.nn.functional.silu", "_call_": False}, {"_target_": "torch.bfloat16", "_call_": False},
    {"_target_": "signal.Signals.SIGTERM", "_call_": False}, {"_target_": "torch.nn.init.normal_", "_partial_": True,
                                                               "std": 0.02},
    {"_target_": "megatron_bridge_cli.config.peft.LoRAConfig", "dim": 4}, {"_target_": "torch.load", "_call_": False},
    {"_target_": "torch.os.system", "_call_": False}, {"_target_": "os.system", "_call_": False},
    {"_target_": "torch.nn.init.normal_", "_partial_": True, "_args_": 5}, {"_target_": "math.sqrt", "_call_": False},
    {"_target_": "torch.nn.init.normal_", "_partial_": True, "_args_": [{"_target_": "torch.hub.load"}]},
])
YAML_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8), TARGETS),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(
        st.one_of(st.text(max_size=4), st.sampled_from(["_target_", "_call_", "_partial_", "_args_"])), kids,
        max_size=3),
    max_leaves=8)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("properties")


def _nested(path: str, value) -> dict:
    for part in reversed(path.split(".")):
        value = {part: value}
    return value


def _base_yaml(base: int) -> dict:
    """BASES[base] as a YAML mapping of section kinds (--peft=lora -> peft: lora)."""
    return dict(arg[2:].split("=", 1) for arg in BASES[base])


@settings(max_examples=60, **SETTINGS)
@given(data=st.data())
def test_any_yaml_value_gives_the_field_type_or_a_config_error_naming_the_file(data, workdir):
    base = data.draw(st.integers(0, len(BASES) - 1))
    field = data.draw(a_field(base))
    value = data.draw(YAML_VALUES)
    (workdir / "base.yaml").write_text(yaml.safe_dump(_base_yaml(base)))
    path = workdir / "value.yaml"
    path.write_text(yaml.safe_dump(_nested(field.path, value), allow_unicode=True))
    try:
        cfg = build("--config-file", str(workdir / "base.yaml"), "--config-file", str(path))
    except ConfigError as e:
        assert str(path) in str(e), str(e)
        return
    assert _fits(get(cfg, field.path), field.hint), (field.path, value, get(cfg, field.path))


@settings(max_examples=8, **SETTINGS)
@given(case=command_lines(max_fields=8))
def test_a_built_container_survives_to_yaml_and_print_config(case, workdir):
    argv, _ = case
    original = build(*argv)
    codec = workdir / "codec.yaml"
    original.to_yaml(str(codec))
    assert ConfigContainer.from_yaml(str(codec)) == original

    text = printed(*argv)
    dump = workdir / "printed.yaml"
    dump.write_text(text)
    for layer in (["--recipe", str(dump)], ["--config-file", str(dump)]):
        again = build(*layer)
        assert again == original, layer
        assert again.explicit_paths == original.explicit_paths, layer
    assert printed("--recipe", str(dump)) == text  # the format is a fixed point


def test_the_missing_value_marker_is_refused_by_every_door(workdir):
    """'???' (OmegaConf's "fill this in") is refused from a flag, a config file and a YAML recipe
    alike; were one door to accept it, its --print-config dump could not be read back."""
    with pytest.raises(ConfigError, match=r"--model\.config_logger_dir.*\?\?\?"):
        build("--model.config_logger_dir=???")
    data = yaml.safe_load(printed())
    data["model"]["config_logger_dir"] = "???"
    path = workdir / "missing.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    for door in ("--recipe", "--config-file"):
        with pytest.raises(ConfigError, match=r"model\.config_logger_dir.*\?\?\?"):
            build(door, str(path))


@pytest.mark.parametrize("word", NULL_WORDS)
def test_null_words_clear_a_nullable_field(word):
    assert build(f"--model.fp8_quantizer_factory={word}").model.fp8_quantizer_factory is None
    assert build(f"--model.window_size={word}").model.window_size is None
