"""The on-disk cache of flag schemas, so help, completion and flag errors skip importing torch.

One JSON file per recipe spec under ``$BRIDGE_TRAIN_CACHE_DIR`` (default
``$XDG_CACHE_HOME/bridge-train``, else ``~/.cache/bridge-train``). Each file stores the key it
was built under; a file whose key differs from the current one is stale and rebuilt. The key:

- the versions of bridge-train, torch and megatron-core and the Python version (read from
  package metadata, not by importing them);
- a fingerprint of bridge-train's own sources and recipes (newest mtime and file count), so an
  editable install that changes a config class is never served an old schema;
- for a recipe file (``--recipe my.py``), its resolved path and mtime.

Writes are atomic (temp file + rename); a cache that cannot be written only costs speed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from importlib import metadata
from pathlib import Path
from typing import Optional

from megatron_bridge_cli.cli.schema import FORMAT

__all__ = ["cache_dir", "cache_key", "cached_schema", "load_schema", "store_schema"]


def cache_dir() -> Path:
    """Where schemas are kept."""
    explicit = os.environ.get("BRIDGE_TRAIN_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "bridge-train"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


def _source_dirs() -> list[str]:
    dirs = [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]  # the package
    spec = importlib.util.find_spec("megatron_bridge_cli.recipes")  # installed from recipes/
    if spec is not None and spec.origin:
        dirs.append(os.path.dirname(spec.origin))
    return dirs


def _source_fingerprint() -> str:
    newest, count = 0, 0
    stack = _source_dirs()
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False) and entry.name != "__pycache__":
                    stack.append(entry.path)
                elif entry.name.endswith(".py"):
                    newest, count = max(newest, entry.stat().st_mtime_ns), count + 1
    return f"{newest}:{count}"


def _recipe_file(recipe: Optional[str]) -> Optional[Path]:
    """The resolved path of a recipe that is a file (``my.py[:fn]``, ``run.yaml``), else None."""
    path_text = (recipe or "").partition(":")[0]
    return Path(path_text).resolve() if path_text.endswith((".py", ".yaml", ".yml")) else None


def _recipe_id(recipe: Optional[str]) -> str:
    """The recipe as the cache names it: '' (default), a built-in name, or PATH[:FUNCTION] resolved."""
    path = _recipe_file(recipe)
    if path is None:
        return recipe or ""
    _, colon, function = recipe.partition(":")
    return f"{path}{colon}{function}"


def _recipe_part(recipe: Optional[str]) -> str:
    """The recipe as the key sees it: its name, plus a file's mtime."""
    path = _recipe_file(recipe)
    if path is None:
        return _recipe_id(recipe)
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        mtime = -1
    return f"{_recipe_id(recipe)}@{mtime}"


def cache_key(recipe: Optional[str]) -> str:
    """What a cached schema for ``recipe`` must have been built under to be used."""
    from megatron_bridge_cli import __version__

    parts = [f"format={FORMAT}", f"bridge-train={__version__}", f"torch={_version('torch')}",
             f"megatron-core={_version('megatron-core')}", f"python={sys.version.split()[0]}",
             f"sources={_source_fingerprint()}", f"recipe={_recipe_part(recipe)}"]
    return ";".join(parts)


def _path(recipe: Optional[str]) -> Path:
    digest = hashlib.sha1((_recipe_id(recipe) or "<default>").encode()).hexdigest()[:16]
    return cache_dir() / f"schema-{digest}.json"


def load_schema(recipe: Optional[str], key: Optional[str] = None) -> Optional[dict]:
    """The cached schema of ``recipe`` if it is there and current, else None."""
    key = key or cache_key(recipe)
    try:
        with open(_path(recipe), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("key") != key:
        return None
    return data.get("schema")


def store_schema(recipe: Optional[str], schema: dict, key: Optional[str] = None) -> bool:
    """Write atomically; False (and nothing else) when the cache directory is not writable."""
    path = _path(recipe)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"key": key or cache_key(recipe), "schema": schema}, f)
        os.replace(tmp, path)
        return True
    except OSError:
        try:
            tmp.unlink()
        except OSError:
            pass
        return False


def cached_schema(recipe: Optional[str]) -> dict:
    """The schema of ``recipe`` (None: the default recipe), from the cache or built and stored.

    Building imports the config package (torch, megatron-core) and loads the recipe; a recipe
    that fails to load raises its ConfigError and nothing is stored."""
    key = cache_key(recipe)
    schema = load_schema(recipe, key)
    if schema is None:
        from megatron_bridge_cli.cli.recipe_loader import load_recipe
        from megatron_bridge_cli.cli.schema import schema_of

        schema = schema_of(load_recipe(recipe), recipe)
        store_schema(recipe, schema, key)
    return schema
