"""bridge-train's entry point: parse -> resolve layers -> (print | dry run | launch | train).

Exit codes: 0 success, 2 a usage or config mistake (one paragraph on stderr, no traceback),
1 a runtime failure. Under torchrun or srun only global rank 0 prints, so an error or a
config print appears once, not once per process; every rank exits with the same code.
"""

from __future__ import annotations

import logging
import sys
from typing import Optional, Sequence

from megatron_bridge_cli.errors import ConfigError

__all__ = ["main"]

PROG = "bridge-train"


def _rank_zero() -> bool:
    from megatron_bridge_cli.training.env import detect_world

    try:
        return detect_world().rank == 0
    except ValueError:  # malformed RANK: better to print twice than never
        return True


class _Output:
    """stdout of rank 0 only."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __call__(self, text: str) -> None:
        if self.enabled:
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
            sys.stdout.flush()


def _report(error: ConfigError, enabled: bool) -> int:
    if enabled:
        sys.stderr.write(f"{PROG}: error: {error}\n")
        sys.stderr.flush()
    return error.exit_code


def _list_recipes() -> str:
    from megatron_bridge_cli.cli.recipe_loader import describe_recipes, recipe_table

    _, default = recipe_table()
    rows = describe_recipes()
    width = max(len(n) for n, _ in rows) + 2
    lines = ["built-in recipes (--recipe NAME; * is the default):"]
    lines += [f"{'*' if n == default else ' '} {n.ljust(width)}{doc}" for n, doc in rows]
    return "\n".join(lines)


def config_yaml(cfg) -> str:
    """--print-config: the to_yaml text plus the paths set explicitly, so that feeding it back
    (--recipe or --config-file) reproduces the run, presets included."""
    from megatron_bridge_cli.config.container import EXPLICIT_KEY

    text = cfg.to_yaml()
    if cfg.explicit_paths:
        import yaml

        text += "# set by config files or flags: kept over --mixed_precision / --comm_overlap presets\n"
        text += yaml.safe_dump({EXPLICIT_KEY: sorted(cfg.explicit_paths)}, default_flow_style=False)
    return text


def _help(g, options, out: _Output) -> int:
    """Help reflects the command line; a broken command line falls back to the plain recipe."""
    from megatron_bridge_cli.cli.flags import build_table
    from megatron_bridge_cli.cli.help import render_help
    from megatron_bridge_cli.cli.layering import resolve
    from megatron_bridge_cli.cli.recipe_loader import load_recipe, recipe_table

    try:
        cfg = resolve(g.recipe, g.config_files, options)
    except ConfigError as e:
        if out.enabled:
            sys.stderr.write(f"{PROG}: note: showing the default recipe's values ({e})\n")
        cfg = load_recipe(None)
    out(render_help(cfg, build_table(cfg), g.help, recipe_table()[1]))
    return 0


def _setup_logging(enabled: bool) -> None:
    """Warnings of finalize (explicit values beating presets) reach the user once, readably."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format=f"{PROG}: %(levelname)s: %(message)s",
                            level=logging.WARNING if enabled else logging.ERROR)


def _launch(g, cfg) -> int:
    from megatron_bridge_cli.config.finalize import validate

    if g.nproc_per_node < 1:
        raise ConfigError(f"--nproc-per-node ({g.nproc_per_node}) must be at least 1")
    validate(cfg, g.nproc_per_node * (g.nnodes or 1))  # fail here, once, before spawning workers
    from megatron_bridge_cli.training.launch import launch_workers

    return launch_workers(
        nproc_per_node=g.nproc_per_node, nnodes=g.nnodes or 1, node_rank=g.node_rank or 0,
        master_addr=g.master_addr, master_port=g.master_port, argv=g.worker_argv,
    )


def _run(argv: list[str], out: _Output) -> int:
    from megatron_bridge_cli.cli.argv import split_argv

    g, options = split_argv(argv)
    if g.version:
        from megatron_bridge_cli import __version__

        out(f"{PROG} {__version__}")
        return 0
    if g.list_recipes:
        out(_list_recipes())
        return 0
    if g.help is not None:
        return _help(g, options, out)
    if g.world_size is not None and not g.dry_run:
        raise ConfigError("--world-size only applies to --dry-run (a real run takes its world size from "
                          "torchrun/srun or --nproc-per-node)")
    launcher = [n for n in ("nnodes", "node_rank", "master_addr", "master_port") if getattr(g, n) is not None]
    if launcher and g.nproc_per_node is None:
        raise ConfigError(f"--{launcher[0].replace('_', '-')} needs --nproc-per-node")

    from megatron_bridge_cli.cli.layering import resolve

    cfg = resolve(g.recipe, g.config_files, options)
    if g.print_config:
        out(config_yaml(cfg))
    if g.dry_run:
        from megatron_bridge_cli.cli.dry_run import dry_run_world_size, summarize

        _setup_logging(out.enabled)
        out(summarize(cfg, dry_run_world_size(g.world_size, g.nproc_per_node, g.nnodes)))
    if g.print_config or g.dry_run:
        return 0
    if g.nproc_per_node is not None:
        return _launch(g, cfg)
    from megatron_bridge_cli.training.entry import run_training

    rc = run_training(cfg)
    return 0 if rc is None else int(rc)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run bridge-train with ``argv`` (default: sys.argv[1:]); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    out = _Output(_rank_zero())
    try:
        return _run(argv, out)
    except ConfigError as e:
        return _report(e, out.enabled)
