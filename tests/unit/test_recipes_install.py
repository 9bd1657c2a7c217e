"""Built-in recipes work from a regular (non-editable) install, and a user's recipe file can
import and extend them.

`pip install --no-deps --target` installs this project from a copy of its sources into a
temporary folder; a subprocess started outside the repository, with that folder first on
sys.path, imports the recipes from there. Dependencies (torch, megatron-core) come from the
current environment; --no-build-isolation uses its setuptools, so nothing is downloaded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

USER_RECIPE = textwrap.dedent(
    """
    from megatron_bridge_cli.recipes.llama import llama3_8b

    def my_llama():
        cfg = llama3_8b(seq_length=4096, global_batch_size=256)
        cfg.train.train_iters = 20_000
        return cfg
    """
)

CHECK = textwrap.dedent(
    """
    import importlib.util, sys
    import megatron_bridge_cli, megatron_bridge_cli.recipes as recipes
    from megatron_bridge_cli.config import finalize

    target = sys.argv[1]
    assert megatron_bridge_cli.__file__.startswith(target), megatron_bridge_cli.__file__
    assert recipes.__file__.startswith(target), recipes.__file__
    assert len(recipes.RECIPES) == 14, sorted(recipes.RECIPES)
    for name, fn in recipes.RECIPES.items():
        fn()

    spec = importlib.util.spec_from_file_location("user_recipe", sys.argv[2])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    run = finalize(module.my_llama(), world_size=8)
    assert (run.model.seq_length, run.train.global_batch_size, run.train.train_iters) == (4096, 256, 20_000)
    print("ok", recipes.__file__)
    """
)


def test_recipes_work_from_a_non_editable_install(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("megatron_bridge_cli", "recipes"):
        shutil.copytree(REPO / package, source / package, ignore=ignore)
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(source)],
        check=True, capture_output=True, text=True, timeout=120,
    )
    assert (target / "megatron_bridge_cli" / "recipes" / "llama.py").is_file()
    assert not (target / "recipes").exists(), "recipes/ must install as megatron_bridge_cli.recipes only"

    user_file = tmp_path / "my_recipes.py"
    user_file.write_text(USER_RECIPE)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)  # ahead of site-packages, where the editable install lives
    result = subprocess.run(
        [sys.executable, "-c", CHECK, str(target), str(user_file)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("ok ")
