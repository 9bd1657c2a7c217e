"""Built-in recipes: plain functions returning a ConfigContainer, one model family per file.

Installed as ``megatron_bridge_cli.recipes``. ``RECIPES`` maps each ``--recipe`` name to its
function; the first docstring line is its ``--list-recipes`` description, and
``recipe.documented_world_size`` is the GPU count its default layout is written for.

A recipe file of your own can start from a built-in one::

    from megatron_bridge_cli.recipes.llama import llama3_8b

    def my_run():
        cfg = llama3_8b(seq_length=4096, data_path=["/data/corpus_text_document"])
        cfg.train.train_iters = 10_000
        return cfg
"""

from megatron_bridge_cli.recipes.gpt import gpt3_126m, gpt3_175b, gpt_cpu_tiny
from megatron_bridge_cli.recipes.llama import llama2_7b, llama3_8b, llama3_70b, llama31_405b
from megatron_bridge_cli.recipes.mamba import mamba2_130m
from megatron_bridge_cli.recipes.mistral import mistral_7b, mixtral_8x7b
from megatron_bridge_cli.recipes.qwen import qwen3_8b, qwen3_30b_a3b, qwen25_7b
from megatron_bridge_cli.recipes.t5 import t5_220m

__all__ = [
    "RECIPES", "DEFAULT_RECIPE", "gpt_cpu_tiny", "gpt3_126m", "gpt3_175b", "llama2_7b",
    "llama3_8b", "llama3_70b", "llama31_405b", "mistral_7b", "qwen25_7b", "qwen3_8b",
    "mixtral_8x7b", "qwen3_30b_a3b", "t5_220m", "mamba2_130m",
]

RECIPES = {
    fn.__name__: fn
    for fn in (
        gpt_cpu_tiny, gpt3_126m, gpt3_175b,
        llama2_7b, llama3_8b, llama3_70b, llama31_405b,
        mistral_7b, qwen25_7b, qwen3_8b,
        mixtral_8x7b, qwen3_30b_a3b,
        t5_220m, mamba2_130m,
    )
}
"""Every built-in recipe by its --recipe name (the function's name)."""

DEFAULT_RECIPE = "gpt_cpu_tiny"
"""The recipe used when no --recipe is given: a small GPT that trains on CPU."""
