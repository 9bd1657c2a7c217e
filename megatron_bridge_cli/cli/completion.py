"""Shell completion through argcomplete, answered from the cached flag schema (no torch import).

``bridge-train --completion bash`` prints argcomplete's shell code for ``bridge-train``; the
shell then calls ``bridge-train`` with ``_ARGCOMPLETE=1`` and the partial command line in
``COMP_LINE``/``COMP_POINT`` at every TAB. main() sends that call here first: the parser is
built from the schema of the recipe named on the line (the default recipe otherwise), and
argcomplete answers and exits. What completes: section and field names (``--model.<TAB>``),
the values of bools, enums, Literals and dtypes, section kinds, recipe names (and .py/.yaml
files) after ``--recipe``, YAML files after ``--config-file``. Second spellings (``--model.num-layers``, ``--config_file``)
are left out of the answers to keep them short; they still parse.
"""

from __future__ import annotations

import os
import shlex
from typing import Optional

__all__ = ["complete", "recipe_on_line"]


def recipe_on_line(line: str) -> Optional[str]:
    """The --recipe value of a partial command line, if it names one."""
    try:
        words = shlex.split(line)
    except ValueError:  # an open quote at the cursor
        words = line.split()
    if words and not line.endswith(" "):
        words = words[:-1]  # the word being completed is not a choice yet
    for i, word in enumerate(words[:-1]):
        if word == "--recipe":
            return words[i + 1]
        if word.startswith("--recipe="):
            return word.split("=", 1)[1]
    return None


def complete() -> None:
    """Answer one completion request (argcomplete protocol) and exit the process."""
    import argcomplete
    from argcomplete.completers import FilesCompleter

    from megatron_bridge_cli.cli.cache import cached_schema
    from megatron_bridge_cli.cli.parser import build_parser
    from megatron_bridge_cli.errors import ConfigError

    schema = cached_schema(None)
    recipe = recipe_on_line(os.environ.get("COMP_LINE", ""))
    known = recipe in {name for name, _ in schema["recipes"]} or recipe and os.path.isfile(recipe.partition(":")[0])
    if recipe and known:
        try:
            schema = cached_schema(recipe)
        except ConfigError:  # a recipe file that does not load: complete the default recipe's flags
            pass
    parser = build_parser(schema)
    files = FilesCompleter(("py", "yaml", "yml"))
    names = [name for name, _ in schema["recipes"]]

    def recipes(prefix: str = "", **kwargs):
        return [n for n in names if n.startswith(prefix)] + list(files(prefix, **kwargs))

    hidden = []
    for action in parser._actions:
        if action.dest == "recipe":
            action.completer = recipes  # type: ignore[attr-defined]
        elif action.dest == "config_files":
            action.completer = FilesCompleter(("yaml", "yml"))  # type: ignore[attr-defined]
        hidden += [s for s in action.option_strings[1:] if s.startswith("--")]
    argcomplete.autocomplete(parser, exclude=hidden)
