"""bridge-train's argparse front end, and the API to put its flags on a parser of your own.

The traps a generated command line has, and argparse's answers to them:

- Prefix matching (``--model.num_layer`` silently taken for another flag): ``allow_abbrev=False``.
- Flags known only after the recipe loads (a recipe may bring its own classes): two phases.
  ``parse_globals`` reads ``--recipe``, ``--config-file`` and the other options with
  ``parse_known_args``; the full parser is then built from the resolved recipe's flag schema
  (schema.py; cached on disk, so this costs no torch import).
- Order of application (``--peft=lora --peft.dim=8``; last flag wins): every config argument
  uses the ``_Record`` action, which appends ``Override(option, path, tokens, kind)`` to the
  namespace in command-line order. Values stay text until ``apply_arguments`` types them
  against the class actually in place (a section switch changes which class that is).
- Negative numbers as values (``--optimizer.lr -3e-4``): argparse's negative-number test
  is widened to scientific notation.
- Usage dumps: ``error`` raises ConfigError; main() prints one paragraph with the suggestion.

Spellings: ``--model.num_layers`` and ``--model.num-layers`` (and ``--no-`` for bools) are
option strings of one argument. Megatron-Bridge's positional overrides (``model.num_layers=4``,
``+model.x=1``, ``~peft``) are rewritten to the same flags before parsing: a bare
``KEY=VALUE`` whose KEY starts with a section name is an override.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from megatron_bridge_cli.errors import ConfigError

__all__ = [
    "PROG", "Override", "Globals", "BridgeArgumentParser", "add_config_arguments", "apply_arguments",
    "overrides_of", "build_parser", "parse_globals", "parse_overrides", "parse_command_line",
    "worker_argv", "COMPLETION_SHELLS",
]

PROG = "bridge-train"
NUMBER = re.compile(r"^-(\d[\d_]*\.?\d*|\.\d+)([eE][-+]?\d+)?$")
"""Tokens that are values even though they start with '-': -1, -.5, -3e-4, -1_000."""

COMPLETION_SHELLS = ("bash", "zsh", "fish", "tcsh", "powershell")
_OVERRIDES = "_bridge_train_overrides"
_LAUNCH = ("--nproc-per-node", "--nnodes", "--node-rank", "--master-addr", "--master-port", "--max-restarts")
_DOTLIST = re.compile(r"^(\+{1,2}|~)?([A-Za-z_][\w-]*)((?:\.[\w-]+)*)(?:=(.*))?$", re.S)


@dataclass
class Override:
    """One config value from the command line, as typed: applied later, in this order."""

    option: str
    """The option as the user wrote it (for messages): ``--model.num-layers``."""

    path: str
    """Dotted path of the field or section (``model.num_layers``, ``peft``)."""

    tokens: list[str]
    """The value tokens ([] for a bare bool flag or a one-kind section switch)."""

    kind: str = "field"
    """'field', 'section' (``--peft=lora``) or 'negated' (``--no-model.bf16``)."""


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
    completion: Optional[str] = None
    nproc_per_node: Optional[int] = None
    nnodes: Optional[int] = None
    node_rank: Optional[int] = None
    master_addr: Optional[str] = None
    master_port: Optional[int] = None
    max_restarts: Optional[int] = None


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected an integer") from None


def _rephrase(err: argparse.ArgumentError) -> str:
    name = (err.argument_name or "").split("/")[0]
    message = err.message
    if message == "expected one argument":
        return f"{name} takes one value, got none"
    if message == "expected at least one argument":
        return f"{name} needs at least one value"
    ignored = re.match(r"ignored explicit argument (.*)", message)
    if ignored:
        return f"{name} takes no value, got {ignored.group(1)}"
    return f"{name}: {message}" if name else message


class BridgeArgumentParser(argparse.ArgumentParser):
    """ArgumentParser without prefix matching, with scientific-notation negative values, whose
    errors are ConfigErrors (one paragraph, exit 2) instead of a usage dump and SystemExit."""

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("prog", PROG)
        super().__init__(allow_abbrev=False, add_help=False, exit_on_error=False, **kwargs)
        self._negative_number_matcher = NUMBER

    def error(self, message: str):  # type: ignore[override]
        raise ConfigError(message)

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        try:
            return super().parse_known_args(args, namespace)
        except argparse.ArgumentError as e:
            message = _rephrase(e)
            action = self._option_string_actions.get((e.argument_name or "").split("/")[0])
            if message.endswith("takes one value, got none") and action is not None and action.metavar:
                message = f"{message} ({action.metavar})"
            raise ConfigError(message) from None


# ----------------------------------------------------------------------------- global options
def _add_global_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("options")
    add = group.add_argument
    add("--recipe", metavar="NAME|FILE.py[:FUNCTION]|FILE.yaml",
        help="Base config: a built-in recipe (see --list-recipes), a function returning a ConfigContainer in a "
             "Python file (trusted code: it is executed), or a YAML file written by --print-config.")
    add("--config-file", "--config_file", dest="config_files", action="append", default=[], metavar="FILE",
        help="YAML file of sections and fields to override (repeatable; applied left to right).")
    add("--print-config", "--print_config", action="store_true", help="Print the resolved config as YAML and exit.")
    add("--dry-run", "--dry_run", action="store_true",
        help="Resolve, finalize and validate; print derived values, parameter count and memory estimate; exit.")
    add("--world-size", "--world_size", type=_integer, metavar="N", help="World size for --dry-run.")
    add("--list-recipes", "--list_recipes", action="store_true", help="List the built-in recipes and exit.")
    add("-h", "--help", nargs="?", const="", default=None, metavar="TOPIC",
        help="Overview; --help SECTION, --help all, --help TEXT.")
    add("--version", action="store_true", help="Print the version and exit.")
    add("--completion", choices=COMPLETION_SHELLS, metavar="SHELL",
        help="Print the shell completion script for bash, zsh, fish, tcsh or powershell.")
    launch = parser.add_argument_group("launch", "Start workers on this node through torchrun's machinery.")
    launch.add_argument("--nproc-per-node", "--nproc_per_node", type=_integer, metavar="N",
                        help="Start N worker processes on this node and train in them.")
    launch.add_argument("--nnodes", type=_integer, metavar="N", help="Number of nodes (with --nproc-per-node).")
    launch.add_argument("--node-rank", "--node_rank", type=_integer, metavar="R", help="This node's rank.")
    launch.add_argument("--master-addr", "--master_addr", metavar="ADDR", help="Rendezvous host.")
    launch.add_argument("--master-port", "--master_port", type=_integer, metavar="PORT", help="Rendezvous port.")
    launch.add_argument("--max-restarts", "--max_restarts", type=_integer, metavar="K",
                        help="Restart the workers up to K times when one fails (torchrun's elastic restarts; with "
                             "--ft also when one hangs); each restart resumes from the latest checkpoint in "
                             "--checkpoint.save.")


def parse_globals(argv: Sequence[str]) -> Globals:
    """Phase one: the options that decide which parser to build (recipe, config files, modes)."""
    parser = BridgeArgumentParser()
    _add_global_options(parser)
    namespace, _ = parser.parse_known_args(list(argv))
    return Globals(**vars(namespace))


def worker_argv(argv: Sequence[str]) -> list[str]:
    """argv without the launcher options: what each launched worker runs with."""
    names = {o: "--" + o[2:].replace("-", "_") for o in _LAUNCH}
    spellings = set(names) | set(names.values())
    out, skip = [], False
    for token in argv:
        if skip:
            skip = False
        elif token in spellings:
            skip = True
        elif token.split("=", 1)[0] not in spellings:
            out.append(token)
    return out


# ----------------------------------------------------------------------------- config arguments
class _Record(argparse.Action):
    """Appends an Override to the namespace, so values apply in command-line order."""

    def __init__(self, option_strings, dest, path: str = "", kind: str = "field", **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.path, self.kind = path, kind

    def __call__(self, parser, namespace, values, option_string=None):
        tokens = [] if values is None else list(values) if isinstance(values, list) else [values]
        recorded = getattr(namespace, _OVERRIDES, None)
        if recorded is None:
            recorded = []
            setattr(namespace, _OVERRIDES, recorded)
        recorded.append(Override(option_string or self.path, self.path, tokens, self.kind))
        setattr(namespace, self.dest, False if self.kind == "negated" else (values if values is not None else True))


def _spellings(prefix: str, path: str) -> list[str]:
    names = [f"--{prefix}{path}"]
    hyphen = f"--{prefix}{path}".replace("_", "-")
    return names + [hyphen] if hyphen != names[0] else names


def _help_text(text: str) -> str:
    return text.replace("%", "%%")


def _flag_help(flag: dict) -> str:
    """The field's docstring, then its default and, where the recipe changed it, the recipe's value."""
    value, default = flag.get("value"), flag.get("default")
    shown = "" if value is None else f" (default: {value})" if default is None else \
        f" (recipe: {value}; default: {default})"
    return _help_text((flag.get("doc") or "") + shown)


def add_config_arguments(parser: argparse.ArgumentParser, config: Any, prefix: str = "", *,
                         docs: bool = True) -> argparse.ArgumentParser:
    """Add one argument group per config section and one argument per field to ``parser``.

    ``config`` is a ConfigContainer (its values become the help's recipe values) or a schema
    (schema.py). ``prefix`` goes between ``--`` and the dotted path (``prefix="cfg."`` gives
    ``--cfg.model.num_layers``) against clashes with a script's own flags. Each argument's
    ``dest`` is its dotted path; what was given is applied with ``apply_arguments``."""
    from megatron_bridge_cli.cli.schema import schema_of

    schema = config if isinstance(config, dict) else schema_of(config, docs=docs)
    if hasattr(parser, "_negative_number_matcher"):
        parser._negative_number_matcher = NUMBER  # --optimizer.lr -3e-4 is a value, not an option
    by_section: dict[str, list[dict]] = {}
    for flag in schema["flags"]:
        by_section.setdefault(flag["section"], []).append(flag)
    for section in schema["sections"]:
        path, kinds = section["path"], list(section["kinds"])
        names = kinds + (["null"] if section["optional"] else [])
        description = section.get("class_doc") or section.get("doc") or ""  # the class docstring
        group = parser.add_argument_group(f"{prefix}{path}", _help_text(description) or None)
        if names:
            action = group.add_argument(
                *_spellings(prefix, path), action=_Record, path=path, kind="section", nargs="?", dest=path,
                default=argparse.SUPPRESS, metavar="{" + ",".join(names) + "}",
                help=_help_text(f"Switch the section ({section['state']} now), or set several fields with a YAML "
                                "mapping ('{dim: 8}')."))
            action.completer = _choices_completer(names)  # type: ignore[attr-defined]
        for flag in by_section.get(path, []):
            nargs = "?" if flag["bool"] else "+" if flag["list"] else None
            action = group.add_argument(
                *_spellings(prefix, flag["path"]), action=_Record, path=flag["path"], nargs=nargs,
                dest=flag["path"], default=argparse.SUPPRESS, metavar=flag["type"], help=_flag_help(flag))
            if flag.get("choices"):
                action.completer = _choices_completer(flag["choices"])  # type: ignore[attr-defined]
            if flag["bool"]:
                group.add_argument(
                    *[f"--no-{s[2:]}" for s in _spellings(prefix, flag["path"])], action=_Record, path=flag["path"],
                    kind="negated", nargs=0, dest=flag["path"], default=argparse.SUPPRESS,
                    help=f"Set --{prefix}{flag['path']} to false.")
    return parser


def _choices_completer(choices: list[str]):
    def complete(prefix: str = "", **_: Any) -> list[str]:
        return [c for c in choices if c.startswith(prefix)]

    return complete


def overrides_of(namespace: argparse.Namespace) -> list[Override]:
    """The config values a parse recorded, in command-line order."""
    return list(getattr(namespace, _OVERRIDES, None) or [])


def apply_arguments(cfg, namespace: argparse.Namespace):
    """Layer the config values parsed into ``namespace`` onto ``cfg`` (in place; returned too)
    with bridge-train's rules: command-line order, typed against the class in place, each set
    path recorded as explicit. Raises ConfigError naming the flag on a bad value."""
    from megatron_bridge_cli.cli.layering import apply_overrides

    apply_overrides(cfg, overrides_of(namespace))
    return cfg


# ----------------------------------------------------------------------------- bridge-train's parser
def build_parser(schema: Optional[dict] = None) -> BridgeArgumentParser:
    """bridge-train's full parser (for argparse-manpage/sphinx-argparse: the default recipe's)."""
    if schema is None:
        from megatron_bridge_cli.cli.cache import cached_schema

        schema = cached_schema(None)
    parser = BridgeArgumentParser(
        description="Train a megatron-core model described by one tree of dataclasses: "
                    "recipe < --config-file... < flags (last wins).")
    _add_global_options(parser)
    return add_config_arguments(parser, schema)


def _top_sections(schema: dict) -> set[str]:
    return {s["path"] for s in schema["sections"] if "." not in s["path"]}


def dotlist_to_options(argv: Sequence[str], schema: dict) -> list[str]:
    """Megatron-Bridge style ``model.num_layers=4``, ``+x.y=1``, ``~peft`` -> ``--`` flags."""
    sections, out = _top_sections(schema), []
    for token in argv:
        m = None if token.startswith("-") else _DOTLIST.match(token)
        if m and (m.group(4) is not None or m.group(1) == "~") and m.group(2).replace("-", "_") in sections:
            key = m.group(2) + m.group(3)
            if m.group(1) == "~":
                if m.group(4) is not None:
                    raise ConfigError(f"{token!r}: ~KEY removes a value (null) and takes none")
                out.append(f"--{key}=null")
            else:
                out.append(f"--{key}={m.group(4)}")
            continue
        out.append(token)
    return out


def _too_many_values(argv: list[str], parser: argparse.ArgumentParser) -> Optional[ConfigError]:
    """'--model.num_layers 3 4': the first bare token past what its option takes, named with it."""
    option, values, room = None, [], 0
    for token in argv:
        if token.startswith("-") and not NUMBER.match(token):
            name, inline = token.split("=", 1)[0], "=" in token
            action = parser._option_string_actions.get(name)
            option, values = token, []
            room = 0 if inline or action is None else 1 if action.nargs in (None, "?") else \
                10**9 if action.nargs in ("+", "*") else 0
            continue
        values.append(token)
        if option is not None and len(values) > room:
            if room != 1:
                return None
            return ConfigError(f"{option} takes one value, got {len(values)}: {' '.join(values)!r} "
                               "(quote values with spaces)")
    return None


def _extra_error(token: str, schema: dict, argv: list[str], parser: argparse.ArgumentParser) -> ConfigError:
    from megatron_bridge_cli.cli.schema import suggest_flags

    if not token.startswith("-") or NUMBER.match(token):  # a second value for a one-value flag?
        too_many = _too_many_values(argv, parser)
        if too_many is not None:
            return too_many
    if token.startswith("--"):
        name = token.split("=", 1)[0]
        close = suggest_flags(schema, name)
        hint = f"; did you mean {' or '.join('--' + c for c in close)}?" if close else " (see --help)"
        return ConfigError(f"unknown flag {name}{hint}")
    if token.startswith("-") and not NUMBER.match(token):
        return ConfigError(f"unknown option {token!r}: flags are spelled --SECTION.FIELD=VALUE (see --help)")
    if "=" in token and _DOTLIST.match(token):
        key = token.split("=", 1)[0].lstrip("+~")
        close = suggest_flags(schema, key)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        return ConfigError(f"unknown override {key!r} in {token!r}{hint} (KEY=VALUE overrides name "
                           f"SECTION.FIELD; sections: {', '.join(sorted(_top_sections(schema)))})")
    return ConfigError(f"unexpected argument {token!r}: values follow a flag (--SECTION.FIELD {token}) or "
                       f"attach with '=' (see --help)")


def parse_overrides(argv: Sequence[str], schema: dict) -> list[Override]:
    """Phase two: every config value of ``argv``, in order, checked against ``schema``'s flags."""
    parser = build_parser(schema)
    options = dotlist_to_options(argv, schema)
    namespace, extras = parser.parse_known_args(options)
    if extras:
        raise _extra_error(extras[0], schema, options, parser)
    return overrides_of(namespace)


def parse_command_line(argv: Sequence[str], schema: Optional[dict] = None) -> tuple[Globals, list[Override]]:
    """(global options, config overrides in order); the schema defaults to the recipe's cached one."""
    g = parse_globals(argv)
    if schema is None:
        from megatron_bridge_cli.cli.cache import cached_schema

        schema = cached_schema(g.recipe)
    return g, parse_overrides(argv, schema)
