"""validate()/finalize(): every problem is reported, all at once, naming the flag to change."""

import logging

import pytest
import torch

from megatron_bridge_cli.config import (
    LoRAConfig,
    MambaModelProvider,
    MIXED_PRECISION_PRESETS,
    ProfilingConfig,
    finalize,
    validate,
)
from megatron_bridge_cli.config.models.mamba import mamba_missing_packages
from megatron_bridge_cli.config.models.provider import transformer_engine_available
from megatron_bridge_cli.errors import ConfigError, ValidationError
from tests.factories import tiny_container


def problems_of(cfg, world_size=1) -> list[str]:
    with pytest.raises(ValidationError) as err:
        validate(cfg, world_size)
    assert isinstance(err.value, ConfigError) and err.value.exit_code == 2
    return err.value.problems


def own_problems(cfg) -> list[str]:
    """Every problem validation reports (none: an empty list)."""
    try:
        validate(cfg)
    except ValidationError as e:
        return e.problems
    return []


def only_problem(cfg, world_size=1) -> str:
    problems = problems_of(cfg, world_size)
    assert len(problems) == 1, problems
    return problems[0]


def test_valid_container_passes_and_validate_changes_nothing():
    cfg = tiny_container()
    before = cfg.to_yaml()
    validate(cfg, world_size=2)
    assert cfg.to_yaml() == before


def test_seq_length_mismatch():
    cfg = tiny_container()
    cfg.model.seq_length, cfg.dataset.seq_length = 4096, 2048
    assert only_problem(cfg) == "--model.seq_length (4096) != --dataset.seq_length (2048)"


def test_world_size_not_divisible_by_model_parallel():
    cfg = tiny_container()
    cfg.model.tensor_model_parallel_size = 2
    message = only_problem(cfg, world_size=3)
    assert "world size (3)" in message and "--model.tensor_model_parallel_size (2)" in message
    assert "--model.pipeline_model_parallel_size" in message and "--model.context_parallel_size" in message


def test_global_batch_not_divisible_by_micro_batch_times_dp():
    cfg = tiny_container(global_batch_size=10, micro_batch_size=2)
    message = only_problem(cfg, world_size=2)
    assert message.startswith("--train.global_batch_size (10) is not divisible by --train.micro_batch_size (2)")
    assert "data-parallel size (2" in message


@pytest.mark.parametrize("iters, samples, which", [(100, 800, "both"), (None, None, "neither")])
def test_train_iters_and_samples_exactly_one(iters, samples, which):
    cfg = tiny_container(train_iters=iters, train_samples=samples)
    message = only_problem(cfg)
    assert "--train.train_iters" in message and "--train.train_samples" in message and which in message


def test_warmup_not_shorter_than_decay():
    cfg = tiny_container(train_iters=100)
    cfg.scheduler.lr_warmup_iters = 20
    cfg.scheduler.lr_decay_iters = 20
    cfg.explicit_paths.add("scheduler.lr_warmup_iters")  # as a flag or YAML file would
    message = only_problem(cfg)
    assert "--scheduler.lr_warmup_iters (20)" in message and "--scheduler.lr_decay_iters" in message


def test_warmup_longer_than_whole_run():
    cfg = tiny_container(train_iters=100)
    cfg.scheduler.lr_warmup_iters = 150
    cfg.explicit_paths.add("scheduler.lr_warmup_iters")
    assert "--scheduler.lr_warmup_iters (150)" in only_problem(cfg)


@pytest.mark.parametrize("unit", ["iters", "samples"])
def test_recipe_warmup_is_shortened_to_fit_a_short_run(unit, caplog):
    """A smoke run of any recipe works: a warmup the user did not set shrinks to a tenth of the
    decay, with a warning; one the user set explicitly stays an error."""
    if unit == "iters":
        cfg = tiny_container(train_iters=10)
        cfg.scheduler.lr_warmup_iters = 50
    else:
        cfg = tiny_container(train_iters=None, train_samples=80)
        cfg.scheduler.lr_warmup_iters, cfg.scheduler.lr_warmup_samples = 0, 400
    with caplog.at_level(logging.WARNING, logger="megatron_bridge_cli.config.finalize"):
        final = finalize(cfg, 1)
    assert final.scheduler.lr_decay_steps == 80
    assert final.scheduler.lr_warmup_steps == 8
    assert f"--scheduler.lr_warmup_{unit}=" in caplog.text and "does not fit" in caplog.text
    assert cfg.scheduler.lr_warmup_iters == (50 if unit == "iters" else 0)  # the user's container is untouched
    cfg.explicit_paths.add(f"scheduler.lr_warmup_{unit}")
    assert f"--scheduler.lr_warmup_{unit}" in only_problem(cfg)


@pytest.mark.parametrize("section", ["model", "optimizer", "mixed_precision"])
def test_bf16_and_fp16_both_on(section):
    cfg = tiny_container()
    if section == "mixed_precision":
        cfg.mixed_precision = MIXED_PRECISION_PRESETS["bf16_mixed"]()
    getattr(cfg, section).bf16 = True
    getattr(cfg, section).fp16 = True
    problems = problems_of(cfg)
    assert f"--{section}.bf16 and --{section}.fp16 are both on; choose one" in problems


def test_sequence_parallel_with_tp1():
    cfg = tiny_container()
    cfg.model.sequence_parallel = True
    assert "--model.sequence_parallel needs --model.tensor_model_parallel_size > 1" in problems_of(cfg)


@pytest.mark.skipif(transformer_engine_available(), reason="Transformer Engine is installed here")
def test_sequence_parallel_without_transformer_engine():
    cfg = tiny_container()
    cfg.model.sequence_parallel = True
    cfg.model.tensor_model_parallel_size = 2
    assert any("Transformer Engine" in p for p in problems_of(cfg, world_size=2))


def test_peft_without_pretrained_checkpoint():
    cfg = tiny_container()
    cfg.peft = LoRAConfig()
    assert [p for p in own_problems(cfg) if "--checkpoint.pretrained_checkpoint" in p]
    cfg.checkpoint.pretrained_checkpoint = "/ckpt/base"
    assert own_problems(cfg) == []


def test_profiling_start_after_end():
    cfg = tiny_container()
    cfg.profiling = ProfilingConfig(use_pytorch_profiler=True, profile_step_start=20, profile_step_end=10)
    [message] = own_problems(cfg)
    assert "--profiling.profile_step_start (20)" in message and "--profiling.profile_step_end (10)" in message


def test_nsys_and_torch_profiler_both_on():
    cfg = tiny_container()
    cfg.profiling = ProfilingConfig(use_pytorch_profiler=True, use_nsys_profiler=True)
    assert "--profiling.use_nsys_profiler and --profiling.use_pytorch_profiler" in own_problems(cfg)[0]


@pytest.mark.skipif(not mamba_missing_packages(), reason="the mamba-ssm stack is installed here")
def test_mamba_without_mamba_ssm_says_what_to_install():
    cfg = tiny_container()
    cfg.model = MambaModelProvider(num_layers=2, hidden_size=64, num_attention_heads=4, vocab_size=128, seq_length=32)
    message = only_problem(cfg)
    assert "mamba" in message and "pip install mamba-ssm" in message


def test_megatron_core_checks_are_reported_as_problems():
    cfg = tiny_container()
    cfg.model.num_query_groups = 3  # not a divisor of 4 heads x TP... megatron-core checks TP compat
    cfg.model.tensor_model_parallel_size = 2
    message = only_problem(cfg, world_size=2)
    assert message.startswith("--model:") and "num_query_groups" in message


def test_several_problems_come_back_together():
    cfg = tiny_container(train_samples=800)  # both iters and samples
    cfg.model.seq_length, cfg.dataset.seq_length = 4096, 2048
    cfg.model.tensor_model_parallel_size = 2
    cfg.model.bf16 = cfg.model.fp16 = True
    cfg.profiling = ProfilingConfig(profile_step_start=5, profile_step_end=1)
    cfg.peft = LoRAConfig()
    problems = problems_of(cfg, world_size=3)
    assert len(problems) == 7, problems  # six mistakes, and the profiling section records nothing
    text = str(ValidationError(problems))
    assert text.startswith("invalid configuration (7 problem(s)):")


def test_warmup_problem_reported_with_others():
    cfg = tiny_container(train_iters=10)
    cfg.scheduler.lr_warmup_iters = 50
    cfg.explicit_paths.add("scheduler.lr_warmup_iters")
    cfg.model.seq_length, cfg.dataset.seq_length = 64, 32
    problems = problems_of(cfg)
    assert len(problems) == 2 and any("lr_warmup_iters" in p for p in problems)


def test_interleaved_pipeline_on_gloo_turns_off_batched_p2p_with_warning(caplog):
    cfg = tiny_container()
    cfg.model.num_layers = 4
    cfg.model.pipeline_model_parallel_size = 2
    cfg.model.virtual_pipeline_model_parallel_size = 2
    with caplog.at_level("WARNING"):
        run = finalize(cfg, world_size=2)
    assert run.model.batch_p2p_comm is False and "batch_p2p_comm" in caplog.text
    assert run.model.pipeline_dtype == torch.float32
    cfg.explicit_paths.add("model.batch_p2p_comm")  # the user asked for it: refuse instead
    assert "--model.batch_p2p_comm must be false" in only_problem(cfg, world_size=2)
