"""The flag schema: everything the parser, --help and completion need, as plain JSON data.

The flag table (flags.py) is built from live dataclasses, so it needs torch and megatron-core
imported (~4-6 s here). The schema is that table flattened for one recipe: per section its
kinds and docstring, per flag its type label, value shape, choices, docstring and the recipe's
value. It is cached on disk (cache.py), so ``--help``, completion and an unknown-flag error are
served without importing torch; anything that needs real values (``--print-config``,
``--dry-run``, training) still builds the real tree and parses against a schema of it.

    {"recipe": ..., "default_recipe": ..., "recipes": [[name, doc], ...],
     "sections": [{"path", "optional", "kinds", "doc", "class_doc", "state", "shown", "label"}, ...],
     "flags": [{"path", "section", "name", "type", "bool", "list", "choices", "owners",
                "shown", "value", "default", "doc"}, ...]}

This module imports nothing heavy at the top: building a schema imports the config package,
reading one does not.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
from typing import Literal, Optional

__all__ = ["FORMAT", "schema_of", "show_value", "suggest_flags", "section_paths"]

FORMAT = 2
"""Bumped whenever the layout above changes (part of the cache key)."""


# ----------------------------------------------------------------------------- building (imports torch)
def show_value(value) -> str:
    """A value as a user would type it."""
    import torch

    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, torch.dtype):
        return str(value).replace("torch.", "")
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, functools.partial):
        return f"partial({show_value(value.func)}, ...)"
    if callable(value) and hasattr(value, "__qualname__"):
        module = getattr(value, "__module__", "") or ""
        return value.__name__ if module.startswith(("torch", "megatron.core.activations")) else \
            f"{module}.{value.__qualname__}"
    if isinstance(value, (list, tuple)):
        return ",".join(show_value(v) for v in value) if value else "[]"
    return str(value)


def _choices(hint) -> Optional[list[str]]:
    """Values completion can offer for a field (bools, Literals, Enums, dtypes; null if optional)."""
    from megatron_bridge_cli import typeinfo

    inner, optional = typeinfo.unwrap_optional(hint)
    found: list[str] = []
    for member in typeinfo.members(inner):
        if member is bool:
            found += ["true", "false"]
        elif typeinfo.is_dtype(member):
            found += ["bf16", "fp16", "fp32"]
        elif typeinfo.origin(member) is Literal or isinstance(member, type) and issubclass(member, enum.Enum):
            found += typeinfo.choices(member)
    if not found:
        return None
    return found + (["null"] if optional else [])


def _class_default(cls: type, name: str):
    from megatron_bridge_cli.typeinfo import init_fields

    f = next((f for f in init_fields(cls) if f.name == name), None)
    if f is None:
        return dataclasses.MISSING
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _section_object(cfg, path: str):
    obj = cfg
    for part in path.split("."):
        obj = getattr(obj, part, None) if obj is not None else None
    return obj


def schema_of(cfg, recipe: Optional[str] = None, docs: bool = True) -> dict:
    """The schema of a live ConfigContainer: flags, the values it holds, and (``docs``) help texts."""
    from megatron_bridge_cli import typeinfo, values
    from megatron_bridge_cli.cli.docs import field_doc
    from megatron_bridge_cli.cli.flags import build_table, kind_class
    from megatron_bridge_cli.cli.recipe_loader import describe_recipes, recipe_table
    from megatron_bridge_cli.config.container import ConfigContainer
    from megatron_bridge_cli.typeinfo import init_fields

    table = build_table(cfg)
    sections, flags = [], []
    for section in table.sections.values():
        obj = _section_object(cfg, section.path)
        if obj is None:  # off: show the defaults of the first kind
            cls = kind_class(section.kinds[0][1]) if section.kinds else section.declared
            shown, label = (section.kinds[0][1]() if section.kinds else None), "default"
        else:
            cls, shown, label = type(obj), obj, "current"
        names = {f.name for f in init_fields(cls)}
        doc = field_doc(ConfigContainer, section.path) if docs and "." not in section.path else ""
        class_doc = (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ") if docs else ""
        sections.append({
            "path": section.path, "optional": section.optional, "kinds": [n for n, _ in section.kinds],
            "doc": doc, "class_doc": class_doc, "state": "off" if obj is None else type(obj).__name__, "shown": cls.__name__,
            "label": label,
        })
        for flag in table.section_flags(section.path):
            mine = flag.name in names
            value = default = None
            if mine and shown is not None:
                value = show_value(getattr(shown, flag.name))
                d = _class_default(cls, flag.name)
                if d is not dataclasses.MISSING and show_value(d) != value:
                    default = show_value(d)
            flags.append({
                "path": flag.path, "section": flag.section, "name": flag.name,
                "type": typeinfo.type_name(flag.hint), "bool": flag.is_bool,
                "list": values.takes_list(flag.hint), "choices": _choices(flag.hint),
                "owners": [c.__name__ for c in flag.owners], "shown": mine, "value": value, "default": default,
                "doc": (field_doc(cls if mine else flag.owners[0], flag.name) or "(undocumented)") if docs else "",
            })
    recipes, default_recipe = recipe_table()
    return {
        "format": FORMAT, "recipe": recipe, "default_recipe": default_recipe,
        "recipes": [list(r) for r in describe_recipes()] if docs else [[n, ""] for n in recipes],
        "sections": sections, "flags": flags,
    }


# ----------------------------------------------------------------------------- reading (no imports)
def section_paths(schema: dict) -> dict[str, dict]:
    return {s["path"]: s for s in schema["sections"]}


def suggest_flags(schema: dict, option: str) -> list[str]:
    """Paths of the real flags closest to a misspelled one (flags.closest_flags)."""
    from megatron_bridge_cli.cli.flags import closest_flags  # light: no torch

    flags = {f["path"]: (f["section"], f["name"]) for f in schema["flags"]}
    return closest_flags(option, flags, [s["path"] for s in schema["sections"]])
