"""--help: an overview by section, and each section's flags with type, value and docstring.

Hundreds of megatron-core fields would drown the overview, so plain ``--help`` lists the
options and the sections (with their flag counts); ``--help SECTION`` lists one section's
flags, ``--help all`` every flag, and ``--help TEXT`` the flags whose name contains TEXT.
Rendered from a flag schema (schema.py), so help for a recipe is served from the on-disk cache
without importing torch; with config files or flags on the command line, main() builds the
schema of the resolved tree, so ``--model.num_layers=7 --help model`` shows 7.
"""

from __future__ import annotations

import textwrap

from megatron_bridge_cli.errors import ConfigError

__all__ = ["USAGE", "render_help", "list_recipes"]

WIDTH = 100

USAGE = """\
usage: bridge-train [--recipe NAME | FILE.py[:FUNCTION] | FILE.yaml] [--config-file FILE]...
                    [--SECTION.FIELD=VALUE | --SECTION.FIELD VALUE | SECTION.FIELD=VALUE]...
                    [--print-config] [--dry-run [--world-size N]] [--list-recipes]
                    [--nproc-per-node N [--nnodes N --node-rank R --master-addr A --master-port P]]
                    [--completion bash|zsh|fish] [-h | --help [SECTION | all | TEXT]]"""

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
    ("--completion SHELL", "Print the completion script for bash, zsh, fish, tcsh or powershell "
                           "(eval \"$(bridge-train --completion bash)\")."),
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
  dotlist   model.num_layers=4 train.train_iters=100 (Megatron-Bridge style; ~peft switches off)
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


def _kinds_text(section: dict) -> str:
    names = list(section["kinds"]) + (["null"] if section["optional"] else [])
    return "{" + ",".join(names) + "}" if names else ""


def _flag_lines(flag: dict, section: dict) -> list[str]:
    value = ""
    if flag["value"] is not None:
        value = f"  ({section['label']}: {flag['value']}"
        if flag["default"] is not None:
            value += f"; {section['shown']} default: {flag['default']}"  # what the recipe changed
        value += ")"
    head = f"  --{flag['path']} {flag['type']}"
    if flag["bool"]:
        head += f" | --no-{flag['path']}"
    return [head + value] + _wrap(flag["doc"] or "(undocumented)", 8)


def _section_lines(schema: dict, section: dict) -> list[str]:
    lines = [f"{section['path']}:"]
    if section["state"] == "off":
        lines.append(f"  (off; switch on with --{section['path']}={_kinds_text(section)}; "
                     f"defaults of {section['shown']} shown)")
    elif section["kinds"]:
        lines.append(f"  ({section['shown']}; switch with --{section['path']}={_kinds_text(section)})")
    other = []
    for flag in schema["flags"]:
        if flag["section"] != section["path"]:
            continue
        if flag["shown"]:
            lines += _flag_lines(flag, section)
        else:
            other.append(flag)
    if other:
        owners = sorted({c for f in other for c in f["owners"]})
        lines += _wrap(f"{len(other)} more flag(s) of other kinds ({', '.join(owners)}): "
                       + ", ".join(f"--{f['path']}" for f in other[:8]) + (" ..." if len(other) > 8 else ""), 2)
    return lines


def _overview(schema: dict) -> list[str]:
    lines = [USAGE, "", "Train a megatron-core model described by one tree of dataclasses. Layers, each overriding",
             "the one before: recipe < each --config-file in order < flags in order (last wins).", "", "options:"]
    for head, text in _OPTIONS:
        lines += _entry("  " + head, text.format(default=schema["default_recipe"]), 24)
    lines += ["", _VALUES, "",
              "sections (--help SECTION lists its flags with types, current values and docs):"]
    for section in schema["sections"]:
        count = sum(1 for f in schema["flags"] if f["section"] == section["path"])
        kinds = _kinds_text(section)[1:-1].replace(",", ", ")
        kinds = f" Kinds: {kinds}." if kinds else ""
        text = f"[{section['state']}, {count} flags] {section['doc']}{kinds}".rstrip()
        lines += _entry(f"  {section['path']}", text, 24)
    return lines


def render_help(schema: dict, topic: str) -> str:
    """Help text for ``topic``: '' (overview), 'all', a section name, or a search text."""
    from megatron_bridge_cli.cli.schema import section_paths, suggest_flags

    sections = section_paths(schema)
    key = topic.strip().lstrip("-").replace("-", "_")
    if not key:
        lines = _overview(schema)
    elif key == "all":
        lines = [USAGE]
        for section in schema["sections"]:
            lines += [""] + _section_lines(schema, section)
    elif key in sections:
        lines = _section_lines(schema, sections[key])
    else:
        matches = [f for f in schema["flags"] if key in f["path"]]
        if not matches:
            close = suggest_flags(schema, key)
            hint = f"; did you mean {' or '.join('--' + c for c in close)}?" if close else ""
            raise ConfigError(f"--help {topic}: no section or flag matches{hint} "
                              f"(sections: {', '.join(sections)})")
        lines = [f"flags matching {topic!r}:"]
        for flag in matches:
            section = sections[flag["section"]]
            lines += _flag_lines(flag if flag["shown"] else {**flag, "value": None}, section)
    return "\n".join(lines) + "\n"


def list_recipes(schema: dict) -> str:
    """--list-recipes: name and first docstring line of each built-in recipe."""
    rows, default = schema["recipes"], schema["default_recipe"]
    width = max(len(n) for n, _ in rows) + 2
    lines = ["built-in recipes (--recipe NAME; * is the default):"]
    lines += [f"{'*' if n == default else ' '} {n.ljust(width)}{doc}" for n, doc in rows]
    return "\n".join(lines)
