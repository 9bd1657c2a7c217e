"""The value rules of bridge-train, in one place: text -> value (flags), YAML -> value (config
files, ``from_yaml``, ``--recipe FILE.yaml``) and value -> YAML (``to_yaml``, ``--print-config``).

One rule per kind of type, chosen from the field's type hint, so a new field type is taught
once and the flags and the YAML codec cannot disagree. ``from_text`` parses command-line tokens;
``conform`` checks (and where the syntax allows, converts) a value YAML already parsed, so
``params_dtype: bf16``, ``hidden_size: "64"`` and PyYAML's string ``1e-4`` mean the same from
every door; ``decode_dataclass`` builds a config class from a mapping, each field through
``conform``. How a type is named in --help and errors lives in typeinfo.py; the ``_target_``
convention (the import-path allow-list, and ``encode``, which writes values back as YAML data)
in targets.py, re-exported here so that this module is the one door for value rules.

    bool       --x, --x=true|false|1|0|yes|no|on|off, --no-x
    int/float  3, 3e-4, 1_000 (YAML strings too: '1e-4' is a float)
    str        as typed
    Literal    one of the choices (compared as text; Literal[0, 1, 2] gives ints)
    Enum       member name (AttnBackend: flash), case-insensitive when unambiguous
    dtype      bf16, bfloat16, torch.bfloat16 (fp32/fp16/fp64 and every torch dtype name)
    callable   short name (silu, gelu, squared_relu) or an allow-listed import path
    list/tuple --x=1,2,3 | --x 1 2 3 | --x='[1, 2, 3]' | --x='[]'
    dict       YAML flow: --x='{key: value}'
    Optional   null / None / ~ (and 'none' where 'none' is not itself a valid value, or the
               field is an optional string: --checkpoint.save=none means no saving)
    Union      members tried in a fixed order: bool, int, float, choices, dtype, callable,
               lists (only when the text looks like a list), dict, str, other classes
    anything   a ``{_target_: ...}`` mapping (dataclasses, dtypes, functions, partials, enums),
               the format to_yaml writes: ``{_target_: torch.bfloat16, _call_: false}``

Rules raise CoercionError(expected) and never see the flag name: the caller adds it.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import importlib
import reprlib
import typing
from typing import Any, Literal

import torch

from megatron_bridge_cli.errors import ConfigError
from megatron_bridge_cli.targets import (
    ALLOWED_PREFIXES, MARKERS, allowed_prefixes, encode, join_path, resolve_target,
)
from megatron_bridge_cli.typeinfo import (
    DTYPE_PHRASE, PHRASES, choices, expected, field_type_hints, init_fields, is_callable, is_list, is_union, item_hint,
    members, origin, suggest, union_order, unwrap_optional,
)

__all__ = [
    "CoercionError", "from_text", "conform", "takes_list", "encode", "decode_dataclass", "resolve_target",
    "ALLOWED_PREFIXES", "allowed_prefixes", "TRUE_WORDS", "FALSE_WORDS",
]

TRUE_WORDS = frozenset({"true", "1", "yes", "on", "y", "t"})
FALSE_WORDS = frozenset({"false", "0", "no", "off", "n", "f"})
_NULL_WORDS = frozenset({"null", "Null", "NULL", "None", "~"})

_DTYPE_ALIASES = {
    "fp32": torch.float32, "f32": torch.float32, "float": torch.float32,
    "bf16": torch.bfloat16, "fp16": torch.float16, "f16": torch.float16, "half": torch.float16,
    "fp64": torch.float64, "f64": torch.float64, "double": torch.float64,
    "fp8": torch.float8_e4m3fn, "int": torch.int32, "long": torch.int64,
}

# Where a bare function name is looked up, in order (activation functions, init methods).
_CALLABLE_HOMES = ("torch.nn.functional", "megatron.core.activations", "torch", "torch.nn.init", "math")


MISSING = "???"
"""OmegaConf's marker of a value still to be filled in (Megatron-Bridge YAML files hold it): no
door accepts it, so a --print-config dump holding it could not be read back."""


def _missing(hint) -> str:
    return f"{expected(hint)}; '???' marks a value that must be filled in"


_SHOWN = reprlib.Repr()
_SHOWN.maxlevel, _SHOWN.maxlist, _SHOWN.maxtuple, _SHOWN.maxdict = 3, 8, 8, 8
_SHOWN.maxstring = _SHOWN.maxother = 120


def shown(value: Any) -> str:
    """repr of a value for a message, cut short: a value from YAML may be huge (or an alias bomb
    that slipped past the limits), and one paragraph must stay one paragraph."""
    return _SHOWN.repr(value)


class CoercionError(ValueError):
    """A value that does not fit the type; ``expected`` says what would have."""

    def __init__(self, expected: str):
        super().__init__(expected)
        self.expected = expected


def _looks_like_list(tokens: list[str]) -> bool:
    return len(tokens) != 1 or "," in tokens[0] or tokens[0].lstrip().startswith("[")


def _flow(token: str) -> Any:
    """Parse a YAML flow value ('[1, 2]', '{a: 1}'), as YAML would read it, with the limits of
    config files (alias expansion, nesting depth: serialization.load_yaml_text)."""
    from megatron_bridge_cli.serialization import load_yaml_text  # serialization imports this module

    try:
        return load_yaml_text(token, "the value")
    except ConfigError as e:
        raise CoercionError(f"valid YAML flow syntax ({str(e).splitlines()[0]})") from None


# ----------------------------------------------------------------------------- scalar rules
def _bool(token: str, hint) -> bool:
    word = token.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise CoercionError(PHRASES[bool])


def _int(token: str, hint) -> int:
    try:
        return int(token.strip())
    except ValueError:
        pass
    try:  # 1e6 is a common way to write a step count
        value = float(token)
        if value.is_integer() and abs(value) < 2**63:
            return int(value)
    except ValueError:
        pass
    raise CoercionError(PHRASES[int])


def _float(token: str, hint) -> float:
    try:  # 'nan' too: a float here, refused by validation (config/range_checks.py) with the rest
        return float(token.strip())
    except ValueError:
        raise CoercionError(PHRASES[float]) from None


def _str(token: str, hint) -> str:
    return token


def _literal(token: str, hint):
    for choice in typing.get_args(hint):
        if str(choice) == token.strip():  # surrounding blanks are ignored, as for numbers and names
            return choice
    raise CoercionError("one of: " + ", ".join(choices(hint)))


def _enum(token: str, hint):
    name = token.strip().rsplit(".", 1)[-1]  # accept 'AttnBackend.flash' and full paths
    if name in hint.__members__:
        return hint.__members__[name]
    folded = [m for n, m in hint.__members__.items() if n.lower() == name.lower()]
    if len(folded) == 1:
        return folded[0]
    if issubclass(hint, int) and name.lstrip("-").isdigit():
        try:
            return hint(int(name))
        except ValueError:
            pass
    raise CoercionError("one of: " + ", ".join(choices(hint)))


def _dtype(token: str, hint) -> torch.dtype:
    name = token.strip()
    name = name[len("torch."):] if name.startswith("torch.") else name
    value = _DTYPE_ALIASES.get(name.lower(), getattr(torch, name, None))
    if isinstance(value, torch.dtype):
        return value
    raise CoercionError(DTYPE_PHRASE)


def _is_function(value) -> bool:
    return callable(value) and not isinstance(value, type)


def _callable(token: str, hint):
    name = token.strip()
    if "." not in name:  # a short name is its full path in the first home that has it
        home = next((h for h in _CALLABLE_HOMES if _is_function(getattr(importlib.import_module(h), name, None))),
                    None)
        name = f"{home}.{name}" if home and name.isidentifier() else name
    if "." in name and all(part.isidentifier() for part in name.split(".")):
        try:  # the same checks as a YAML _target_ (allow-list, denylist: 'load' is torch.load)
            value = resolve_target(name, where="value")
        except ConfigError as e:
            reason = str(e).removeprefix("value: ")
            raise CoercionError(f"a function name (e.g. silu, gelu) or an import path; {reason}") from None
        if _is_function(value):
            return value
    raise CoercionError("a function name (e.g. silu, gelu, squared_relu) or an allow-listed import path "
                        "(e.g. torch.nn.functional.silu)")


_SCALARS = {bool: _bool, int: _int, float: _float, str: _str, torch.dtype: _dtype}


def _scalar_rule(hint):
    if hint in _SCALARS:
        return _SCALARS[hint]
    if origin(hint) is Literal:
        return _literal
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _enum
    if is_callable(hint):
        return _callable
    return None


# ----------------------------------------------------------------------------- text -> value
def _list_from_text(tokens: list[str], hint) -> Any:
    if len(tokens) == 1:
        token = tokens[0].strip()
        if token.startswith("["):
            data = _flow(token)
            if not isinstance(data, list):
                raise CoercionError(expected(hint))
            return conform(data, hint, False)
        items = [t.strip() for t in token.split(",")] if token else []
        items = [] if items == [""] else items
    else:
        items = tokens
    args = typing.get_args(hint)
    if origin(hint) is tuple and args and Ellipsis not in args:
        if len(items) != len(args):
            raise CoercionError(expected(hint))
        return tuple(from_text([t], a) for t, a in zip(items, args))
    value = [from_text([t], item_hint(hint)) for t in items]
    return origin(hint)(value) if origin(hint) is not list else value


def _is_null(token: str, hint) -> bool:
    if token.strip() in _NULL_WORDS:
        return True
    if token.strip().lower() != "none":
        return False
    if hint is str:  # an optional string (callers ask only then): --checkpoint.save=none is no saving
        return True
    try:  # 'none' is null unless it is a valid value itself (Literal['none', ...], a plain str field)
        from_text([token], hint)
        return False
    except CoercionError:
        return True


def from_text(tokens: list[str], hint, nullable: bool = False) -> Any:
    """Value of the text ``tokens`` (one or more, from the command line) for type ``hint``."""
    inner, optional = unwrap_optional(hint)
    nullable = nullable or optional
    if len(tokens) == 1 and tokens[0].strip() == MISSING:
        raise CoercionError(_missing(hint))
    if len(tokens) == 1 and nullable and _is_null(tokens[0], inner):
        return None
    if len(tokens) == 1 and tokens[0].lstrip().startswith("{") and "_target_" in tokens[0]:
        return conform(_flow(tokens[0]), inner, nullable)  # the --print-config spelling
    if is_union(inner):
        listy = _looks_like_list(tokens)
        for member in sorted(members(inner), key=union_order):
            if is_list(member) and not listy or not is_list(member) and len(tokens) != 1:
                continue  # lists only for list-looking text; scalars only for one token
            try:
                return from_text(tokens, member)
            except CoercionError:
                continue
        raise CoercionError(expected(hint))
    if is_list(inner):
        return _list_from_text(tokens, inner)
    if len(tokens) != 1:
        raise CoercionError(f"one value ({expected(hint)}), got {len(tokens)}")
    rule = _scalar_rule(inner)
    if rule is not None:
        return rule(tokens[0], inner)
    return _structured_from_text(tokens[0], inner)


def _structured_from_text(token: str, hint) -> Any:
    """Dicts, Any and other classes: a YAML flow value (a ``_target_`` mapping for classes)."""
    data = _flow(token)
    if hint is Any:
        return conform(data, hint)
    if origin(hint) is dict:
        if not isinstance(data, dict):
            raise CoercionError(expected(hint))
        return conform(data, hint)
    if isinstance(hint, type) and isinstance(data, dict):
        if "_target_" in data:
            return conform(data, hint)
        if dataclasses.is_dataclass(hint):
            return decode_dataclass(hint, data, "value")
    raise CoercionError(expected(hint))


# ----------------------------------------------------------------------------- YAML value -> value
def _fits(value, hint) -> bool:
    """Whether an already-typed value is exactly of type ``hint`` (no conversion)."""
    if hint is Any:
        return True
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:  # PEP 484's numeric tower: an int is a valid float (megatron defaults use it)
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin(hint) is Literal:
        return any(value == c and type(value) is type(c) for c in typing.get_args(hint))
    if is_callable(hint):
        return callable(value) and not isinstance(value, (str, type)) or isinstance(value, functools.partial)
    if is_union(hint):
        return any(_fits(value, m) for m in members(hint))
    if is_list(hint) or origin(hint) is dict:
        return False  # containers are rebuilt item by item
    cls = origin(hint)
    return isinstance(cls, type) and isinstance(value, cls)


def conform(value: Any, hint, nullable: bool = False, where: str = "value") -> Any:
    """Check a value parsed from YAML against ``hint``, converting where the syntax allows:
    strings go through the text rules (``params_dtype: bf16``, ``lr: 1e-4``), lists and dicts
    are checked item by item, ``_target_`` mappings are resolved, mappings for a dataclass
    build it."""
    inner, optional = unwrap_optional(hint)
    if value is None:
        if nullable or optional or inner is Any:
            return None
        raise CoercionError(f"{expected(inner)}, not null")
    if isinstance(value, str) and value.strip() == MISSING:
        raise CoercionError(_missing(hint))
    if isinstance(value, dict) and "_target_" in value:
        value = _decode_target(value, where)
    if inner is Any:
        return _decode_any(value, where)
    if isinstance(value, dict) and isinstance(inner, type) and dataclasses.is_dataclass(inner):
        return decode_dataclass(inner, value, where)
    if _fits(value, inner):
        return value
    if isinstance(value, str):
        return from_text([value], inner, nullable)
    if is_union(inner):
        for member in sorted(members(inner), key=union_order):
            try:
                return conform(value, member, where=where)
            except CoercionError:
                continue
        raise CoercionError(expected(hint))
    if is_list(inner) and isinstance(value, (list, tuple)):
        args = typing.get_args(inner)
        if origin(inner) is tuple and args and Ellipsis not in args:
            if len(value) != len(args):
                raise CoercionError(expected(hint))
            return tuple(conform(v, a, where=f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        items = [conform(v, item_hint(inner), where=f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin(inner) is list else origin(inner)(items)
    if origin(inner) is dict and isinstance(value, dict):
        args = typing.get_args(inner)
        return {k: conform(v, args[1] if len(args) == 2 else Any, where=f"{where}.{k}") for k, v in value.items()}
    raise CoercionError(expected(hint))


def _decode_any(value: Any, where: str) -> Any:
    """A value of an untyped field: ``_target_`` mappings resolved wherever they sit."""
    if isinstance(value, dict):
        if "_target_" in value:
            return _decode_target(value, where)
        return {k: _decode_any(v, join_path(where, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_any(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def takes_list(hint) -> bool:
    """Whether the flag may take several tokens (``--x 1 2 3``)."""
    return any(is_list(m) for m in members(unwrap_optional(hint)[0]))


# ----------------------------------------------------------------------------- YAML -> objects
def _decode_target(data: dict, where: str) -> Any:
    """A ``_target_`` mapping: a reference (``_call_: false``), a partial, or a config class.
    Nothing but dataclass constructors and functools.partial is ever called."""
    target = resolve_target(data["_target_"], where)  # a refused name is the first thing to say
    _check_markers(data, where)
    if data.get("_call_") is False:
        return target
    if data.get("_partial_"):
        args = [_decode_any(a, f"{where}._args_[{i}]") for i, a in enumerate(data.get("_args_", []))]
        kwargs = {k: _decode_any(v, join_path(where, k)) for k, v in data.items() if k not in MARKERS}
        return functools.partial(target, *args, **kwargs)
    if isinstance(target, type) and dataclasses.is_dataclass(target):
        return decode_dataclass(target, {k: v for k, v in data.items() if k != "_target_"}, where)
    raise ConfigError(f"{where}: _target_ {data['_target_']!r} is not a config class; add `_call_: false` "
                      "to refer to it without calling it")


def _check_markers(data: dict, where: str) -> None:
    """The ``_target_`` keys hold what they must, and nothing is given that would be ignored."""
    for key in ("_call_", "_partial_"):
        if key in data and not isinstance(data[key], bool):
            raise ConfigError(f"{where}: {key} must be true or false, got {shown(data[key])}")
    if "_args_" in data and not isinstance(data["_args_"], list):
        raise ConfigError(f"{where}: _args_ must be a list of positional arguments, got {shown(data['_args_'])}")
    if "_args_" in data and not data.get("_partial_"):
        raise ConfigError(f"{where}: _args_ would be ignored: it needs `_partial_: true`")
    bad = [k for k in data if not isinstance(k, str) or not (k in MARKERS or k.isidentifier())]
    if bad:
        raise ConfigError(f"{where}: {shown(bad[0])} is not a keyword argument name")
    extra = [k for k in data if k not in ("_target_", "_call_")]
    if data.get("_call_") is False and extra:
        raise ConfigError(f"{where}: `_call_: false` refers to {data['_target_']!r} without calling it, so "
                          f"{', '.join(map(str, extra))} would be ignored; remove them or drop `_call_: false`")


def decode_dataclass(cls: type, data: dict, where: str) -> Any:
    """Build dataclass ``cls`` from a mapping: unknown keys refused with a suggestion, every
    value through the same rules as a flag's (``conform``)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'top level'}: expected a mapping of {cls.__name__} fields, got {shown(data)}")
    fields = {f.name: f for f in init_fields(cls)}
    hints = field_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key == "_target_":
            continue
        if key not in fields:
            section = f"section {where!r}" if where else "the top level"
            raise ConfigError(f"unknown key {shown(key)} in {section} ({cls.__name__}){suggest(str(key), fields)}")
        path = join_path(where, key)
        try:
            kwargs[key] = conform(value, hints[key], fields[key].default is None, where=path)
        except CoercionError as e:
            raise ConfigError(f"{path}: invalid value {shown(value)}: expected {e.expected}") from None
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where}: cannot build {cls.__name__}: {e}") from None
