"""Built-in recipes: plain functions returning a ConfigContainer, one model family per file.

Installed as ``megatron_bridge_cli.recipes``. ``RECIPES`` maps each ``--recipe`` name to its
function; the first docstring line is its ``--list-recipes`` description.
"""

from megatron_bridge_cli.recipes.gpt import gpt_cpu_tiny

__all__ = ["RECIPES", "DEFAULT_RECIPE", "gpt_cpu_tiny"]

RECIPES = {
    "gpt_cpu_tiny": gpt_cpu_tiny,
}

DEFAULT_RECIPE = "gpt_cpu_tiny"
"""The recipe used when no --recipe is given: a small GPT that trains on CPU."""
