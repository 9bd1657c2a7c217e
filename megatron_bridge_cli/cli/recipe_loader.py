"""The base layer: a built-in recipe name, a Python file with a recipe function, or a YAML file."""

from __future__ import annotations

import importlib.util
import inspect
import sys
import traceback
from pathlib import Path
from typing import Optional

from megatron_bridge_cli.errors import ConfigError
from megatron_bridge_cli.typeinfo import suggest

__all__ = ["load_recipe", "recipe_table", "describe_recipes"]


def recipe_table() -> tuple[dict, str]:
    """(name -> recipe function, default name) of the built-in recipes."""
    from megatron_bridge_cli.recipes import DEFAULT_RECIPE, RECIPES

    return RECIPES, DEFAULT_RECIPE


def _check(cfg, source: str):
    from megatron_bridge_cli.config.container import ConfigContainer

    if not isinstance(cfg, ConfigContainer):
        raise ConfigError(f"recipe {source} returned {type(cfg).__name__}, not a ConfigContainer")
    return cfg


def _from_python(spec: str):
    path_text, _, function = spec.partition(":")
    path = Path(path_text)
    if not path.is_file():
        raise ConfigError(f"recipe file {path_text!r} does not exist")
    name = f"_bridge_train_recipe_{abs(hash(str(path.resolve())))}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses defined in the file need their module registered
    try:
        module_spec.loader.exec_module(module)
    except ConfigError:
        raise
    except Exception as e:  # a broken user file is a user mistake, reported without traceback
        raise ConfigError(f"recipe file {path_text!r} failed to import: {type(e).__name__}: {e}") from None
    functions = {
        n: f for n, f in vars(module).items()
        if inspect.isfunction(f) and f.__module__ == name and not n.startswith("_")
    }
    if not function:
        if len(functions) != 1:
            listed = ", ".join(f"{path_text}:{n}" for n in functions) or "none found"
            raise ConfigError(f"recipe file {path_text!r}: name the function as FILE.py:FUNCTION ({listed})")
        function = next(iter(functions))
    if not callable(getattr(module, function, None)):
        raise ConfigError(f"recipe file {path_text!r} has no function {function!r}{suggest(function, functions)}")
    fn = getattr(module, function)
    if any(p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
           for p in inspect.signature(fn).parameters.values()):
        raise ConfigError(f"recipe {path_text}:{function} must be callable without arguments")
    try:
        cfg = fn()
    except ConfigError:
        raise
    except Exception as e:  # the user's own recipe code: say where in their file, not a traceback
        lines = [f.lineno for f in traceback.extract_tb(e.__traceback__) if Path(f.filename) == path]
        where = f" (line {lines[-1]})" if lines else ""
        raise ConfigError(f"recipe {path_text}:{function} raised {type(e).__name__}{where}: {e}") from None
    return _check(cfg, f"{path_text}:{function}")


def _from_yaml(path: str):
    from megatron_bridge_cli.config.container import ConfigContainer

    try:
        return ConfigContainer.from_yaml(path)
    except ConfigError as e:
        if "missing" in str(e) and "required" in str(e):
            raise ConfigError(f"{e} (a YAML recipe is a complete config as written by --print-config; "
                              "use --config-file for partial overrides)") from None
        raise


def load_recipe(spec: Optional[str]):
    """The ConfigContainer a --recipe value names (the default recipe when None)."""
    recipes, default = recipe_table()
    spec = default if spec is None else spec
    if spec in recipes:
        return _check(recipes[spec](), spec)
    suffix = Path(spec.partition(":")[0]).suffix
    if suffix == ".py":
        return _from_python(spec)
    if suffix in (".yaml", ".yml"):
        return _from_yaml(spec)
    close = suggest(spec, recipes) or f"; built-in recipes: {', '.join(recipes)}"
    raise ConfigError(f"unknown recipe {spec!r}{close} (--list-recipes describes them; a recipe may also be "
                      "FILE.py[:FUNCTION] or FILE.yaml)")


def describe_recipes() -> list[tuple[str, str]]:
    """(name, first docstring line) of each built-in recipe."""
    recipes, _ = recipe_table()
    return [(n, (inspect.getdoc(f) or "").split("\n", 1)[0]) for n, f in recipes.items()]
