"""Apply the layers: recipe < each --config-file in order < flags in order (last wins).

Every value a YAML file or flag sets is recorded in ``cfg.explicit_paths``, so later steps
(mixed-precision presets, finalize) never overwrite it. Nothing is derived or validated here;
finalize() does that once, at the end.

A YAML file that is a whole-container dump (top-level ``_target_``, as --print-config and
to_yaml write) is a snapshot, not a list of choices: only the paths in its ``_explicit_`` list
(written by --print-config) become explicit, so reloading it does not block presets.

Sections are switched by name (``--peft=lora``, ``model: t5`` in YAML) or off with null.
Switching builds the kind's defaults and carries over the fields the user set explicitly
before (YAML or earlier flags) that the new kind also has; the recipe's other values of that
section are dropped. Setting a field of a switched-off section with a single kind (``--ft``)
switches it on; with several kinds (``--peft``) it is an error naming them. A YAML mapping of
fields for a switched-off section (``peft: {dim: 8}``, ``--peft='{dim: 8}'``) switches it on
with its first kind. A YAML file reports every unknown key and bad value it has at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
from functools import partial
from typing import Any, Iterable, Optional


from megatron_bridge_cli import typeinfo, values
from megatron_bridge_cli.cli.flags import Flag, FlagTable, Section, build_table
from megatron_bridge_cli.cli.parser import Override
from megatron_bridge_cli.config.container import EXPLICIT_KEY
from megatron_bridge_cli.config.models.gpt import GPTModelProvider
from megatron_bridge_cli.errors import ConfigError
from megatron_bridge_cli.serialization import load_yaml_file, load_yaml_text
from megatron_bridge_cli.targets import resolve_target
from megatron_bridge_cli.typeinfo import field_type_hints, init_fields, suggest
from megatron_bridge_cli.values import decode_dataclass

__all__ = ["resolve", "merge_mapping", "merge_config_file", "apply_overrides", "switch_section"]

HF_PREFIX = "hf:"
"""``--model=hf:PATH``: the architecture of the HuggingFace folder PATH (its config.json)."""
_OFF_WORDS = {"null", "none", "None", "Null", "NULL", "~", "off"}


def _get(cfg, path: str):
    obj = cfg
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _set(cfg, path: str, value) -> None:
    parent, _, name = path.rpartition(".")
    setattr(_get(cfg, parent) if parent else cfg, name, value)


def _kind_names(section: Section) -> list[str]:
    return [n for n, _ in section.kinds] + (["null"] if section.optional else [])


def _current_kind(section: Section, obj) -> str:
    names = [n for n, f in section.kinds if isinstance(f, type) and type(obj) is f]
    return f"{type(obj).__name__} ({names[0]})" if names else type(obj).__name__


# ----------------------------------------------------------------------------- sections
def switch_section(cfg, section: Section, choice: str, where: str) -> None:
    """Set ``section`` to the kind named ``choice`` (or off with null)."""
    explicit = cfg.explicit_paths
    prefix = section.path + "."
    if choice in _OFF_WORDS:
        if not section.optional:
            raise ConfigError(f"{where}: --{section.path} cannot be switched off; choose one of "
                              f"{', '.join(_kind_names(section))}")
        _set(cfg, section.path, None)
        explicit.difference_update({p for p in explicit if p.startswith(prefix)})
        explicit.add(section.path)
        return
    factories = dict(section.kinds)
    if section.path == "model" and choice.startswith(HF_PREFIX):  # --model=hf:/models/Qwen3-8B
        factories = {choice: partial(GPTModelProvider.from_hf, choice[len(HF_PREFIX):])}
    if choice not in factories:
        prefixed = [n for n in factories if n.startswith(choice)]
        hint = suggest(choice, factories) if factories else ""
        if prefixed and not hint:  # 'bf16' -> 'bf16_mixed'
            hint = "; did you mean " + " or ".join(repr(n) for n in prefixed[:3]) + "?"
        choices = ", ".join(_kind_names(section)) or "none"
        raise ConfigError(f"{where}: unknown kind {choice!r}{hint} (kinds of --{section.path}: {choices})")
    old, new = _get(cfg, section.path), factories[choice]()
    new_fields = {f.name for f in init_fields(new)}
    for path in sorted(p for p in explicit if p.startswith(prefix)):
        name = path[len(prefix):]
        if "." in name:
            continue
        if old is not None and name in new_fields and hasattr(old, name):
            setattr(new, name, getattr(old, name))
        else:
            explicit.discard(path)
    _set(cfg, section.path, new)
    explicit.add(section.path)
    if section.path == "model" and choice.startswith(HF_PREFIX):
        _hf_tokenizer(cfg, choice[len(HF_PREFIX):])


def _hf_tokenizer(cfg, folder: str) -> None:
    """``--model=hf:DIR`` also takes DIR's tokenizer, unless a tokenizer was chosen explicitly."""
    import os

    if any(p == "tokenizer" or p.startswith("tokenizer.") for p in cfg.explicit_paths):
        return
    if any(os.path.isfile(os.path.join(folder, f)) for f in ("tokenizer.json", "tokenizer_config.json")):
        cfg.tokenizer.tokenizer_type, cfg.tokenizer.tokenizer_model = "HuggingFaceTokenizer", folder


def _section_object(cfg, section: Section, where: str):
    """The object a field is set on, switching a single-kind section on when it is off."""
    obj = _get(cfg, section.path)
    if obj is not None:
        return obj
    if len(section.kinds) == 1:
        switch_section(cfg, section, section.kinds[0][0], where)
        return _get(cfg, section.path)
    kinds = " or ".join(f"--{section.path}={n}" for n, _ in section.kinds)
    raise ConfigError(f"{where}: --{section.path} is off; switch it on first with {kinds}")


def _field(obj, name: str) -> Optional[dataclasses.Field]:
    return next((f for f in init_fields(obj) if f.name == name), None)


def _assign(cfg, table: FlagTable, flag: Flag, where: str, *, tokens=None, value=None) -> None:
    """Set one field from flag text (``tokens``) or a YAML value, and mark it explicit."""
    section = table.sections[flag.section]
    obj = _section_object(cfg, section, where)
    f = _field(obj, flag.name)
    if f is None:
        owners = ", ".join(c.__name__ for c in flag.owners)
        switch = [n for n, fac in section.kinds if isinstance(fac, type) and fac in flag.owners]
        hint = f"; switch first with --{section.path}={switch[0]}" if switch else ""
        raise ConfigError(f"{where}: only {owners} has this field, but --{section.path} is "
                          f"{_current_kind(section, obj)}{hint}")
    if value == "???":  # OmegaConf's MISSING marker, as Megatron-Bridge YAML files use it
        raise ConfigError(f"{where}: '???' marks a value that must be filled in; set it (e.g. --{flag.path}=...)")
    hint = field_type_hints(type(obj))[f.name]
    nullable = f.default is None
    try:
        if tokens is not None:
            result = values.from_text(tokens, hint, nullable)
        else:
            result = values.conform(value, hint, nullable)
    except values.CoercionError as e:
        given = " ".join(tokens) if tokens is not None else value
        raise ConfigError(f"{where}: invalid value {values.shown(given)}: expected {e.expected}") from None
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    setattr(obj, f.name, result)
    cfg.explicit_paths.add(flag.path)


# ----------------------------------------------------------------------------- YAML
def _merge_section_mapping(cfg, table: FlagTable, section: Section, data: dict, source: str,
                           problems: Optional[list[str]] = None) -> None:
    if "_target_" in data:  # a whole object: replace the section, every key given is explicit
        cls = resolve_target(data["_target_"], f"{source}: {section.path}")
        if not (isinstance(cls, type) and issubclass(cls, section.declared)):
            raise ConfigError(f"{source}: {section.path}: _target_ {data['_target_']!r} is not a "
                              f"{section.declared.__name__}")
        data = {k: v for k, v in data.items() if k != "_target_"}
        try:  # built from the mapping (classes may have required fields); values re-checked below
            _set(cfg, section.path, decode_dataclass(cls, data, section.path))
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
        prefix = section.path + "."
        cfg.explicit_paths.difference_update({p for p in cfg.explicit_paths if p.startswith(prefix)})
        cfg.explicit_paths.add(section.path)
        table = build_table(cfg)
    elif _get(cfg, section.path) is None and section.kinds:
        # A mapping of fields for a section that is off switches it on with its first kind
        # (peft: {dim: 8} is LoRA, as in Megatron-Bridge's finetuning files).
        switch_section(cfg, section, section.kinds[0][0], f"{source}: {section.path}")
        table = build_table(cfg)
    for key, value in data.items():
        with _collect(problems):
            path = f"{section.path}.{key}"
            if path in table.sections:
                _merge_section(cfg, table, table.sections[path], value, source, problems)
                continue
            flag = table.flags.get(path)
            if flag is None:
                names = [f.name for f in table.section_flags(section.path)]
                raise ConfigError(f"{source}: unknown key {key!r} in section {section.path!r}"
                                  f"{suggest(str(key), names)}")
            _assign(cfg, table, flag, f"{source}: {path}", value=value)


@contextlib.contextmanager
def _collect(problems: Optional[list[str]]):
    """Record a ConfigError in ``problems`` and go on (a YAML file reports every bad key at once);
    without a list, let it raise."""
    try:
        yield
    except ConfigError as e:
        if problems is None:
            raise
        problems.append(str(e))


def _merge_section(cfg, table: FlagTable, section: Section, value, source: str,
                   problems: Optional[list[str]] = None) -> None:
    where = f"{source}: {section.path}"
    if value is None or isinstance(value, str):
        switch_section(cfg, section, "null" if value is None else value, where)
    elif isinstance(value, dict):
        _merge_section_mapping(cfg, table, section, value, source, problems)
    else:
        raise ConfigError(f"{where}: expected a mapping of fields, a kind name "
                          f"({', '.join(_kind_names(section))}) or null, got {value!r}")


def merge_mapping(cfg, data: Any, source: str) -> None:
    """Merge a partial YAML mapping (sections -> fields) into ``cfg``, in place."""
    if data is None:
        return  # an empty file changes nothing
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(data).__name__}")
    listed = data.get(EXPLICIT_KEY)
    if listed is None and "_target_" in data:
        listed = []  # a whole-container snapshot (to_yaml) without the list: its values are not choices
    if listed is not None and not (isinstance(listed, list) and all(isinstance(p, str) for p in listed)):
        raise ConfigError(f"{source}: {EXPLICIT_KEY} must be a list of dotted paths")
    table = build_table(cfg)
    problems: list[str] = []
    for key, value in data.items():
        if key in ("_target_", EXPLICIT_KEY):
            continue  # a --print-config dump names the container class and lists explicit paths
        with _collect(problems):
            section = table.sections.get(str(key))
            if section is None or "." in str(key):
                top = [p for p in table.sections if "." not in p]
                raise ConfigError(f"{source}: unknown section {key!r}{suggest(str(key), top)}")
            _merge_section(cfg, table, section, value, source, problems)
        table = build_table(cfg)  # a swapped-in class may bring fields of its own
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        lines = [p[len(source) + 2:] if p.startswith(f"{source}: ") else p for p in problems]
        raise ConfigError(f"{source}: {len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in lines))
    if listed is not None:
        # A printed config says which of its values were explicit: those, not every key it holds
        # (a full dump marking everything explicit would block every mixed-precision preset).
        cfg.explicit_paths.difference_update(_paths_in(table, data))
        cfg.explicit_paths.update(listed)


def _paths_in(table: FlagTable, data: dict, prefix: str = "") -> set[str]:
    """Dotted paths of the sections and fields a YAML mapping sets."""
    paths = set()
    for key, value in data.items():
        path = f"{prefix}{key}"
        if path in table.sections:
            paths.add(path)
            if isinstance(value, dict):
                paths |= _paths_in(table, {k: v for k, v in value.items() if k != "_target_"}, path + ".")
        elif path in table.flags:
            paths.add(path)
    return paths


def merge_config_file(cfg, path: str) -> None:
    """Merge one --config-file into ``cfg``."""
    merge_mapping(cfg, load_yaml_file(path), f"config file {path!r}")


# ----------------------------------------------------------------------------- flags
def _flag_tokens(ov: Override, flag: Flag) -> list[str]:
    if ov.kind == "negated":
        return ["false"]
    if flag.is_bool and not ov.tokens:
        return ["true"]
    if not ov.tokens:
        raise ConfigError(f"{ov.option} needs a value: {typeinfo.expected(flag.hint)}")
    if len(ov.tokens) > 1 and not values.takes_list(flag.hint):
        raise ConfigError(f"{ov.option} takes one value, got {len(ov.tokens)}: {' '.join(ov.tokens)!r} "
                          "(quote values with spaces)")
    return ov.tokens


def _flow_mapping(text: str, where: str) -> dict:
    data = load_yaml_text(text, f"{where}: the value")  # the YAML limits (nesting, aliases) apply here too
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a YAML mapping such as '{{dim: 8}}', got {values.shown(text)}")
    return data


def apply_overrides(cfg, overrides: Iterable[Override]) -> None:
    """Apply command-line overrides (parser.Override) in order, typed against the live tree."""
    table = build_table(cfg)
    for ov in overrides:
        section = table.sections.get(ov.path) if ov.kind == "section" else None
        if section is not None:
            if len(ov.tokens) > 1 or not ov.tokens and len(section.kinds) != 1:
                raise ConfigError(f"{ov.option} takes one kind name: {', '.join(_kind_names(section))}")
            choice = ov.tokens[0] if ov.tokens else section.kinds[0][0]
            if choice.lstrip().startswith("{"):  # --model='{_target_: ..., num_layers: 2}': YAML flow
                _merge_section(cfg, table, section, _flow_mapping(choice, ov.option), ov.option)
            else:
                switch_section(cfg, section, choice, ov.option)
            table = build_table(cfg)
            continue
        flag = table.flags.get(ov.path)
        if flag is None:
            close = table.suggestions(ov.path)
            hint = f"; did you mean {' or '.join(close)}?" if close else " (see --help)"
            raise ConfigError(f"unknown flag {ov.option}{hint}")
        _assign(cfg, table, flag, ov.option, tokens=_flag_tokens(ov, flag))


def resolve(recipe: Optional[str], config_files: list[str], overrides: Iterable[Override] = ()):
    """The layered, unfinalized ConfigContainer: recipe < config files < overrides."""
    from megatron_bridge_cli.cli.recipe_loader import load_recipe

    cfg = load_recipe(recipe)
    for path in config_files:
        merge_config_file(cfg, path)
    apply_overrides(cfg, overrides)
    return cfg
