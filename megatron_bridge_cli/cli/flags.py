"""The flag table: one ``--SECTION.FIELD`` flag for every user field of the config tree.

Generated from the dataclasses, never written by hand: every init field (not private, not
``init=False``) of every class a section can hold gets a flag. A section's classes are its
declared type, every kind it can be switched to (``SECTION_KINDS``: GPT/T5/Mamba for model,
LoRA/DoRA for peft, ...) and whatever class the resolved recipe actually put there (a user's
own provider subclass brings its own fields). A field that several kinds share is one flag;
which class's type rules apply is decided when the value is set, from the object in place.

Spellings: ``--model.num_layers`` is canonical; hyphens are accepted anywhere in the name
(``--model.num-layers``, ``--mixed-precision.fp8-recipe``) and every bool has ``--no-`` form.
A dataclass-typed field nested inside a section becomes a section of its own (``a.b.c``).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

from megatron_bridge_cli import typeinfo
from megatron_bridge_cli.typeinfo import field_type_hints, init_fields

__all__ = ["Flag", "Section", "FlagTable", "build_table", "canonical", "closest_flags", "kind_class"]


@dataclass(frozen=True)
class Section:
    """A dataclass-valued node of the tree (``model``, ``peft``, ...)."""

    path: str
    declared: type
    """The annotated type (Optional unwrapped)."""

    optional: bool
    """May be None (switched off); ``--peft=null``."""

    kinds: tuple[tuple[str, Callable[[], Any]], ...]
    """Names it can be switched to, with their factories (``--peft=lora``)."""

    classes: tuple[type, ...]
    """Classes whose fields give this section's flags."""


@dataclass(frozen=True)
class Flag:
    """One ``--SECTION.FIELD`` flag."""

    path: str
    section: str
    name: str
    hint: Any
    """Type of the field in the first class that has it (used for --help and the snapshot)."""

    owners: tuple[type, ...]
    """Every class that has the field (to tell 'wrong model kind' from 'no such flag')."""

    @property
    def is_bool(self) -> bool:
        return typeinfo.unwrap_optional(self.hint)[0] is bool


def canonical(option: str) -> str:
    """'--Model.num-layers' -> 'model.num_layers' style lookup key (hyphens -> underscores)."""
    return option.lstrip("-").replace("-", "_")


def kind_class(factory: Callable[[], Any]) -> type:
    """The class a kind factory builds (classes are their own factory; presets are called)."""
    return factory if isinstance(factory, type) else type(factory())


class FlagTable:
    """Sections and flags, with lookup by any accepted spelling."""

    def __init__(self, sections: list[Section], flags: list[Flag]):
        self.sections = {s.path: s for s in sections}
        self.flags = {f.path: f for f in flags}

    def section_flags(self, section: str) -> list[Flag]:
        """Flags directly in ``section``, in declaration order."""
        return [f for f in self.flags.values() if f.section == section]

    def listing(self) -> list[str]:
        """One line per flag and section switch, for the snapshot that pins the CLI."""
        lines = []
        for section in self.sections.values():
            names = [n for n, _ in section.kinds] + (["null"] if section.optional else [])
            if names:
                lines.append(f"--{section.path} {{{','.join(names)}}}")
            for flag in self.section_flags(section.path):
                neg = f" | --no-{flag.path}" if flag.is_bool else ""
                lines.append(f"--{flag.path} {typeinfo.type_name(flag.hint)}{neg}")
        return lines

    def lookup(self, option: str) -> tuple[Optional[Flag], Optional[Section], bool]:
        """(flag, section, negated) for an option string; (None, None, False) when unknown."""
        key = canonical(option)
        if key in self.flags:
            return self.flags[key], None, False
        if key in self.sections:
            return None, self.sections[key], False
        if key.startswith("no_") and key[3:] in self.flags and self.flags[key[3:]].is_bool:
            return self.flags[key[3:]], None, True
        return None, None, False

    def suggestions(self, option: str) -> list[str]:
        """Closest real flags to a misspelled one, as ``--path`` (see closest_flags)."""
        close = closest_flags(option, {p: (f.section, f.name) for p, f in self.flags.items()}, self.sections)
        return ["--" + p for p in close]


def closest_flags(option: str, flags: dict[str, tuple[str, str]], sections: Iterable[str]) -> list[str]:
    """Paths of the real flags closest to a misspelled option: same-section fields first, then
    the same field name in other sections (``--train.lr`` -> ``optimizer.lr``), then anything
    close. ``flags`` maps each path to its (section, field name). Shared by the live flag table
    and the cached schema, so both suggest alike."""
    key = option.split("=", 1)[0].lstrip("-+~").replace("-", "_")
    key = key[3:] if key.startswith("no_") and key[3:] not in flags else key
    section, _, name = key.rpartition(".")
    found: list[str] = []
    names = [n for s, n in flags.values() if s == section]
    found += [f"{section}.{n}" for n in difflib.get_close_matches(name, names, n=3, cutoff=0.6)]
    found += [p for p, (_, n) in flags.items() if n == (name or key) and p not in found]
    if not found:
        found = difflib.get_close_matches(key, list(flags) + list(sections), n=3, cutoff=0.7)
    return found[:3]


def _walk(path: str, declared: type, optional: bool, kinds: dict, live: Iterable[type],
          sections: list[Section], flags: dict[str, tuple[Flag, list[type]]]) -> None:
    classes: list[type] = []
    for cls in (declared, *(kind_class(f) for f in kinds.values()), *live):
        if cls not in classes and dataclasses.is_dataclass(cls):
            classes.append(cls)
    sections.append(Section(path, declared, optional, tuple(kinds.items()), tuple(classes)))
    for cls in classes:
        hints = field_type_hints(cls)
        for f in init_fields(cls):
            inner, opt = typeinfo.unwrap_optional(hints[f.name])
            child = f"{path}.{f.name}"
            if isinstance(inner, type) and dataclasses.is_dataclass(inner):
                if not any(s.path == child for s in sections):
                    _walk(child, inner, opt, {}, (), sections, flags)
            elif child in flags:
                flags[child][1].append(cls)  # a field several kinds share is one flag
            else:
                flags[child] = (Flag(child, path, f.name, hints[f.name], ()), [cls])


@functools.lru_cache(maxsize=8)
def _build(root: type, kinds_key: tuple, live: tuple) -> FlagTable:
    kinds_by_section = dict(kinds_key)
    live_by_section = dict(live)
    sections: list[Section] = []
    flags: dict[str, tuple[Flag, list[type]]] = {}  # path -> (flag, classes that have it)
    hints = field_type_hints(root)
    for f in init_fields(root):
        inner, optional = typeinfo.unwrap_optional(hints[f.name])
        if not (isinstance(inner, type) and dataclasses.is_dataclass(inner)):
            continue  # the container holds only sections today; plain fields would go here
        _walk(f.name, inner, optional, dict(kinds_by_section.get(f.name, ())),
              live_by_section.get(f.name, ()), sections, flags)
    return FlagTable(sections, [dataclasses.replace(f, owners=tuple(owners)) for f, owners in flags.values()])


def build_table(container: Any = None) -> FlagTable:
    """The flag table of ConfigContainer, including the classes ``container`` holds."""
    from megatron_bridge_cli.config.container import SECTION_KINDS, ConfigContainer

    kinds_key = tuple((name, tuple(kinds.items())) for name, kinds in SECTION_KINDS.items())
    live = ()
    if container is not None:
        live = tuple(
            (f.name, (type(getattr(container, f.name)),))
            for f in init_fields(container)
            if dataclasses.is_dataclass(getattr(container, f.name))
        )
    return _build(ConfigContainer, kinds_key, live)
