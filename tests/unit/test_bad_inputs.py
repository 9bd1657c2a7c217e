"""Every bad input a user can give, one row each: flags, YAML files, recipe files, data,
checkpoints, output folders and the launcher's environment.

Each row runs bridge-train's real entry point (``main(argv)``, in-process so the table stays
fast) against real files built by the fixture, and must give: exit code 2, nothing on stdout,
exactly one ``bridge-train: error:`` paragraph (no blank line inside) that names the thing at
fault, no traceback, and nothing left on disk where the run would have written. Rows without
``--dry-run`` go the way of a real run (run_training), so checks that only a run makes are
covered too; none of them gets as far as creating a process group.
Load-time checkpoint faults (shape mismatch, corrupt shards) need a real saved checkpoint and
live in tests/integration/test_checkpoint_faults.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from megatron_bridge_cli.cli.main import main
from megatron_bridge_cli.config.models.provider import transformer_engine_available


@dataclass
class Bad:
    id: str
    argv: list[str]
    expected: list[str]
    env: dict = field(default_factory=dict)


def _rows() -> list[Bad]:
    D = "--dry-run"
    rows = [
        # ------------------------------------------------------------------ flags
        Bad("flag-typo", ["--model.num_layer=3"], ["unknown flag --model.num_layer; did you mean --model.num_layers"]),
        Bad("flag-wrong-section", ["--train.lr=0.1"], ["unknown flag --train.lr; did you mean --optimizer.lr?"]),
        Bad("flag-unknown", ["--nosuch"], ["unknown flag --nosuch"]),
        Bad("flag-unknown-section", ["--modle.num_layers=2"], ["--modle.num_layers", "did you mean --model.num_layers"]),
        Bad("flag-int", ["--model.num_layers=x"], ["--model.num_layers: invalid value 'x': expected an integer"]),
        Bad("flag-int-float", ["--model.num_layers=2.5"], ["--model.num_layers: invalid value '2.5'"]),
        Bad("flag-float", ["--optimizer.lr=fast"], ["--optimizer.lr: invalid value 'fast'"]),
        Bad("flag-bool", ["--model.add_bias_linear=maybe"], ["--model.add_bias_linear: invalid value 'maybe'"]),
        Bad("flag-enum", ["--tokenizer.tokenizer_type=bpe"],
            ["--tokenizer.tokenizer_type: invalid value 'bpe': expected one of: NullTokenizer, ByteLevelTokenizer"]),
        Bad("flag-literal", ["--scheduler.lr_decay_style=cosin"], ["--scheduler.lr_decay_style", "cosine"]),
        Bad("flag-dtype", ["--model.params_dtype=float33"], ["--model.params_dtype: invalid value 'float33'"]),
        Bad("flag-section-kind", ["--peft=lorax"], ["--peft", "lora"]),
        Bad("flag-no-value", ["--config-file"], ["--config-file takes one value, got none"]),
        Bad("flag-tuple-arity", ["--model.window_size=1"], ["--model.window_size"]),
        Bad("flag-list-item", ["--profiling.profile_ranks", "0", "x"], ["--profiling.profile_ranks"]),
        Bad("flag-dotlist-typo", ["trian.train_iters=5"], ["unknown override 'trian.train_iters'", "train.train_iters"]),
        Bad("flag-stray", ["stray"], ["unexpected argument 'stray'"]),
        Bad("flag-short-option", ["-x"], ["unknown option '-x'"]),
        Bad("flag-switch-value", ["--dry-run=yes"], ["--dry-run takes no value"]),
        Bad("flag-world-size-real-run", ["--world-size", "2"], ["--world-size only applies to --dry-run"]),
        Bad("flag-world-size-int", ["--world-size", "two", D], ["--world-size: invalid value 'two'"]),
        Bad("flag-world-size-zero", [D, "--world-size", "0"], ["--world-size (0) must be at least 1"]),
        Bad("flag-nnodes-alone", ["--nnodes", "2"], ["--nnodes needs --nproc-per-node"]),
        Bad("flag-nproc-zero", ["--nproc-per-node", "0"], ["--nproc-per-node (0) must be at least 1"]),
        Bad("flag-help-section", ["--help", "zzzz"], ["--help zzzz: no section or flag matches"]),
        # ------------------------------------------------------------------ values out of range
        Bad("range-negative-layers", [D, "--model.num_layers=-2"], ["--model.num_layers (-2) must be a whole number >= 1"]),
        Bad("range-zero-hidden", [D, "--model.hidden_size=0"], ["--model.hidden_size (0) must be"]),
        Bad("range-nan-lr", [D, "--optimizer.lr=nan"], ["--optimizer.lr is NaN"]),
        Bad("range-inf-lr", [D, "--optimizer.lr=inf"], ["--optimizer.lr (inf) must be a finite number >= 0"]),
        Bad("range-dropout", [D, "--model.hidden_dropout=1.5"], ["--model.hidden_dropout (1.5) must be a probability"]),
        Bad("range-beta2", [D, "--optimizer.adam_beta2=1"], ["--optimizer.adam_beta2 (1.0) must be in [0, 1)"]),
        Bad("range-log-interval", [D, "--logger.log_interval=0"], ["--logger.log_interval (0) must be"]),
        Bad("range-eval-interval", [D, "--train.eval_interval=0"], ["--train.eval_interval (0) must be"]),
        Bad("range-num-workers", [D, "--dataset.num_workers=-1"], ["--dataset.num_workers (-1) must be a number >= 0"]),
        Bad("range-most-recent-k", [D, "--checkpoint.most_recent_k=0"], ["--checkpoint.most_recent_k (0) must be -1"]),
        Bad("range-train-iters", [D, "--train.train_iters=0"], ["--train.train_iters (0) must be"]),
        # ------------------------------------------------------------------ config logic
        Bad("logic-tp-world", [D, "--world-size", "3", "--model.tensor_model_parallel_size=2"],
            ["world size (3) is not divisible by --model.tensor_model_parallel_size (2)"]),
        Bad("logic-batch", [D, "--world-size", "2", "--train.global_batch_size=7", "--train.micro_batch_size=2"],
            ["--train.global_batch_size (7) is not divisible"]),
        Bad("logic-explicit-warmup", [D, "--train.train_iters=10", "--scheduler.lr_warmup_iters=20"],
            ["--scheduler.lr_warmup_iters (20) must be shorter than the decay"]),
        Bad("logic-lr-unset", [D, "--optimizer.lr=null"], ["--optimizer.lr is not set"]),
        Bad("logic-iters-and-samples", [D, "--train.train_samples=100"], ["set exactly one of --train.train_iters"]),
        *([] if transformer_engine_available() else [  # a mistake only where TE is missing
            Bad("logic-fp8-without-te", [D, "--model.fp8=hybrid"], ["needs Transformer Engine"])]),
        Bad("logic-sp-without-tp", [D, "--model.sequence_parallel=true"], ["--model.sequence_parallel needs"]),
        Bad("logic-peft-without-base", [D, "--peft=lora"], ["--peft needs base weights"]),
        Bad("logic-split", [D, "--dataset.split=a,b"], ["--dataset.split ('a,b') must be"]),
        Bad("logic-distributed-optimizer-half", [D, "--ddp.use_distributed_optimizer=true"],
            ["--optimizer.use_distributed_optimizer (false) and --ddp.use_distributed_optimizer (true) must agree"]),
        Bad("logic-split-zero", [D, "--dataset.split=0,0,0"], ["--dataset.split ('0,0,0') gives every split a share of 0"]),
        Bad("logic-quantizer-factory", [D, "--model.fp8_quantizer_factory=os.system"],
            ["--model.fp8_quantizer_factory", "refused _target_ 'os.system'"]),
        # ------------------------------------------------------------------ profiling and straggler detection
        *([] if torch.cuda.is_available() else [  # GPU-only features, refused before anything starts
            Bad("diag-nsys-without-cuda", ["--profiling=nsys"],
                ["--profiling.use_nsys_profiler (--profiling=nsys) needs a CUDA GPU", "--profiling=pytorch"]),
            Bad("diag-memory-history-without-cuda", [D, "--profiling=pytorch", "--profiling.record_memory_history=true"],
                ["--profiling.record_memory_history needs a CUDA GPU"]),
            Bad("diag-nvrx-straggler-without-cuda", ["--nvrx_straggler=default"],
                ["--nvrx_straggler needs a CUDA GPU", "CUPTI", "pip install '.[resilience]'", "--straggler"])]),
        Bad("diag-profiling-nothing", [D, "--profiling=pytorch", "--profiling.use_pytorch_profiler=false"],
            ["--profiling is on but records nothing", "--profiling=pytorch"]),
        Bad("diag-profiling-empty-window", [D, "--profiling=pytorch", "--profiling.profile_step_start=3",
                                            "--profiling.profile_step_end=3"], ["the window [start, end) is empty"]),
        Bad("diag-profiling-reversed-window", [D, "--profiling=pytorch", "--profiling.profile_step_start=6",
                                               "--profiling.profile_step_end=4"],
            ["--profiling.profile_step_start (6) is after --profiling.profile_step_end (4)"]),
        Bad("diag-profiling-rank", [D, "--world-size", "2", "--profiling=pytorch", "--profiling.profile_ranks", "0", "2"],
            ["--profiling.profile_ranks names rank(s) 2", "world size 2"]),
        Bad("diag-profiling-after-the-run", [D, "--profiling=pytorch", "--train.train_iters=5"],
            ["--profiling.profile_step_start (10) is after the run's last iteration (--train.train_iters=5)"]),
        Bad("diag-straggler-interval", [D, "--straggler=default", "--straggler.report_interval=0"], ["--straggler.report_interval (0) must be"]),
        # ------------------------------------------------------------------ YAML files
        Bad("yaml-missing", ["--config-file", "{tmp}/missing.yaml"], ["config file '{tmp}/missing.yaml' does not exist"]),
        Bad("yaml-directory", ["--config-file", "{tmp}"], ["{tmp}"]),
        Bad("yaml-syntax", ["--config-file", "{tmp}/bad_syntax.yaml"], ["config file '{tmp}/bad_syntax.yaml' is not valid YAML at line 3"]),
        Bad("yaml-binary", ["--config-file", "{tmp}/binary.yaml"], ["config file '{tmp}/binary.yaml' is not UTF-8 text"]),
        Bad("yaml-latin1", ["--config-file", "{tmp}/latin1.yaml"], ["config file '{tmp}/latin1.yaml' is not UTF-8 text"]),
        Bad("yaml-duplicate-key", ["--config-file", "{tmp}/dup.yaml"], ["duplicate key 'train_iters'"]),
        Bad("yaml-unknown-key", ["--config-file", "{tmp}/typo.yaml"],
            ["unknown key 'micro_batch_sise' in section 'train'; did you mean 'micro_batch_size'"]),
        Bad("yaml-unknown-section", ["--config-file", "{tmp}/bad_section.yaml"], ["traing", "train"]),
        Bad("yaml-wrong-type", ["--config-file", "{tmp}/wrong_type.yaml"], ["num_layers", "integer"]),
        Bad("yaml-not-mapping", ["--config-file", "{tmp}/list.yaml"], ["{tmp}/list.yaml"]),
        Bad("yaml-missing-value", ["--config-file", "{tmp}/mandatory.yaml"], ["???"]),
        Bad("yaml-refused-target", ["--config-file", "{tmp}/evil_target.yaml"], ["refused _target_ 'os.system'"]),
        Bad("yaml-missing-target", ["--config-file", "{tmp}/no_target.yaml"], ["torch.nn.functional.no_such_fn", "does not exist"]),
        Bad("yaml-range", [D, "--config-file", "{tmp}/negative.yaml"], ["--model.num_layers (-4) must be"]),
        # ------------------------------------------------------------------ recipes
        Bad("recipe-typo", ["--recipe", "llama3_8"], ["unknown recipe 'llama3_8'; did you mean 'llama3_8b'"]),
        Bad("recipe-unknown", ["--recipe", "zzz"], ["unknown recipe 'zzz'; built-in recipes: gpt_cpu_tiny"]),
        Bad("recipe-file-missing", ["--recipe", "{tmp}/none.py:f"], ["recipe file '{tmp}/none.py' does not exist"]),
        Bad("recipe-import-error", ["--recipe", "{tmp}/bad_recipe.py:f"], ["failed to import: ModuleNotFoundError"]),
        Bad("recipe-syntax-error", ["--recipe", "{tmp}/syntax_recipe.py:f"], ["{tmp}/syntax_recipe.py", "SyntaxError"]),
        Bad("recipe-no-function", ["--recipe", "{tmp}/good_recipe.py:nope"], ["nope"]),
        Bad("recipe-wrong-return", ["--recipe", "{tmp}/good_recipe.py:not_a_container"], ["ConfigContainer"]),
        Bad("recipe-raises", ["--recipe", "{tmp}/good_recipe.py:raises"], ["raises", "RuntimeError"]),
        Bad("recipe-yaml-missing", ["--recipe", "{tmp}/missing.yaml"], ["config file '{tmp}/missing.yaml' does not exist"]),
        # ------------------------------------------------------------------ data
        Bad("data-missing", [D, "--dataset.data_path={tmp}/nope"], ["--dataset.data_path: {tmp}/nope.bin and {tmp}/nope.idx not found"]),
        Bad("data-bin-missing", [D, "--dataset.data_path={tmp}/only_idx"], ["{tmp}/only_idx.bin not found"]),
        Bad("data-blend-odd", [D, "--dataset.data_path", "0.5", "{tmp}/good", "0.3"], ["is not a blend"]),
        Bad("data-blend-order", [D, "--dataset.data_path", "{tmp}/good", "0.5", "{tmp}/good", "0.5"], ["is not a blend"]),
        Bad("data-blend-weight", [D, "--dataset.data_path", "-1", "{tmp}/good", "2", "{tmp}/good"], ["weights must be positive"]),
        Bad("data-not-an-index", [D, "--dataset.data_path={tmp}/text"], ["{tmp}/text.idx is not a megatron-core index file"]),
        Bad("data-truncated-index", [D, "--dataset.data_path={tmp}/short"], ["{tmp}/short.idx is truncated"]),
        Bad("data-bin-mismatch", [D, "--dataset.data_path={tmp}/mismatch"], ["{tmp}/mismatch.bin", "does not match"]),
        Bad("data-empty-split", [D, "--dataset.data_path={tmp}/good", "--dataset.split=999,1,0"], ["leaves the validation split"]),
        Bad("data-and-per-split", [D, "--dataset.data_path={tmp}/good", "--dataset.train_data_path={tmp}/good"],
            ["set either --dataset.data_path or --dataset.{{train,valid,test}}_data_path"]),
        # ------------------------------------------------------------------ checkpoints
        Bad("ckpt-load-is-file", [D, "--checkpoint.load={tmp}/binary.yaml"], ["--checkpoint.load", "{tmp}/binary.yaml"]),
        Bad("ckpt-tracker-garbage", [D, "--checkpoint.load={tmp}/ck_garbage"], ["{tmp}/ck_garbage", "latest_checkpointed_iteration.txt", "iteration number"]),
        Bad("ckpt-tracker-missing-dir", [D, "--checkpoint.load={tmp}/ck_missing"], ["{tmp}/ck_missing", "iter_0000020"]),
        Bad("ckpt-incomplete", [D, "--checkpoint.load={tmp}/ck_incomplete"], ["{tmp}/ck_incomplete", "iter_0000010"]),
        Bad("ckpt-empty-required", [D, "--checkpoint.load={tmp}/ck_empty", "--checkpoint.exit_on_missing_checkpoint=true"],
            ["--checkpoint.load", "{tmp}/ck_empty"]),
        Bad("ckpt-step-missing", [D, "--checkpoint.load={tmp}/ck_missing", "--checkpoint.ckpt_step=7"], ["iter_0000007"]),
        Bad("ckpt-pretrained-empty", [D, "--checkpoint.pretrained_checkpoint={tmp}/ck_empty"],
            ["--checkpoint.pretrained_checkpoint", "{tmp}/ck_empty"]),
        # ------------------------------------------------------------------ output folders
        Bad("out-save-under-file", [D, "--checkpoint.save={tmp}/binary.yaml/ckpts"], ["--checkpoint.save", "is a file"]),
        Bad("out-save-unwritable", [D, "--checkpoint.save=/proc/bridge-train-test"], ["--checkpoint.save", "/proc"]),
        Bad("out-tensorboard", [D, "--logger.tensorboard_dir={tmp}/binary.yaml/tb"], ["--logger.tensorboard_dir", "is a file"]),
        Bad("out-wandb", [D, "--logger.wandb_project=p", "--logger.wandb_save_dir=/proc/wandb-test"],
            ["--logger.wandb_save_dir", "/proc"]),
        # ------------------------------------------------------------------ launcher environment (real runs)
        Bad("env-rank", [], ["RANK='abc'"], {"RANK": "abc", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}),
        Bad("env-world-size", [], ["WORLD_SIZE='two'"], {"RANK": "0", "WORLD_SIZE": "two", "MASTER_ADDR": "127.0.0.1"}),
        Bad("env-world-size-zero", [], ["WORLD_SIZE='0'"], {"RANK": "0", "WORLD_SIZE": "0"}),
        Bad("env-rank-too-big", [], ["RANK=2 is not below WORLD_SIZE=2"], {"RANK": "2", "WORLD_SIZE": "2", "MASTER_ADDR": "h"}),
        Bad("env-no-master", [], ["WORLD_SIZE=2 but MASTER_ADDR is not set"], {"RANK": "0", "WORLD_SIZE": "2"}),
        Bad("env-master-port", [], ["MASTER_PORT='http'"], {"MASTER_PORT": "http"}),
        Bad("env-slurm-ntasks", [], ["SLURM_NTASKS='many'"], {"SLURM_PROCID": "0", "SLURM_NTASKS": "many"}),
        Bad("env-dry-run-world-size", [D], ["WORLD_SIZE='x' is not an integer"], {"WORLD_SIZE": "x"}),
    ]
    return rows


ROWS = _rows()


def test_the_table_is_big_and_distinct():
    assert len(ROWS) >= 60 and len({r.id for r in ROWS}) == len(ROWS)
    assert len({(tuple(r.argv), tuple(sorted(r.env.items()))) for r in ROWS}) == len(ROWS)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    from megatron_bridge_cli.data.preprocess import write_indexed_dataset
    from megatron_bridge_cli.data.tokenizers import ByteLevelTokenizer

    d = tmp_path_factory.mktemp("bad_inputs")
    files = {
        "bad_syntax.yaml": "model:\n  num_layers: 2\n   hidden_size: [\n",
        "typo.yaml": "train:\n  micro_batch_sise: 2\n",
        "dup.yaml": "train:\n  train_iters: 5\n  train_iters: 6\n",
        "bad_section.yaml": "traing:\n  train_iters: 5\n",
        "wrong_type.yaml": "model:\n  num_layers: many\n",
        "list.yaml": "- model\n- train\n",
        "mandatory.yaml": "train:\n  train_iters: ???\n",
        "evil_target.yaml": "model:\n  activation_func:\n    _target_: os.system\n    _args_: [touch pwned]\n",
        "no_target.yaml": "model:\n  activation_func:\n    _target_: torch.nn.functional.no_such_fn\n    _call_: false\n",
        "negative.yaml": "model:\n  num_layers: -4\n",
        "bad_recipe.py": "import no_such_module_anywhere\n",
        "syntax_recipe.py": "def f(:\n",
        "good_recipe.py": (
            "from megatron_bridge_cli.recipes.gpt import gpt_cpu_tiny\n"
            "def not_a_container():\n    return {'model': 1}\n"
            "def raises():\n    raise RuntimeError('recipe broke')\n"
        ),
    }
    for name, text in files.items():
        (d / name).write_text(text)
    (d / "binary.yaml").write_bytes(b"\x7fELF\x02\x01\x01\x00\x00\xff\xfe")
    (d / "latin1.yaml").write_bytes("train:\n  train_iters: 5 # r\xe9sum\xe9\n".encode("latin-1"))
    docs = [f"document number {i} " * 8 for i in range(40)]
    write_indexed_dataset(docs, ByteLevelTokenizer(), d / "good")
    (d / "only_idx.idx").write_bytes((d / "good.idx").read_bytes())
    (d / "text.idx").write_text("just text\n")
    (d / "text.bin").write_text("just text\n")
    (d / "short.idx").write_bytes((d / "good.idx").read_bytes()[:20])
    (d / "short.bin").write_bytes((d / "good.bin").read_bytes())
    (d / "mismatch.idx").write_bytes((d / "good.idx").read_bytes())
    (d / "mismatch.bin").write_bytes((d / "good.bin").read_bytes()[:-10])
    for name in ("ck_garbage", "ck_missing", "ck_incomplete", "ck_empty"):
        (d / name).mkdir()
    (d / "ck_garbage" / "latest_checkpointed_iteration.txt").write_text("\x00\x01garbage")
    (d / "ck_missing" / "latest_checkpointed_iteration.txt").write_text("20")
    (d / "ck_incomplete" / "latest_checkpointed_iteration.txt").write_text("10")
    (d / "ck_incomplete" / "iter_0000010").mkdir()
    return d


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input_gets_one_clear_error(row, tmp, capsys, monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in row.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp)
    before = sorted(os.listdir(tmp))
    rc = main([a.format(tmp=tmp) for a in row.argv])
    out, err = capsys.readouterr()
    assert rc == 2, (rc, err)
    assert out == ""
    assert err.startswith("bridge-train: error: ") and err.count("bridge-train: error:") == 1, err
    assert "Traceback" not in err and "\n\n" not in err.strip(), err
    for text in row.expected:
        assert text.format(tmp=tmp) in err, err
    assert sorted(os.listdir(tmp)) == before  # nothing written (e.g. no folder named after a bad path)
    assert not (tmp / "pwned").exists()
