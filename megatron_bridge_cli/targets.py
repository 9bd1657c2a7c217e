"""Import paths in config values (``_target_`` in YAML, function names in flags), safely.

A path may be resolved only under an allow-listed top-level module prefix and may have no
private or malformed part, both checked *before* anything is imported. Extend the allow-list
with BRIDGE_TRAIN_YAML_ALLOW=pkg1,pkg2. The reverse direction, ``qualified_name``, writes the
path a function, class, dtype or enum member is saved under, checked to resolve back to it.
"""

from __future__ import annotations

import enum
import importlib
import os
from typing import Any

import torch

from megatron_bridge_cli.errors import ConfigError

__all__ = ["ALLOWED_PREFIXES", "allowed_prefixes", "resolve_target", "qualified_name"]

ALLOWED_PREFIXES = ("torch", "megatron.core", "megatron_bridge_cli", "recipes", "signal", "math")
"""Top-level module paths a YAML ``_target_`` may resolve under."""

# Public homes of functions whose __module__ is private (F.gelu lives in torch._C._nn).
_PUBLIC_MODULES = ("torch.nn.functional", "torch", "megatron.core.activations", "math")


def allowed_prefixes() -> tuple[str, ...]:
    """The built-in allow-list plus BRIDGE_TRAIN_YAML_ALLOW."""
    extra = [p.strip() for p in os.environ.get("BRIDGE_TRAIN_YAML_ALLOW", "").split(",") if p.strip()]
    return ALLOWED_PREFIXES + tuple(extra)


def _check_target(path: str, where: str) -> None:
    if not isinstance(path, str) or not path:
        raise ConfigError(f"{where}: _target_ must be a dotted import path, got {path!r}")
    parts = path.split(".")
    if any(p.startswith("_") or not p.isidentifier() for p in parts):
        raise ConfigError(f"{where}: refused _target_ {path!r}: private or malformed names are not allowed")
    if not any(path == p or path.startswith(p + ".") for p in allowed_prefixes()):
        raise ConfigError(
            f"{where}: refused _target_ {path!r}: only names under {', '.join(allowed_prefixes())} "
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
    """Resolve an allow-listed import path (checked before any import)."""
    _check_target(path, where)
    try:
        return _import_path(path)
    except (ImportError, AttributeError):
        raise ConfigError(f"{where}: _target_ {path!r} does not exist") from None


def qualified_name(obj) -> str:
    """Import path of a function, class, dtype or enum member, checked to resolve back to it."""
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
