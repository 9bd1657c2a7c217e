"""What bridge-train knows about a type hint: its shape, its --help label and its error phrase,
plus the dataclass introspection every layer shares (user fields, resolved hints, suggestions).

Shared by the value rules (values.py), the YAML codec, the flag table and --help.
``Optional[X]`` is X plus null; ``Union`` members are tried in a fixed order (``union_order``):
the specific scalar syntaxes first, lists only for list-looking text, free-form strings last.

Cheap to import: no torch (``torch.dtype`` is recognised by name, ``is_dtype``), so --help and
completion code may use it without paying for torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import types
import typing
from collections.abc import Callable as AbcCallable
from typing import Any, Literal, Union

__all__ = [
    "init_fields", "field_type_hints", "suggest", "unwrap_optional", "is_union", "members", "origin",
    "is_list", "is_callable", "is_dtype", "is_scalar", "item_hint", "choices", "union_order", "type_name",
    "expected", "PHRASES", "DTYPE_PHRASE",
]

PHRASES = {
    bool: "true or false (also 1/0, yes/no, on/off)", int: "an integer", float: "a number (e.g. 3e-4)",
    str: "a string",
}
"""What a valid value of each plain scalar type looks like, for error messages."""

DTYPE_PHRASE = "a dtype (e.g. bf16, fp16, fp32, bfloat16, torch.bfloat16)"


def init_fields(cls_or_obj) -> list[dataclasses.Field]:
    """User-settable fields of a dataclass: init=True and not private."""
    return [f for f in dataclasses.fields(cls_or_obj) if f.init and not f.name.startswith("_")]


@functools.lru_cache(maxsize=None)
def field_type_hints(cls: type) -> dict[str, Any]:
    """Resolved type hints of a dataclass's fields (cached: megatron-core classes are large)."""
    return typing.get_type_hints(cls)


def suggest(name: str, candidates) -> str:
    """'; did you mean X?' for the closest candidates, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    if not close:
        return ""
    return "; did you mean " + " or ".join(repr(c) for c in close) + "?"


def choices(hint) -> list[str]:
    """The values of a Literal or the member names of an Enum, as text."""
    if origin(hint) is Literal:
        return [str(c) for c in typing.get_args(hint)]
    return list(hint.__members__)


def is_union(hint) -> bool:
    """typing.Union[...] and X | Y."""
    return typing.get_origin(hint) in (Union, types.UnionType)


def unwrap_optional(hint) -> tuple[Any, bool]:
    """(hint without None, whether None is allowed)."""
    if is_union(hint):
        args = typing.get_args(hint)
        rest = tuple(a for a in args if a is not type(None))
        if len(rest) < len(args):
            return (rest[0] if len(rest) == 1 else Union[rest]), True  # type: ignore[valid-type]
    return hint, hint is type(None)


def members(hint) -> tuple:
    """The members of a Union (the hint itself otherwise)."""
    return typing.get_args(hint) if is_union(hint) else (hint,)


def origin(hint):
    """list for list[int], Literal for Literal[...]; the hint itself for plain classes."""
    return typing.get_origin(hint) or hint


def is_list(hint) -> bool:
    """Sequence types, which take several values."""
    return origin(hint) in (list, tuple, set, frozenset)


def is_callable(hint) -> bool:
    """Callable and Callable[...]."""
    return hint is AbcCallable or origin(hint) is AbcCallable or hint is typing.Callable


def is_dtype(hint) -> bool:
    """torch.dtype, recognised by name so that this module never imports torch."""
    return isinstance(hint, type) and hint.__name__ == "dtype" and hint.__module__ == "torch"


def is_scalar(hint) -> bool:
    """Types whose values are one token: bool/int/float/str/dtype, Literal, Enum, callables."""
    return (hint in (bool, int, float, str) or is_dtype(hint) or origin(hint) is Literal or is_callable(hint)
            or isinstance(hint, type) and issubclass(hint, enum.Enum))


def union_order(member) -> int:
    """Lower tries first: specific scalar syntaxes before lists and free-form strings."""
    if member is bool:
        return 0
    if member in (int, float):
        return 1 + (member is float)
    if is_scalar(member) and member is not str:
        return 3
    if is_list(member):
        return 4 + (item_hint(member) is str)
    if origin(member) is dict:
        return 6
    if member is str:
        return 7
    return 8


def item_hint(hint):
    """Element type of a list/tuple hint (Any when bare)."""
    args = [a for a in typing.get_args(hint) if a is not Ellipsis]
    return args[0] if args else Any


def type_name(hint) -> str:
    """Short type label for --help and the flag snapshot: INT, {a,b}, LIST[INT], INT|null."""
    inner, optional = unwrap_optional(hint)
    if is_union(inner):
        name = "|".join(type_name(m) for m in members(inner))
    elif inner in (bool, int, float, str):
        name = inner.__name__.upper()
    elif is_dtype(inner):
        name = "DTYPE"
    elif origin(inner) is Literal:
        name = "{" + ",".join(choices(inner)) + "}"
    elif isinstance(inner, type) and issubclass(inner, enum.Enum):
        name = "{" + ",".join(choices(inner)) + "}"
    elif is_callable(inner):
        name = "CALLABLE"
    elif is_list(inner):
        args = [a for a in typing.get_args(inner) if a is not Ellipsis]
        label = "TUPLE" if origin(inner) is tuple else "LIST"
        name = f"{label}[{','.join(type_name(a) for a in args)}]" if args else label
    elif origin(inner) is dict:
        name = "DICT"
    elif inner is Any:
        name = "YAML"
    else:
        name = getattr(inner, "__name__", str(inner))
    return f"{name}|null" if optional else name


def expected(hint) -> str:
    """What a valid value looks like, for error messages."""
    inner, optional = unwrap_optional(hint)
    if is_union(inner):
        text = " or ".join(expected(m) for m in sorted(members(inner), key=union_order))
    elif is_list(inner):
        item = item_hint(inner)
        text = f"a list of {type_name(item)} (1,2,3 or '[1, 2, 3]')"
        args = typing.get_args(inner)
        if origin(inner) is tuple and args and Ellipsis not in args:
            text = f"{len(args)} comma-separated values ({', '.join(type_name(a) for a in args)})"
    elif origin(inner) is dict:
        text = "a YAML mapping such as '{key: value}'"
    elif origin(inner) is Literal or isinstance(inner, type) and issubclass(inner, enum.Enum):
        text = "one of: " + ", ".join(choices(inner))
    elif is_scalar(inner):
        text = PHRASES.get(inner) or (DTYPE_PHRASE if is_dtype(inner) else
                                      "a function name (e.g. silu, gelu) or an allow-listed import path")
    else:
        text = f"a YAML flow value or a '{{_target_: ...}}' mapping giving a {type_name(inner)}"
    return f"{text} or null" if optional else text
