"""Static typing (the design's promise): the config package and the Python API type-check clean
under mypy (settings in pyproject.toml), and a user's script gets its mistakes flagged before it
runs: an unknown field, a value of the wrong type."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

USER_SCRIPT = textwrap.dedent('''
    from megatron_bridge_cli.config import (
        CheckpointConfig, ConfigContainer, GPTDatasetConfig, GPTModelProvider, LoggerConfig, OptimizerConfig,
        SchedulerConfig, TokenizerConfig, TrainingConfig,
    )
    from megatron_bridge_cli.training import pretrain

    config = ConfigContainer(
        model=GPTModelProvider(num_layers=24, seq_length=2048),
        train=TrainingConfig(train_iters=1000),
        dataset=GPTDatasetConfig(sequence_length=2048),
        optimizer=OptimizerConfig(lr=3e-4), scheduler=SchedulerConfig(), logger=LoggerConfig(),
        tokenizer=TokenizerConfig(), checkpoint=CheckpointConfig(),
    )
    config.train.train_iters = 5000
    config.model.hidden_size = 4096

    def run() -> int:
        return pretrain(config)
''')
MISTAKES = textwrap.dedent('''
    config.train.train_iter = 500
    config.scheduler.lr_decay_style = 3
''')


def _mypy(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def test_config_package_and_api_type_check_clean_and_catch_user_mistakes(tmp_path):
    good, bad = tmp_path / "good.py", tmp_path / "bad.py"
    good.write_text(USER_SCRIPT)
    bad.write_text(USER_SCRIPT + MISTAKES)
    package = _mypy()  # the files pyproject.toml's [tool.mypy] names
    assert package.returncode == 0, package.stdout + package.stderr
    assert "Success: no issues found" in package.stdout
    user = _mypy("--ignore-missing-imports", "--follow-imports=silent", str(good), str(bad))
    errors = [line for line in user.stdout.splitlines() if ": error:" in line]
    assert all(line.startswith(str(bad)) for line in errors), user.stdout  # the correct script passes
    assert any('"TrainingConfig" has no attribute "train_iter"' in line for line in errors), user.stdout
    assert any("lr_decay_style" in line or "Literal" in line for line in errors), user.stdout
