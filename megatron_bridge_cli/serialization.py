"""bridge-train's YAML files: dataclass trees <-> YAML text and files, safely.

Format: each dataclass is a mapping whose first key ``_target_`` names its class; its init
fields follow in declaration order. Values YAML cannot hold are ``_target_`` mappings too:
dtypes, functions, classes and enum members as ``{_target_: torch.bfloat16, _call_: false}``;
``functools.partial`` as ``{_target_: fn, _partial_: true, _args_: [...], kw: ...}``.

This module is the tree level: text and files. Each field is decoded by ``decode_dataclass``
through ``values.conform``, the same rule a ``--config-file`` value or a flag goes through, so
``ConfigContainer.from_yaml``, ``--recipe FILE.yaml`` and ``--config-file`` read a file alike.
The rules per type live in values.py; the ``_target_`` allow-list and ``encode`` in targets.py;
dataclass introspection (``init_fields``, ``field_type_hints``, ``suggest``) in typeinfo.py,
all re-exported here. Loading uses PyYAML's SafeLoader only and never calls anything but
dataclass constructors and ``functools.partial``.

YAML is data. A document is refused before it becomes Python objects when a key is given twice
in one mapping, when its aliases (``*name``) would expand to more than ``MAX_ALIAS_EXPANSION``
values (a "billion laughs" file expands to 10^9 strings from 1 KB), when it refers to itself,
or when it nests deeper than ``MAX_DEPTH``: each check is linear in the file's size.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from megatron_bridge_cli.errors import ConfigError
from megatron_bridge_cli.typeinfo import field_type_hints, init_fields, suggest
from megatron_bridge_cli.values import decode_dataclass, encode

__all__ = [
    "to_yaml_str", "dump_yaml", "load_yaml_file", "load_yaml_text", "decode_dataclass", "encode", "init_fields",
    "field_type_hints", "suggest", "MAX_ALIAS_EXPANSION", "MAX_DEPTH",
]

MAX_ALIAS_EXPANSION = 10_000
"""Values that aliases may add to a document, counting each ``*name`` as a full copy. A config
reuses a few lists or mappings; a bomb adds billions."""

MAX_DEPTH = 50
"""Nesting levels a document may have (a whole --print-config dump has fewer than 10)."""


def to_yaml_str(obj: Any) -> str:
    """YAML text of a dataclass tree (deterministic: field order, block style)."""
    return yaml.safe_dump(encode(obj), sort_keys=False, default_flow_style=False, width=100)


def dump_yaml(obj: Any, path: str | os.PathLike) -> None:
    """Write the YAML of ``obj`` atomically: a crash never leaves a half-written file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(to_yaml_str(obj))
    os.replace(tmp, path)


class _Refused(yaml.YAMLError):
    """A document past the limits: the message completes 'config file X ...'."""


def _check_limits(root: yaml.Node) -> None:
    """Refuse alias bombs, self-references and deep nesting in a composed document, before any
    value is built. Aliases are shared nodes, so sizes are memoized per node: linear time."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    distinct = 0
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:  # iterative post-order walk: no recursion limit to hit
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            kids = _children(node)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
            continue
        if key in size:
            continue
        if key in depth:  # entered, not finished: the node contains itself
            raise _Refused(f"refers to itself through an alias (at line {node.start_mark.line + 1})")
        depth[key] = -1
        distinct += 1
        stack.append((node, True))
        stack.extend((k, False) for k in _children(node) if id(k) not in size)
    if size[id(root)] - distinct > MAX_ALIAS_EXPANSION:
        raise _Refused(f"has aliases (*name) that expand to {size[id(root)]:,} values, more than "
                       f"{MAX_ALIAS_EXPANSION:,} beyond the {distinct:,} written (a \"billion laughs\" document?); "
                       "write the values out instead")
    if depth[id(root)] > MAX_DEPTH:
        raise _Refused(f"nests {depth[id(root)]} levels deep; at most {MAX_DEPTH} are allowed")


def _children(node: yaml.Node) -> list:
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently)
    and documents past the limits (``_check_limits``)."""

    def compose_document(self):
        node = super().compose_document()
        if node is not None:
            _check_limits(node)
        return node

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:
                continue  # an unhashable key: construct_mapping's own error follows
            if first != key_node.start_mark.line + 1:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {first})", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def load_yaml_file(path: str | os.PathLike) -> Any:
    """safe_load a YAML file, turning I/O, encoding and syntax problems (duplicate keys too) into
    ConfigErrors naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {str(path)!r} is a directory, not a YAML file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text (byte {e.start}); is it a binary file?") \
            from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {str(path)!r}: {e.strerror}") from None
    if "\x00" in text:
        raise ConfigError(f"config file {str(path)!r} holds NUL bytes; is it a binary file?")
    return load_yaml_text(text, f"config file {str(path)!r}")


def load_yaml_text(text: str, source: str) -> Any:
    """safe_load YAML text within the limits, problems raised as ConfigErrors that start with
    ``source`` ("config file 'run.yaml'", "the value")."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader: no Python objects
    except _Refused as e:
        raise ConfigError(f"{source} {e}") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        line = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{source} is not valid YAML{line}: {e.problem}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{source} is not valid YAML: {e}") from None
    except RecursionError:  # PyYAML composes nested collections recursively
        raise ConfigError(f"{source} nests too deeply; at most {MAX_DEPTH} levels are allowed") from None
    except (ValueError, OverflowError) as e:  # e.g. an integer of more than 4,300 digits
        raise ConfigError(f"{source} holds a value that cannot be read: {str(e).splitlines()[0]}") from None
