"""Assignment to a config field that does not exist is an error, not a new attribute.

``cfg.train.train_iter = 500`` (for train_iters) would otherwise quietly add an attribute that
nothing reads, and the run would use the recipe's value: the Python-override equivalent of an
unknown flag. Every config class mixes in :class:`StrictFields`; assignment to a name that is
neither a dataclass field (derived ``init=False`` ones included), nor a settable attribute the
class defines, nor private (``_name``) raises :class:`UnknownFieldError` with a "did you mean".
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, ClassVar

from megatron_bridge_cli.errors import ConfigError
from megatron_bridge_cli.typeinfo import suggest

__all__ = ["StrictFields", "UnknownFieldError", "relax"]


class UnknownFieldError(ConfigError, AttributeError):
    """Assignment to a field a config class does not have (a typo, usually)."""


_SETTABLE: dict[type, frozenset[str]] = {}


def _settable(cls: type) -> frozenset[str]:
    """Field names plus non-method attributes of ``cls`` and its bases (cached per class)."""
    if cls not in _SETTABLE:
        names = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
        for klass in cls.__mro__:
            names.update(n for n, v in vars(klass).items() if not callable(v) or isinstance(v, property))
        _SETTABLE[cls] = frozenset(names)
    return _SETTABLE[cls]


class StrictFields:
    """Mixin: refuse assignment to unknown attribute names (see the module docstring).

    Finalized copies are relaxed (:func:`relax`): megatron-core's own ``__post_init__`` and
    model code add attributes of their own to the configs they are handed."""

    __slots__ = ()
    _strict: ClassVar[bool] = True

    if not TYPE_CHECKING:  # hidden from type checkers, which would then allow any attribute

        def __setattr__(self, name: str, value) -> None:
            if self._strict and not name.startswith("_") and name not in _settable(type(self)):
                fields: list[str] = [f.name for f in dataclasses.fields(self)] if dataclasses.is_dataclass(self) else []
                raise UnknownFieldError(
                    f"{type(self).__name__} has no field {name!r}{suggest(name, fields)} (assigning it would "
                    "add an attribute nothing reads)"
                )
            super().__setattr__(name, value)


def relax(obj) -> None:
    """Let ``obj`` (a finalized config, handed to megatron-core) take any attribute."""
    if isinstance(obj, StrictFields):
        object.__setattr__(obj, "_strict", False)
