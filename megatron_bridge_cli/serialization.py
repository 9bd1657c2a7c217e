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
all re-exported here. Loading uses ``yaml.safe_load`` only and never calls anything but
dataclass constructors and ``functools.partial``.
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
    "to_yaml_str", "dump_yaml", "load_yaml_file", "decode_dataclass", "encode", "init_fields",
    "field_type_hints", "suggest",
]


def to_yaml_str(obj: Any) -> str:
    """YAML text of a dataclass tree (deterministic: field order, block style)."""
    return yaml.safe_dump(encode(obj), sort_keys=False, default_flow_style=False, width=100)


def dump_yaml(obj: Any, path: str | os.PathLike) -> None:
    """Write the YAML of ``obj`` atomically: a crash never leaves a half-written file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(to_yaml_str(obj))
    os.replace(tmp, path)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

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
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader: no Python objects
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        line = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"config file {str(path)!r} is not valid YAML{line}: {e.problem}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {e}") from None
