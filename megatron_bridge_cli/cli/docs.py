"""Field docstrings for --help: the string literal written right under each dataclass field.

Python keeps no attribute docstrings at runtime, so the class's source file is parsed with
``ast`` (once per file, only when help is asked for) and each ``name: type = value`` followed
by a string expression gives that field's text. Base classes are searched in MRO order, so
megatron-core's TransformerConfig documents the model fields it defines.
"""

from __future__ import annotations

import ast
import functools
import inspect
import re

__all__ = ["field_docs", "field_doc"]


@functools.lru_cache(maxsize=None)
def _file_classes(path: str) -> dict[str, dict[str, str]]:
    """{class name: {field: docstring}} for every class defined at top level in a file."""
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=path)
    except (OSError, SyntaxError):
        return {}
    classes = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        docs, body = {}, node.body
        for stmt, after in zip(body, body[1:]):
            if (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[stmt.target.id] = inspect.cleandoc(after.value.value)
        classes[node.name] = docs
    return classes


@functools.lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """{field: docstring} of ``cls`` and its bases (the nearest definition wins)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            path = inspect.getsourcefile(klass)
        except TypeError:
            continue  # builtins
        if path:
            docs.update(_file_classes(path).get(klass.__name__, {}))
    return docs


def field_doc(cls: type, name: str) -> str:
    """One field's docstring with whitespace folded into single spaces (paragraphs kept)."""
    text = field_docs(cls).get(name, "")
    paragraphs = [re.sub(r"\s+", " ", p).strip() for p in re.split(r"\n\s*\n", text)]
    return "\n".join(p for p in paragraphs if p)
