"""Split the command line into options, in order, before anything is imported or resolved.

Why not argparse: the flags are only known after the recipe is loaded (a recipe may bring its
own classes), flags must be applied in command-line order (``--peft=lora --peft.dim=8``;
last wins), and argparse's prefix matching (``--model.num_layer`` silently taken for
another flag), its handling of negative numbers as options and its usage dumps are exactly
the traps a generated CLI must not have. The grammar is small:

    --name=value             one value, verbatim (may start with '-')
    --name v1 [v2 ...]       the following tokens that are not options (so lists: --x 1 2 3)
    --name                   no value (bools, --dry-run)
    -h                       short help

A token is an option when it starts with '--' or is '-h'; '-1', '-3e-4' and '-.5' are values.
How many values an option may take is checked later, by whoever knows the option.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from megatron_bridge_cli.errors import ConfigError

__all__ = ["Option", "Globals", "split_argv", "GLOBAL_OPTIONS", "LAUNCH_OPTIONS"]

_NUMBER = re.compile(r"^-\.?\d")


@dataclass
class Option:
    """One option as typed: its name (with dashes), its values, and where it sat in argv."""

    name: str
    values: list[str]
    start: int
    """Index of the option token in argv."""

    end: int
    """One past its last value token."""

    inline: bool = False
    """The value was attached with '=' (``--x=1``)."""


def _is_option(token: str) -> bool:
    return token.startswith("--") and len(token) > 2 or token == "-h"


def _tokens(argv: list[str]) -> list[Option]:
    options: list[Option] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if not _is_option(token):
            if token.startswith("-") and not _NUMBER.match(token):
                raise ConfigError(f"unknown option {token!r}: flags are spelled --SECTION.FIELD=VALUE (see --help)")
            raise ConfigError(f"unexpected argument {token!r}: values follow a flag (--SECTION.FIELD {token}) or "
                              f"attach with '=' (see --help)")
        if "=" in token:
            name, value = token.split("=", 1)
            options.append(Option(name, [value], i, i + 1, inline=True))
            i += 1
            continue
        j = i + 1
        while j < len(argv) and not _is_option(argv[j]) and (not argv[j].startswith("-") or _NUMBER.match(argv[j])):
            j += 1
        options.append(Option(token, list(argv[i + 1:j]), i, j))
        i = j
    return options


# option name (hyphens read as underscores) -> Globals attribute
GLOBAL_OPTIONS = {
    "recipe": "recipe", "config_file": "config_files", "print_config": "print_config",
    "dry_run": "dry_run", "world_size": "world_size", "list_recipes": "list_recipes",
    "help": "help", "h": "help", "version": "version",
}
LAUNCH_OPTIONS = {
    "nproc_per_node": "nproc_per_node", "nnodes": "nnodes", "node_rank": "node_rank",
    "master_addr": "master_addr", "master_port": "master_port",
}
_INT_OPTIONS = {"world_size", "nproc_per_node", "nnodes", "node_rank", "master_port"}
_FLAG_OPTIONS = {"print_config", "dry_run", "list_recipes", "version"}


@dataclass
class Globals:
    """The options that are not config flags."""

    recipe: Optional[str] = None
    config_files: list[str] = field(default_factory=list)
    print_config: bool = False
    dry_run: bool = False
    world_size: Optional[int] = None
    list_recipes: bool = False
    help: Optional[str] = None
    """None: no help; '' plain --help; else the topic (--help model)."""

    version: bool = False
    nproc_per_node: Optional[int] = None
    nnodes: Optional[int] = None
    node_rank: Optional[int] = None
    master_addr: Optional[str] = None
    master_port: Optional[int] = None
    worker_argv: list[str] = field(default_factory=list)
    """argv without the launcher options: what each launched worker runs with."""


def _one_value(opt: Option) -> str:
    if len(opt.values) != 1:
        got = "none" if not opt.values else f"{len(opt.values)} ({' '.join(opt.values)})"
        raise ConfigError(f"{opt.name} takes one value, got {got}")
    return opt.values[0]


def split_argv(argv: list[str]) -> tuple[Globals, list[Option]]:
    """(global and launcher options, config flags in command-line order)."""
    g, flags, launch_spans = Globals(), [], []
    for opt in _tokens(argv):
        key = opt.name.lstrip("-").replace("-", "_")
        dest = GLOBAL_OPTIONS.get(key) or LAUNCH_OPTIONS.get(key)
        if dest is None:
            flags.append(opt)
            continue
        if key in LAUNCH_OPTIONS:
            launch_spans.append((opt.start, opt.end))
        if key in _FLAG_OPTIONS:
            if opt.values:
                raise ConfigError(f"{opt.name} takes no value, got {' '.join(opt.values)!r}")
            setattr(g, dest, True)
        elif dest == "help":
            if len(opt.values) > 1:
                raise ConfigError(f"{opt.name} takes at most one topic, got {' '.join(opt.values)!r}")
            g.help = opt.values[0] if opt.values else ""
        elif dest == "config_files":
            g.config_files.append(_one_value(opt))
        elif key in _INT_OPTIONS:
            value = _one_value(opt)
            try:
                setattr(g, dest, int(value))
            except ValueError:
                raise ConfigError(f"{opt.name}: invalid value {value!r}: expected an integer") from None
        else:
            setattr(g, dest, _one_value(opt))
    g.worker_argv = [t for i, t in enumerate(argv) if not any(a <= i < b for a, b in launch_spans)]
    return g, flags
