"""Every user mistake: exit code 2, one 'bridge-train: error: ...' paragraph, no traceback, rank 0 only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


from megatron_bridge_cli.cli.main import main

REPO = Path(__file__).resolve().parents[2]


def run(argv, capsys):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


# The table of single bad inputs (flags, YAML, recipes, data, checkpoints, environment) is
# tests/unit/test_bad_inputs.py; these are the cross-cutting behaviours.


def test_validation_reports_every_problem_at_once(capsys):
    rc, out, err = run(["--dry-run", "--world-size", "2", "--train.global_batch_size=7", "--train.micro_batch_size=2",
                        "--scheduler.lr_warmup_fraction=2", "--optimizer.lr=null"], capsys)
    assert rc == 2 and out == ""
    assert "invalid configuration (" in err and err.count("\n  - ") >= 3
    assert "--train.global_batch_size (7) is not divisible" in err
    assert "--scheduler.lr_warmup_fraction (2.0) must be in [0, 1)" in err and "--optimizer.lr is not set" in err


def test_config_error_from_training_is_reported_the_same_way(capsys):
    # No --dry-run: the merged config goes to run_training, which finalizes first and raises.
    rc, out, err = run(["--train.global_batch_size=7", "--train.micro_batch_size=2"], capsys)
    assert rc == 2
    assert err.startswith("bridge-train: error: invalid configuration") and "Traceback" not in err


def test_only_rank_zero_prints(monkeypatch, capsys):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert run(["--model.num_layer=3"], capsys) == (2, "", "")
    assert run(["--print-config"], capsys) == (0, "", "")
    monkeypatch.setenv("RANK", "0")
    rc, out, err = run(["--model.num_layer=3"], capsys)
    assert rc == 2 and "did you mean" in err


def _start(*argv: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "megatron_bridge_cli", *argv], cwd=REPO, env=dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_real_process_exit_codes_and_no_traceback():
    # Both started at once: each pays the megatron-core import, the test pays it once.
    bad, ok = _start("--model.num-layer=3"), _start("--dry-run", "--world-size", "2")
    bad_out, bad_err = bad.communicate(timeout=300)
    ok_out, ok_err = ok.communicate(timeout=300)
    assert bad.returncode == 2
    assert bad_err.startswith("bridge-train: error: unknown flag --model.num-layer; did you mean --model.num_layers")
    assert "Traceback" not in bad_err and bad_out == ""
    assert ok.returncode == 0, ok_err
    assert "parameters: " in ok_out and "Traceback" not in ok_err


# ----------------------------------------------------------------------------- argv and the launcher hand-off
def test_argv_grammar_and_worker_argv():
    from megatron_bridge_cli.cli.parser import parse_command_line, worker_argv

    argv = ["--nproc-per-node", "2", "--model.num_layers", "3", "--nnodes=1", "--dataset.data_path", "a", "b",
            "--optimizer.lr=-1e-3", "--scheduler.lr_warmup_init", "-.5", "--master_port", "29999", "--dry-run",
            "--optimizer.min_lr", "-3e-4"]
    g, options = parse_command_line(argv)
    assert (g.nproc_per_node, g.nnodes, g.master_port, g.dry_run) == (2, 1, 29999, True)
    assert [(o.option, o.tokens) for o in options] == [
        ("--model.num_layers", ["3"]), ("--dataset.data_path", ["a", "b"]), ("--optimizer.lr", ["-1e-3"]),
        ("--scheduler.lr_warmup_init", ["-.5"]), ("--optimizer.min_lr", ["-3e-4"]),
    ]
    # Workers get everything but the launcher options, in the original order.
    assert worker_argv(argv) == ["--model.num_layers", "3", "--dataset.data_path", "a", "b", "--optimizer.lr=-1e-3",
                                 "--scheduler.lr_warmup_init", "-.5", "--dry-run", "--optimizer.min_lr", "-3e-4"]


def test_launch_validates_once_before_spawning_workers(capsys):
    rc, out, err = run(["--nproc-per-node", "2", "--train.global_batch_size=7", "--train.micro_batch_size=2"], capsys)
    assert rc == 2 and "--train.global_batch_size (7) is not divisible" in err
    rc, out, err = run(["--nproc-per-node", "0"], capsys)
    assert rc == 2 and "--nproc-per-node (0) must be at least 1" in err
