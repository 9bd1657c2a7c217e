"""The ``_target_`` convention: import paths in config values, read safely and written exactly.

Reading (``resolve_target``, for ``_target_`` in YAML and function paths in flags): a path may
be resolved only under an allow-listed top-level module prefix, may have no private or
malformed part and may not name anything on the denylist (``DENIED_TARGETS``: functions that
load files, run code or start processes, such as ``torch.load`` and ``torch.hub``), all
checked *before* anything is imported. The text is not trusted alone: the object found is
checked too (a module passed on the way, or the home module of the function found, must be
allow-listed and not denied), so ``torch.os.system`` or a re-export of ``torch.load`` under
another name is refused. Extend the allow-list with BRIDGE_TRAIN_YAML_ALLOW=pkg1,pkg2; the
denylist applies under every prefix.

Writing (``encode``, value -> plain YAML data): dataclasses become mappings whose first key
``_target_`` names the class; functions, classes, dtypes and enum members become references
``{_target_: torch.bfloat16, _call_: false}`` (``qualified_name``, checked to resolve back to
the same object); ``functools.partial`` becomes ``{_target_: fn, _partial_: true, ...}``.
Reading those mappings back is values.conform's job, next to every other value rule.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import importlib
import inspect
import os
from typing import Any

import torch

from megatron_bridge_cli.errors import ConfigError
from megatron_bridge_cli.typeinfo import init_fields

__all__ = [
    "ALLOWED_PREFIXES", "DENIED_TARGETS", "MARKERS", "allowed_prefixes", "resolve_target", "qualified_name", "encode",
    "join_path",
]

ALLOWED_PREFIXES = ("torch", "megatron.core", "megatron_bridge_cli", "recipes", "signal", "math")
"""Top-level module paths a YAML ``_target_`` may resolve under."""

DENIED_TARGETS = (
    # torch: (un)pickling, downloads, compilers and loaders of code or native libraries
    "torch.load", "torch.save", "torch.serialization", "torch.hub", "torch.utils.model_zoo", "torch.jit",
    "torch.package", "torch.utils.cpp_extension", "torch.compile", "torch.export", "torch.onnx", "torch.fx",
    "torch.ops", "torch.classes", "torch.library", "torch.utils.benchmark", "torch.utils.collect_env",
    "torch.utils.bottleneck", "torch.utils.hipify", "torch.distributed.checkpoint", "torch.distributed.rpc",
    "torch.distributed.run", "torch.distributed.launch", "torch.distributed.launcher", "torch.distributed.elastic",
    "torch.multiprocessing", "torch.cuda.memory.CUDAPluggableAllocator", "torch.cuda.memory.change_current_allocator",
    "torch.xpu.memory.XPUPluggableAllocator",
    # megatron-core: checkpoint loaders/savers, C++ builds, exporters
    "megatron.core.dist_checkpointing", "megatron.core.datasets.utils.compile_helpers", "megatron.core.export",
    "megatron.core.nccl_allocator", "megatron.core.inference.unified_memory", "megatron.core.tokenizers",
    # bridge-train itself: the launcher, the training loop, data tools, the resolver
    "megatron_bridge_cli.cli", "megatron_bridge_cli.training", "megatron_bridge_cli.data",
    "megatron_bridge_cli.targets", "megatron_bridge_cli.values", "megatron_bridge_cli.serialization",
    # signal: installing handlers (the Signals enum is what configs name)
    "signal.signal", "signal.sigwait", "signal.pthread_sigmask",
)
"""Names a ``_target_`` may never resolve to, under any allowed prefix (each also covers the
names below it): what loads files, runs code or starts processes. A config names classes,
dtypes, enum members and activation/init functions; none of these is one of them."""

# Public homes of functions whose __module__ is private (F.gelu lives in torch._C._nn).
_PUBLIC_MODULES = ("torch.nn.functional", "torch", "megatron.core.activations", "math")


def allowed_prefixes() -> tuple[str, ...]:
    """The built-in allow-list plus BRIDGE_TRAIN_YAML_ALLOW."""
    extra = [p.strip() for p in os.environ.get("BRIDGE_TRAIN_YAML_ALLOW", "").split(",") if p.strip()]
    return ALLOWED_PREFIXES + tuple(extra)


def _under(path: str, prefixes) -> str | None:
    """The first of ``prefixes`` that ``path`` is or lies under ('torch.hub.load' under 'torch.hub')."""
    return next((p for p in prefixes if path == p or path.startswith(p + ".")), None)


def _denied(path: str, where: str, shown: str) -> None:
    denied = _under(path, DENIED_TARGETS)
    if denied is not None:
        via = "" if shown == path else f" (it is {path})"
        raise ConfigError(
            f"{where}: refused _target_ {shown!r}{via}: {denied} loads files, runs code or starts processes, which "
            "no YAML file or flag may name (they are data; a recipe file, trusted Python, may set such a value)")


def _check_target(path: str, where: str) -> None:
    if not isinstance(path, str) or not path:
        raise ConfigError(f"{where}: _target_ must be a dotted import path, got {path!r}")
    parts = path.split(".")
    if any(p.startswith("_") or not p.isidentifier() for p in parts):
        raise ConfigError(f"{where}: refused _target_ {path!r}: private or malformed names are not allowed")
    if _under(path, allowed_prefixes()) is None:
        raise ConfigError(
            f"{where}: refused _target_ {path!r}: only names under {', '.join(allowed_prefixes())} "
            "may be loaded from YAML (extend with BRIDGE_TRAIN_YAML_ALLOW=your_package)"
        )
    _denied(path, where, path)


def _check_found(obj: Any, path: str, where: str) -> None:
    """The object is what counts, not the text: a module passed on the way (``torch.os``) or the
    module a function really lives in (``torch.os.system`` is posix.system) must be allowed too."""
    if inspect.ismodule(obj):
        home, name = obj.__name__, obj.__name__
    elif callable(obj):
        home = getattr(obj, "__module__", None)
        qualname = getattr(obj, "__qualname__", None)
        if not isinstance(home, str):
            raise ConfigError(f"{where}: refused _target_ {path!r}: cannot tell which module {obj!r} comes from")
        name = f"{home}.{qualname}" if isinstance(qualname, str) else home
    else:
        return  # data (a dtype, an enum member, a number): nothing to run
    if _under(home, allowed_prefixes()) is None:
        raise ConfigError(f"{where}: refused _target_ {path!r}: it is {name}, which lies outside "
                          f"{', '.join(allowed_prefixes())} (reached through an attribute of an allowed module)")
    _denied(home, where, path)
    _denied(name, where, path)


def _import_path(path: str, where: str = "") -> Any:
    """Import the longest importable module prefix of ``path`` and getattr the rest, checking
    every module passed and the object found (``_check_found``) when ``where`` is given."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
            if where and inspect.ismodule(obj):
                _check_found(obj, path, where)
        if where:
            _check_found(obj, path, where)
        return obj
    raise ImportError(path)


def resolve_target(path: str, where: str) -> Any:
    """Resolve an allow-listed import path: the text checked before any import, the object
    found after (``_check_found``)."""
    _check_target(path, where)
    try:
        return _import_path(path, where or "value")
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


# ----------------------------------------------------------------------------- value -> YAML
MARKERS = ("_target_", "_call_", "_partial_", "_args_")
"""The keys of a ``_target_`` mapping that are not keyword arguments."""


def join_path(where: str, key) -> str:
    """The dotted path of ``key`` under ``where`` (for messages: 'model.num_layers')."""
    return f"{where}.{key}" if where else str(key)


def encode(value: Any, where: str = "") -> Any:
    """Turn a config value into plain YAML data (dicts, lists, scalars): dataclasses as mappings
    whose first key ``_target_`` names the class, other objects as ``_target_`` references."""
    if value is None or isinstance(value, (bool, int, float, str)) and not isinstance(value, enum.Enum):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        data = {"_target_": qualified_name(type(value))}
        for f in init_fields(value):
            data[f.name] = encode(getattr(value, f.name), join_path(where, f.name))
        return data
    if isinstance(value, (list, tuple)):
        return [encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {str(k): encode(v, join_path(where, k)) for k, v in value.items()}
    if isinstance(value, functools.partial):
        data = {"_target_": encode(value.func, where)["_target_"], "_partial_": True}
        if value.args:
            data["_args_"] = [encode(a, where) for a in value.args]
        data.update({k: encode(v, join_path(where, k)) for k, v in value.keywords.items()})
        return data
    if isinstance(value, (torch.dtype, enum.Enum, type)) or callable(value):
        try:
            return {"_target_": qualified_name(value), "_call_": False}
        except TypeError as e:
            raise ConfigError(f"cannot save {where} to YAML: {e}") from None
    raise ConfigError(f"cannot save {where} to YAML: values of type {type(value).__name__} are not supported")
