"""The design document's Python API (shared/config-overview.md), run as a user's script would.

Three scripts run at once in fresh interpreters (a model built standalone sets up a process-wide
runtime, so they cannot share the test process):
- ``examples``: the document's examples as written. ``GPTModelProvider(...).provide()`` builds
  the 1.3B-parameter model on CPU with no process group; the "Usage" container is built with
  ``GPTDatasetConfig(sequence_length=2048)``, overridden in Python and finalized lazily (the
  full-size run is checked, not trained: that needs GPUs); a typo'd override is refused.
- ``readme``: the README's Python API snippet.
- ``user_step``: ``pretrain(config, forward_step_func)`` trains a small model with a forward
  step of the user's (with the leading state argument), whose loss is twice the
  cross-entropy: the logged losses are exactly what it reported.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import pytest

from tests.integration.harness import LOSS_RE, ROOT, env

EXAMPLES = textwrap.dedent('''
    import json
    from megatron_bridge_cli.config import (
        CheckpointConfig, ConfigContainer, GPTDatasetConfig, GPTModelProvider, LoggerConfig, OptimizerConfig,
        SchedulerConfig, TokenizerConfig, TrainingConfig,
    )
    from megatron_bridge_cli.training.preflight import prepare

    # Models can be used standalone
    model_provider = GPTModelProvider(
        num_layers=24,
        hidden_size=2048,
        vocab_size=50000,    # Must be explicitly set
        seq_length=2048,     # Must be explicitly set
    )

    # This works independently of other configs
    model = model_provider.provide()
    built = sum(p.numel() for p in model.parameters())
    del model
    from megatron_bridge_cli.training.param_count import count_parameters
    counted = count_parameters(model_provider).total  # --dry-run's figure (a meta-device build)

    # Create and configure
    config = ConfigContainer(
        model=GPTModelProvider(num_layers=24, seq_length=2048),
        train=TrainingConfig(train_iters=1000),
        dataset=GPTDatasetConfig(sequence_length=2048),  # Must match model seq_length
        # ... other required configs
        optimizer=OptimizerConfig(lr=3e-4), scheduler=SchedulerConfig(), logger=LoggerConfig(),
        tokenizer=TokenizerConfig(vocab_size=50000), checkpoint=CheckpointConfig(),
    )

    # Modify as needed
    config.train.train_iters = 5000
    config.model.hidden_size = 4096

    # (pretrain() finalizes right here; the full-size run needs GPUs, so check it the same way)
    final = prepare(config, 8)
    try:
        config.train.train_iter = 500
        typo = None
    except AttributeError as e:
        typo = str(e)
    print("RESULT " + json.dumps({
        "built": built, "counted": counted, "heads": model_provider.num_attention_heads,
        "final": [final.model.hidden_size, final.model.num_attention_heads, final.model.ffn_hidden_size,
                  final.train.total_iters, final.dataset.seq_length, final.dataset.sample_length],
        "user_values": [config.train.train_iters, config.model.hidden_size, config.model.num_attention_heads],
        "typo": typo,
    }))
''')

USER_STEP = textwrap.dedent('''
    import json
    import torch
    from megatron_bridge_cli.recipes.gpt import gpt_cpu_tiny
    from megatron_bridge_cli.training import pretrain

    reported = []

    def forward_step(state, data_iterator, model):
        batch = next(data_iterator)
        output = model(batch["tokens"], batch["position_ids"], batch.get("attention_mask"), labels=batch["labels"])

        def loss_func(output_tensor):
            mask = batch["loss_mask"].float()
            loss = 2 * (output_tensor.float() * mask).sum() / mask.sum()
            if model.training:
                reported.append((state.train_state.iteration, loss.item()))
            return loss, {"lm loss": loss.detach()}

        return output, loss_func

    config = gpt_cpu_tiny(num_layers=2, hidden_size=64, seq_length=64, global_batch_size=8, micro_batch_size=4,
                          train_iters=3)
    config.logger.log_interval = 1
    config.train.eval_iters = 1
    config.dataset.num_workers = 0
    rc = pretrain(config, forward_step)
    print("RESULT " + json.dumps({"rc": rc, "reported": reported}))
''')


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("python_api")
    readme = (ROOT / "README.md").read_text().split("- **Python API.**", 1)[1]
    readme_code = textwrap.dedent(re.search(r"```python\n(.*?)```", readme, re.S).group(1))
    readme_code += "\n    print('RESULT ' + json.dumps({'params': sum(p.numel() for p in model.parameters())}))\n"
    procs = {}
    for name, text in (("examples", EXAMPLES), ("user_step", USER_STEP), ("readme", "import json\n" + readme_code)):
        script = tmp / f"{name}.py"
        script.write_text(text)
        procs[name] = subprocess.Popen([sys.executable, str(script)], cwd=tmp, env=env(), text=True,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = {}
    for name, proc in procs.items():
        text, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, text[-3000:]
        out[name] = (json.loads(text.split("RESULT ", 1)[1].splitlines()[0]), text)
    return out


def test_the_design_examples_run_as_written(results):
    r, _ = results["examples"]
    assert r["built"] == r["counted"] > 1_300_000_000  # 24 layers of 2048 on CPU, no process group
    assert r["heads"] == 16  # derived: heads of 128 channels
    assert r["final"] == [4096, 32, 4 * 4096, 5000, 2048, 2048]  # derived from the overrides, lazily
    assert r["user_values"] == [5000, 4096, 0]  # the user's container keeps what they set
    assert "TrainingConfig has no field 'train_iter'; did you mean 'train_iters'" in r["typo"]


def test_the_readme_python_api_snippet_runs(results):
    r, text = results["readme"]
    assert "training 5 iterations" in text and "validation loss at iteration 5 on test set" in text, text[-2000:]
    assert r["params"] > 0


def test_a_user_forward_step_is_called_and_its_loss_is_logged(results):
    r, text = results["user_step"]
    assert r["rc"] == 0
    logged = {int(m.group(1)): float(m.group(3)) for m in LOSS_RE.finditer(text)}
    assert sorted(logged) == [1, 2, 3]
    for iteration, loss in logged.items():
        mine = [value for it, value in r["reported"] if it == iteration - 1]
        assert len(mine) == 2  # two micro-batches of 4 per global batch of 8
        assert loss == pytest.approx(sum(mine) / 2, rel=1e-6)
    assert logged[1] > 2 * 4.5  # twice a byte-level cross-entropy at the start (~ln 257 = 5.5)
    assert re.search(r"validation loss at iteration 3", text)
