"""--help: an overview by section, and each section's flags with type, value and docstring.

Hundreds of megatron-core fields would drown the overview, so plain ``--help`` lists the
options and the sections (with their flag counts); ``--help SECTION`` lists one section's
flags, ``--help all`` every flag, and ``--help TEXT`` the flags whose name contains TEXT.
The value shown is the one this command line resolves to (recipe, config files and flags
applied), so ``bridge-train --recipe llama3_8b --help model`` shows Llama's values.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import textwrap

import torch

from megatron_bridge_cli.cli import typeinfo
from megatron_bridge_cli.cli.docs import field_doc
from megatron_bridge_cli.cli.flags import Flag, FlagTable, Section, kind_class
from megatron_bridge_cli.errors import ConfigError
from megatron_bridge_cli.serialization import init_fields

__all__ = ["USAGE", "render_help", "show_value"]

WIDTH = 100

USAGE = """\
usage: bridge-train [--recipe NAME | FILE.py[:FUNCTION] | FILE.yaml] [--config-file FILE]...
                    [--SECTION.FIELD=VALUE | --SECTION.FIELD VALUE]...
                    [--print-config] [--dry-run [--world-size N]] [--list-recipes]
                    [--nproc-per-node N [--nnodes N --node-rank R --master-addr A --master-port P]]
                    [-h | --help [SECTION | all | TEXT]]"""

_OPTIONS = [
    ("--recipe NAME|FILE.py[:FUNCTION]|FILE.yaml",
     "Base config: a built-in recipe (see --list-recipes), a function returning a ConfigContainer "
     "in a Python file, or a YAML file written by --print-config. Default: {default}."),
    ("--config-file FILE", "YAML file of sections and fields to override (repeatable; applied left to right)."),
    ("--print-config", "Print the resolved config as YAML (feed it back with --recipe or --config-file) and exit."),
    ("--dry-run", "Resolve, finalize and validate; print derived values, the exact parameter count and a "
                  "memory estimate per GPU; exit."),
    ("--world-size N", "World size for --dry-run (default: WORLD_SIZE, else --nproc-per-node x --nnodes, else 1)."),
    ("--list-recipes", "List the built-in recipes and exit."),
    ("--nproc-per-node N", "Start N worker processes on this node (torchrun's machinery) and train in them; "
                           "with --nnodes, --node-rank, --master-addr, --master-port for several nodes."),
    ("-h, --help [TOPIC]", "This overview; --help SECTION lists a section's flags, --help all every flag, "
                           "--help TEXT the flags whose name contains TEXT."),
]

_VALUES = """\
values:
  --train.train_iters=100 or --train.train_iters 100; hyphens work too (--train.train-iters)
  bool      --model.bf16, --model.bf16=true|false|1|0|yes|no, --no-model.bf16
  null      --train.train_iters=null (None and ~ too) for fields that may be unset
  list      --dataset.data_path=a,b or --dataset.data_path a b or --dataset.data_path='[a, b]'
  dict      --SECTION.FIELD='{key: value}' (YAML flow)
  dtype     bf16, bfloat16 or torch.bfloat16; function: silu, gelu or an import path
  choices   {a,b,c} fields and enums take a member name (--model.attention_backend=flash)
  sections  --peft=lora switches a section on or to another kind, --peft=null off,
            --peft='{dim: 8, alpha: 16}' sets several fields (YAML flow, as in --config-file)"""


def _wrap(text: str, indent: int) -> list[str]:
    pad = " " * indent
    lines = []
    for paragraph in text.split("\n"):
        lines += textwrap.wrap(paragraph, WIDTH, initial_indent=pad, subsequent_indent=pad,
                               break_on_hyphens=False) or [pad]
    return lines


def _entry(head: str, text: str, indent: int = 24) -> list[str]:
    if len(head) + 2 < indent:
        body = _wrap(text, indent)
        return [head.ljust(indent) + body[0].lstrip()] + body[1:] if body else [head]
    return [head] + _wrap(text, indent)


def show_value(value) -> str:
    """A value as a user would type it."""
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


def _section_object(cfg, section: Section):
    obj = cfg
    for part in section.path.split("."):
        obj = getattr(obj, part, None) if obj is not None else None
    return obj


def _kinds_text(section: Section) -> str:
    names = [n for n, _ in section.kinds] + (["null"] if section.optional else [])
    return "{" + ",".join(names) + "}" if names else ""


def _class_default(cls: type, name: str):
    """The dataclass default of a field (``dataclasses.MISSING`` when it has none)."""
    f = next((f for f in init_fields(cls) if f.name == name), None)
    if f is None:
        return dataclasses.MISSING
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _flag_lines(flag: Flag, obj, cls: type, label: str = "current") -> list[str]:
    hint = flag.hint
    value = ""
    if obj is not None:
        current, default = show_value(getattr(obj, flag.name)), _class_default(cls, flag.name)
        value = f"  ({label}: {current}"
        if default is not dataclasses.MISSING and show_value(default) != current:
            value += f"; {cls.__name__} default: {show_value(default)}"  # what the recipe changed
        value += ")"
    head = f"  --{flag.path} {typeinfo.type_name(hint)}"
    if flag.is_bool:
        head += f" | --no-{flag.path}"
    doc = field_doc(cls, flag.name) or "(undocumented)"
    return [head + value] + _wrap(doc, 8)


def _section_lines(cfg, table: FlagTable, section: Section) -> list[str]:
    obj = _section_object(cfg, section)
    lines = [f"{section.path}:"]
    if obj is None:
        first = kind_class(section.kinds[0][1]) if section.kinds else section.declared
        lines.append(f"  (off; switch on with --{section.path}={_kinds_text(section)}; "
                     f"defaults of {first.__name__} shown)")
        cls, shown, label = first, (section.kinds[0][1]() if section.kinds else None), "default"
    else:
        cls, shown, label = type(obj), obj, "current"
        if section.kinds:
            lines.append(f"  ({cls.__name__}; switch with --{section.path}={_kinds_text(section)})")
    names = {f.name for f in init_fields(cls)}
    other = []
    for flag in table.section_flags(section.path):
        if flag.name in names:
            lines += _flag_lines(flag, shown, cls, label)
        else:
            other.append(flag)
    if other:
        owners = sorted({c.__name__ for f in other for c in f.owners})
        lines += _wrap(f"{len(other)} more flag(s) of other kinds ({', '.join(owners)}): "
                       + ", ".join(f"--{f.path}" for f in other[:8]) + (" ..." if len(other) > 8 else ""), 2)
    return lines


def _overview(cfg, table: FlagTable, default_recipe: str) -> list[str]:
    from megatron_bridge_cli.config.container import ConfigContainer

    lines = [USAGE, "", "Train a megatron-core model described by one tree of dataclasses. Layers, each overriding",
             "the one before: recipe < each --config-file in order < flags in order (last wins).", "", "options:"]
    for head, text in _OPTIONS:
        lines += _entry("  " + head, text.format(default=default_recipe), 24)
    lines += ["", _VALUES, "",
              "sections (--help SECTION lists its flags with types, current values and docs):"]
    for section in table.sections.values():
        obj = _section_object(cfg, section)
        count = len(table.section_flags(section.path))
        state = "off" if obj is None else type(obj).__name__
        doc = field_doc(ConfigContainer, section.path) if "." not in section.path else ""
        kinds = _kinds_text(section)[1:-1].replace(",", ", ")
        kinds = f" Kinds: {kinds}." if kinds else ""
        lines += _entry(f"  {section.path}", f"[{state}, {count} flags] {doc}{kinds}".rstrip(), 24)
    return lines


def render_help(cfg, table: FlagTable, topic: str, default_recipe: str) -> str:
    """Help text for ``topic``: '' (overview), 'all', a section name, or a search text."""
    key = topic.strip().lstrip("-").replace("-", "_")
    if not key:
        lines = _overview(cfg, table, default_recipe)
    elif key == "all":
        lines = [USAGE]
        for section in table.sections.values():
            lines += [""] + _section_lines(cfg, table, section)
    elif key in table.sections:
        lines = _section_lines(cfg, table, table.sections[key])
    else:
        matches = [f for f in table.flags.values() if key in f.path]
        if not matches:
            close = table.suggestions(key)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise ConfigError(f"--help {topic}: no section or flag matches{hint} "
                              f"(sections: {', '.join(table.sections)})")
        lines = [f"flags matching {topic!r}:"]
        for flag in matches:
            obj = _section_object(cfg, table.sections[flag.section])
            cls = type(obj) if obj is not None else flag.owners[0]
            lines += _flag_lines(flag, obj if obj is not None and hasattr(obj, flag.name) else None, cls)
    return "\n".join(lines) + "\n"
