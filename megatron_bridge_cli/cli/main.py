"""bridge-train's entry point: parse -> resolve layers -> (print | dry run | launch | train).

Exit codes: 0 success, 2 a usage or config mistake (one paragraph on stderr, no traceback),
1 a runtime failure. Under torchrun or srun only global rank 0 prints, so an error or a
config print appears once, not once per process; every rank exits with the same code.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Optional, Sequence

from megatron_bridge_cli.errors import ConfigError, RunFailure

__all__ = ["main"]

PROG = "bridge-train"


def _rank_zero() -> bool:
    from megatron_bridge_cli.training.env import is_rank_zero

    return is_rank_zero()


class _Output:
    """stdout of rank 0 only."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __call__(self, text: str) -> None:
        if self.enabled:
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
            sys.stdout.flush()


def _report(error: ConfigError | RunFailure, enabled: bool) -> int:
    if enabled:
        sys.stderr.write(f"{PROG}: error: {error}\n")
        sys.stderr.flush()
    return error.exit_code


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


def _schema_for(g):
    """The schema a command line parses against: the cached one of its recipe, or, when config
    files (or a YAML recipe) may bring classes of their own, the schema of that live tree."""
    from megatron_bridge_cli.cli.cache import cached_schema

    if not g.config_files and not (g.recipe or "").endswith((".yaml", ".yml")):
        return cached_schema(g.recipe), None
    from megatron_bridge_cli.cli.layering import merge_config_file
    from megatron_bridge_cli.cli.recipe_loader import load_recipe
    from megatron_bridge_cli.cli.schema import schema_of

    cfg = load_recipe(g.recipe)
    for path in g.config_files:
        merge_config_file(cfg, path)
    return schema_of(cfg, g.recipe, docs=False), cfg


def _layered(g, cfg, overrides):
    """The run's container: ``cfg`` (recipe + config files, when _schema_for built it) or the
    recipe, with the command-line overrides applied."""
    from megatron_bridge_cli.cli.layering import apply_overrides, resolve

    if cfg is None:
        return resolve(g.recipe, [], overrides)
    apply_overrides(cfg, overrides)
    return cfg


def _help(g, argv: list[str], out: _Output) -> int:
    """Help for the recipe comes from the cached schema (no torch import); a command line with
    config files or flags is resolved, so the values shown are the ones it gives. A broken
    command line falls back to the plain default recipe, with a note."""
    from megatron_bridge_cli.cli.cache import cached_schema
    from megatron_bridge_cli.cli.help import render_help
    from megatron_bridge_cli.cli.parser import parse_overrides

    try:
        schema, cfg = _schema_for(g)
        overrides = parse_overrides(argv, schema)
        if overrides or cfg is not None:
            from megatron_bridge_cli.cli.schema import schema_of

            schema = schema_of(_layered(g, cfg, overrides), g.recipe)
    except ConfigError as e:
        if out.enabled:
            sys.stderr.write(f"{PROG}: note: showing the default recipe's values ({e})\n")
        schema = cached_schema(None)
    out(render_help(schema, g.help))
    return 0


def _setup_logging(enabled: bool) -> None:
    """Warnings of finalize (explicit values beating presets) reach the user once, readably."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format=f"{PROG}: %(levelname)s: %(message)s",
                            level=logging.WARNING if enabled else logging.ERROR)


def _launch(g, cfg, argv: list[str]) -> int:
    from megatron_bridge_cli.training.preflight import prepare

    if g.nproc_per_node < 1:
        raise ConfigError(f"--nproc-per-node ({g.nproc_per_node}) must be at least 1")
    if g.max_restarts is not None and g.max_restarts < 0:
        raise ConfigError(f"--max-restarts ({g.max_restarts}) must be 0 or more")
    prepare(cfg, g.nproc_per_node * (g.nnodes or 1))  # fail here, once, before spawning workers
    from megatron_bridge_cli.cli.parser import worker_argv

    where = dict(nproc_per_node=g.nproc_per_node, nnodes=g.nnodes or 1, node_rank=g.node_rank or 0,
                 master_addr=g.master_addr, master_port=g.master_port, max_restarts=g.max_restarts or 0,
                 argv=worker_argv(argv))
    if cfg.ft is not None and cfg.ft.enable_ft_package:  # heartbeats need ft_launcher's rank monitors
        from megatron_bridge_cli.training.ft_launch import launch_with_ft

        return launch_with_ft(ft=cfg.ft, **where)
    from megatron_bridge_cli.training.launch import launch_workers

    return launch_workers(**where)


def _completion_script(shell: str) -> str:
    import argcomplete

    from megatron_bridge_cli.cli.cache import cached_schema

    cached_schema(None)  # warm the cache now, so the first TAB is fast too
    return argcomplete.shellcode([PROG], shell=shell)


def _run(argv: list[str], out: _Output) -> int:
    from megatron_bridge_cli.cli.parser import parse_globals, parse_overrides

    g = parse_globals(argv)
    if g.version:
        from megatron_bridge_cli import __version__

        out(f"{PROG} {__version__}")
        return 0
    if g.completion:
        out(_completion_script(g.completion))
        return 0
    if g.list_recipes:
        from megatron_bridge_cli.cli.cache import cached_schema
        from megatron_bridge_cli.cli.help import list_recipes

        out(list_recipes(cached_schema(None)))
        return 0
    if g.help is not None:
        return _help(g, argv, out)
    schema, cfg = _schema_for(g)
    overrides = parse_overrides(argv, schema)  # unknown flags fail here, before torch is imported
    if g.world_size is not None and not g.dry_run:
        raise ConfigError("--world-size only applies to --dry-run (a real run takes its world size from "
                          "torchrun/srun or --nproc-per-node)")
    launcher = [n for n in ("nnodes", "node_rank", "master_addr", "master_port", "max_restarts")
                if getattr(g, n) is not None]
    if launcher and g.nproc_per_node is None:
        raise ConfigError(f"--{launcher[0].replace('_', '-')} needs --nproc-per-node")

    cfg = _layered(g, cfg, overrides)
    _setup_logging(out.enabled)  # finalize's notices: once, prefixed, from rank 0
    if g.print_config:
        out(config_yaml(cfg))
    if g.dry_run:
        from megatron_bridge_cli.cli.dry_run import dry_run_world_size, summarize

        out(summarize(cfg, dry_run_world_size(g.world_size, g.nproc_per_node, g.nnodes, g.recipe)))
    if g.print_config or g.dry_run:
        return 0
    if g.nproc_per_node is not None:
        return _launch(g, cfg, argv)
    from megatron_bridge_cli.training.entry import run_training

    rc = run_training(cfg)
    return 0 if rc is None else int(rc)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run bridge-train with ``argv`` (default: sys.argv[1:]); returns the exit code."""
    if "_ARGCOMPLETE" in os.environ:  # a TAB press: answer and exit (completion.py)
        from megatron_bridge_cli.cli.completion import complete

        complete()
    if "BRIDGE_TRAIN_LAUNCHER_PID" in os.environ and argv is None:  # an exec'd worker of --nproc-per-node
        from megatron_bridge_cli.training.launch import die_with_launcher

        die_with_launcher()
    argv = list(sys.argv[1:] if argv is None else argv)
    out = _Output(_rank_zero())
    try:
        return _run(argv, out)
    except ConfigError as e:
        return _report(e, out.enabled)
    except RunFailure as e:  # said by the rank it happened on
        return _report(e, True)
