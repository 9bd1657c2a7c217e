"""The one YAML codec of bridge-train: dataclass trees <-> YAML, safely.

Format: each dataclass is a mapping whose first key ``_target_`` names its class; its init
fields follow in declaration order. Values YAML cannot hold are ``_target_`` mappings too:
dtypes, functions, classes and enum members as ``{_target_: torch.bfloat16, _call_: false}``;
``functools.partial`` as ``{_target_: fn, _partial_: true, _args_: [...], kw: ...}``. Loading
never calls anything but dataclass constructors and ``functools.partial``; every ``_target_``
must lie under an allow-listed module prefix and have no private part, checked *before*
anything is imported. Extend the allow-list with BRIDGE_TRAIN_YAML_ALLOW=pkg1,pkg2.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import importlib
import os
import types
import typing
from pathlib import Path
from typing import Any, Optional

import torch
import yaml

from megatron_bridge_cli.errors import ConfigError

__all__ = [
    "ALLOWED_PREFIXES", "to_yaml_str", "dump_yaml", "load_yaml_file", "decode_dataclass",
    "encode", "resolve_target", "init_fields", "field_type_hints", "suggest", "decode_value",
]

ALLOWED_PREFIXES = ("torch", "megatron.core", "megatron_bridge_cli", "recipes", "signal", "math")
"""Top-level module paths a YAML ``_target_`` may resolve under."""

_MARKERS = ("_target_", "_call_", "_partial_", "_args_")

# Public homes of functions whose __module__ is private (F.gelu lives in torch._C._nn).
_PUBLIC_MODULES = ("torch.nn.functional", "torch", "megatron.core.activations", "math")


def _join(where: str, key) -> str:
    return f"{where}.{key}" if where else str(key)


# ----------------------------------------------------------------------------- introspection
def init_fields(cls_or_obj) -> list[dataclasses.Field]:
    """User-settable fields of a dataclass: init=True and not private."""
    return [f for f in dataclasses.fields(cls_or_obj) if f.init and not f.name.startswith("_")]


@functools.lru_cache(maxsize=None)
def field_type_hints(cls: type) -> dict[str, Any]:
    """Resolved type hints of a dataclass's fields (cached: megatron-core classes are large)."""
    return typing.get_type_hints(cls)


def suggest(name: str, candidates) -> str:
    """'; did you mean X?' for the closest candidates, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    if not close:
        return ""
    return "; did you mean " + " or ".join(repr(c) for c in close) + "?"


# ----------------------------------------------------------------------------- encoding
def _qualified_name(obj) -> str:
    """Import path of a function, class or dtype, checked to resolve back to the same object."""
    if isinstance(obj, torch.dtype):
        return str(obj)  # 'torch.bfloat16'
    if isinstance(obj, enum.Enum):
        return f"{type(obj).__module__}.{type(obj).__qualname__}.{obj.name}"
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if module is None or qualname is None or "<" in qualname:
        raise TypeError(f"{obj!r} has no import path (lambdas and local functions cannot be saved)")
    path = f"{module}.{qualname}"
    if any(part.startswith("_") for part in module.split(".")):
        for public in _PUBLIC_MODULES:
            if getattr(importlib.import_module(public), qualname, None) is obj:
                return f"{public}.{qualname}"
    try:
        if _import_path(path) is not obj:
            raise TypeError
    except Exception:
        raise TypeError(f"{obj!r} is not reachable as {path}") from None
    return path


def encode(value: Any, where: str = "") -> Any:
    """Turn a config value into plain YAML data (dicts, lists, scalars)."""
    if value is None or isinstance(value, (bool, int, float, str)) and not isinstance(value, enum.Enum):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        data = {"_target_": _qualified_name(type(value))}
        for f in init_fields(value):
            data[f.name] = encode(getattr(value, f.name), _join(where, f.name))
        return data
    if isinstance(value, (list, tuple)):
        return [encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {str(k): encode(v, _join(where, k)) for k, v in value.items()}
    if isinstance(value, functools.partial):
        data = {"_target_": encode(value.func, where)["_target_"], "_partial_": True}
        if value.args:
            data["_args_"] = [encode(a, where) for a in value.args]
        data.update({k: encode(v, _join(where, k)) for k, v in value.keywords.items()})
        return data
    if isinstance(value, (torch.dtype, enum.Enum, type, types.FunctionType, types.BuiltinFunctionType)) or callable(value):
        try:
            return {"_target_": _qualified_name(value), "_call_": False}
        except TypeError as e:
            raise ConfigError(f"cannot save {where} to YAML: {e}") from None
    raise ConfigError(f"cannot save {where} to YAML: values of type {type(value).__name__} are not supported")


def to_yaml_str(obj: Any) -> str:
    """YAML text of a dataclass tree (deterministic: field order, block style)."""
    return yaml.safe_dump(encode(obj), sort_keys=False, default_flow_style=False, width=100)


def dump_yaml(obj: Any, path: str | os.PathLike) -> None:
    """Write the YAML of ``obj`` atomically: a crash never leaves a half-written file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(to_yaml_str(obj))
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- decoding
def _allowed_prefixes() -> tuple[str, ...]:
    extra = [p.strip() for p in os.environ.get("BRIDGE_TRAIN_YAML_ALLOW", "").split(",") if p.strip()]
    return ALLOWED_PREFIXES + tuple(extra)


def _check_target(path: str, where: str) -> None:
    if not isinstance(path, str) or not path:
        raise ConfigError(f"{where}: _target_ must be a dotted import path, got {path!r}")
    parts = path.split(".")
    if any(p.startswith("_") or not p.isidentifier() for p in parts):
        raise ConfigError(f"{where}: refused _target_ {path!r}: private or malformed names are not allowed")
    if not any(path == p or path.startswith(p + ".") for p in _allowed_prefixes()):
        raise ConfigError(
            f"{where}: refused _target_ {path!r}: only names under {', '.join(_allowed_prefixes())} "
            "may be loaded from YAML (extend with BRIDGE_TRAIN_YAML_ALLOW=your_package)"
        )


def _import_path(path: str) -> Any:
    """Import the longest importable module prefix of ``path`` and getattr the rest."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(path)


def resolve_target(path: str, where: str) -> Any:
    """Resolve an allow-listed ``_target_`` path (checked before any import)."""
    _check_target(path, where)
    try:
        return _import_path(path)
    except (ImportError, AttributeError):
        raise ConfigError(f"{where}: _target_ {path!r} does not exist") from None


def _strip_optional(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _decode_value(value: Any, hint: Any, where: str) -> Any:
    hint = _strip_optional(hint)
    if isinstance(value, dict) and "_target_" in value:
        return _decode_target(value, where)
    if isinstance(value, dict) and isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return decode_dataclass(hint, value, where)
    origin = typing.get_origin(hint)
    if isinstance(value, list):
        args = typing.get_args(hint)
        item_hint = args[0] if args and origin in (list, typing.List) else Any
        items = [_decode_value(v, item_hint, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if isinstance(value, dict):
        return {k: _decode_value(v, Any, _join(where, k)) for k, v in value.items()}
    if hint is float and isinstance(value, str):
        try:  # YAML 1.1 reads '3e-4' (no dot) as a string
            return float(value)
        except ValueError:
            pass
    return value


def decode_value(value: Any, hint: Any, where: str) -> Any:
    """Decode one YAML value meant for a field of type ``hint`` (``_target_`` mappings resolved)."""
    return _decode_value(value, hint, where)


def _decode_target(data: dict, where: str) -> Any:
    target = resolve_target(data["_target_"], where)
    if data.get("_call_") is False:
        return target
    if data.get("_partial_"):
        args = [_decode_value(a, Any, where) for a in data.get("_args_", [])]
        kwargs = {k: _decode_value(v, Any, _join(where, k)) for k, v in data.items() if k not in _MARKERS}
        return functools.partial(target, *args, **kwargs)
    if isinstance(target, type) and dataclasses.is_dataclass(target):
        return decode_dataclass(target, {k: v for k, v in data.items() if k != "_target_"}, where)
    raise ConfigError(f"{where}: _target_ {data['_target_']!r} is not a config class; add `_call_: false` "
                      "to refer to it without calling it")


def decode_dataclass(cls: type, data: dict, where: str) -> Any:
    """Build dataclass ``cls`` from a mapping, refusing unknown keys with a suggestion."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'top level'}: expected a mapping of {cls.__name__} fields, got {data!r}")
    fields = {f.name: f for f in init_fields(cls)}
    hints = field_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key == "_target_":
            continue
        if key not in fields:
            section = f"section {where!r}" if where else "the top level"
            raise ConfigError(f"unknown key {key!r} in {section} ({cls.__name__}){suggest(str(key), fields)}")
        kwargs[key] = _decode_value(value, hints[key], _join(where, key))
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where}: cannot build {cls.__name__}: {e}") from None


def load_yaml_file(path: str | os.PathLike) -> Any:
    """safe_load a YAML file, turning I/O and syntax problems into ConfigErrors naming the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {str(path)!r}: {e.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        line = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"config file {str(path)!r} is not valid YAML{line}: {e.problem}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {e}") from None
