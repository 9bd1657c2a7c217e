"""recipe < --config-file < --config-file < flags, explicit values, section switching, YAML merging."""

from __future__ import annotations

import logging
import textwrap

import pytest
import torch

from megatron_bridge_cli.cli.parser import parse_command_line
from megatron_bridge_cli.cli.layering import resolve
from megatron_bridge_cli.config import DoRAConfig, LoRAConfig, MockGPTDatasetConfig, T5ModelProvider, finalize
from megatron_bridge_cli.errors import ConfigError
from megatron_bridge_cli.recipes import DEFAULT_RECIPE, RECIPES


def build(*argv: str):
    g, options = parse_command_line(list(argv))
    return resolve(g.recipe, g.config_files, options)


@pytest.fixture
def yaml_file(tmp_path):
    count = iter(range(100))

    def write(text: str) -> str:
        path = tmp_path / f"layer{next(count)}.yaml"
        path.write_text(textwrap.dedent(text))
        return str(path)

    return write


# ----------------------------------------------------------------------------- precedence
def test_recipe_then_yaml_then_yaml_then_flags(yaml_file):
    first = yaml_file("model: {num_layers: 6, hidden_size: 256}\ntrain: {micro_batch_size: 2}\n")
    second = yaml_file("model:\n  num_layers: 8\n")
    assert build().model.num_layers == RECIPES[DEFAULT_RECIPE]().model.num_layers
    assert build("--config-file", first).model.num_layers == 6
    cfg = build("--config-file", first, "--config-file", second)
    assert (cfg.model.num_layers, cfg.model.hidden_size) == (8, 256)  # later file wins, earlier keys stay
    cfg = build("--config-file", first, "--config-file", second, "--model.num_layers=10")
    assert cfg.model.num_layers == 10
    # The position of a flag among the options does not matter: flags come after files.
    assert build("--model.num_layers=10", "--config-file", second).model.num_layers == 10


def test_a_flag_equal_to_the_default_still_beats_yaml(yaml_file):
    path = yaml_file("train: {micro_batch_size: 2}\nmodel: {bf16: true}\n")
    cfg = build("--config-file", path, "--train.micro_batch_size=1", "--model.bf16=false")
    assert cfg.train.micro_batch_size == 1 and cfg.model.bf16 is False


def test_flags_apply_in_order_last_wins():
    assert build("--model.num_layers=2", "--model.num_layers=3").model.num_layers == 3
    assert build("--no-model.bf16", "--model.bf16").model.bf16 is True


def test_yaml_and_flags_are_recorded_as_explicit(yaml_file):
    path = yaml_file("optimizer: {lr: 0.01}\n")
    cfg = build("--config-file", path, "--model.num_layers=4")
    assert {"optimizer.lr", "model.num_layers"} <= cfg.explicit_paths
    assert "model.hidden_size" not in cfg.explicit_paths
    assert build().explicit_paths == set()  # the recipe sets nothing explicitly


# ----------------------------------------------------------------------------- explicit protection
def test_explicit_dtype_beats_the_mixed_precision_preset_with_a_warning(caplog):
    cfg = build("--model.params_dtype=fp32", "--mixed_precision=bf16_mixed")
    with caplog.at_level(logging.WARNING):
        final = finalize(cfg, 1)
    assert final.model.params_dtype is torch.float32  # explicit wins
    assert final.model.bf16 is True and final.optimizer.params_dtype is torch.bfloat16  # the rest applies
    message = caplog.text
    assert "--model.params_dtype=torch.float32 (explicit)" in message and "torch.bfloat16" in message


def test_preset_applies_where_nothing_was_set_explicitly():
    final = finalize(build("--mixed_precision=bf16_mixed"), 1)
    assert final.model.params_dtype is torch.bfloat16 and final.ddp.grad_reduce_in_fp32 is True


def test_explicit_value_equal_to_the_old_value_is_still_protected(caplog):
    # model.bf16 is already False: setting it "again" must still beat the preset.
    final = finalize(build("--model.bf16=false", "--mixed_precision=bf16_mixed"), 1)
    assert final.model.bf16 is False


# ----------------------------------------------------------------------------- sections
def test_optional_section_switched_on_then_configured_then_off():
    cfg = build("--peft=lora", "--peft.dim=8", "--peft.target_modules=linear_qkv")
    assert type(cfg.peft) is LoRAConfig and cfg.peft.dim == 8 and cfg.peft.target_modules == ["linear_qkv"]
    cfg = build("--peft=lora", "--peft.dim=8", "--peft=dora")
    assert type(cfg.peft) is DoRAConfig and cfg.peft.dim == 8  # explicit fields carry over
    assert build("--peft=lora", "--peft=null").peft is None
    assert build("--peft=lora", "--peft=none").peft is None


def test_single_kind_sections_switch_on_by_name_or_by_a_field():
    assert build("--ft").ft is not None
    assert build("--straggler=default").straggler.threshold == 1.5
    assert build("--comm_overlap.bucket_size=1000").comm_overlap.bucket_size == 1000
    assert build("--nvrx-straggler.stop-if-detected").nvrx_straggler.stop_if_detected is True


def test_union_sections_switch_kind_and_keep_explicit_fields():
    cfg = build("--model.num_layers=3", "--model=t5", "--model.encoder_num_layers=2")
    assert type(cfg.model) is T5ModelProvider
    assert cfg.model.num_layers == 3 and cfg.model.encoder_num_layers == 2
    assert cfg.model.hidden_size == T5ModelProvider().hidden_size  # the GPT recipe's value is dropped
    assert type(build("--dataset=mock").dataset) is MockGPTDatasetConfig
    assert build("--mixed_precision=fp16_mixed").mixed_precision.fp16 is True


def test_a_section_flag_takes_a_yaml_mapping():
    cfg = build("--peft=lora", "--peft={dim: 8, alpha: 16}")
    assert (cfg.peft.dim, cfg.peft.alpha) == (8, 16) and "peft.alpha" in cfg.explicit_paths
    cfg = build("--peft=dora", "--peft=null", "--peft={dim: 4}")  # fields for an off section: its first kind
    assert type(cfg.peft).__name__ == "LoRAConfig" and cfg.peft.dim == 4
    cfg = build("--model={_target_: megatron_bridge_cli.config.models.t5.T5ModelProvider, num_layers: 2}")
    assert type(cfg.model) is T5ModelProvider and cfg.model.num_layers == 2


@pytest.mark.parametrize("argv, message", [
    (["--peft={dim: [}"], "--peft: the value is not valid YAML"),
    (["--peft.dim=8"], "--peft is off; switch it on first with --peft=lora or --peft=dora"),
    (["--model.encoder_num_layers=2"], "only T5ModelProvider has this field, but --model is GPTModelProvider (gpt); "
                                       "switch first with --model=t5"),
    (["--model=null"], "--model cannot be switched off; choose one of gpt, t5, mamba"),
    (["--peft=lorra"], "--peft: unknown kind 'lorra'; did you mean 'lora' or 'dora'? "
                       "(kinds of --peft: lora, dora, null)"),
    (["--mixed_precision=bf16"], "did you mean 'bf16_mixed'"),
    (["--peft"], "--peft takes one kind name: lora, dora, null"),
])
def test_section_errors(argv, message):
    with pytest.raises(ConfigError) as e:
        build(*argv)
    assert message in str(e.value)


# ----------------------------------------------------------------------------- YAML merging
def test_yaml_switches_sections_and_coerces_strings(yaml_file):
    path = yaml_file("""
        _target_: megatron_bridge_cli.config.container.ConfigContainer
        peft: lora
        model:
          params_dtype: bf16
          activation_func: gelu
          attention_backend: flash
          window_size: [8, 0]
        optimizer: {lr: 1}
        ft: {simulate_fault: true}
        dataset: {data_path: null}
    """)
    cfg = build("--config-file", path)
    assert type(cfg.peft) is LoRAConfig
    assert cfg.model.params_dtype is torch.bfloat16 and cfg.model.activation_func.__name__ == "gelu"
    assert cfg.model.attention_backend.name == "flash" and cfg.model.window_size == (8, 0)
    assert cfg.optimizer.lr == 1
    assert cfg.ft.simulate_fault is True


def test_yaml_target_replaces_a_section(yaml_file):
    path = yaml_file("""
        model:
          _target_: megatron_bridge_cli.config.models.t5.T5ModelProvider
          num_layers: 2
          params_dtype: {_target_: torch.bfloat16, _call_: false}
        peft: null
    """)
    cfg = build("--config-file", path, "--model.hidden_size=64")
    assert type(cfg.model) is T5ModelProvider
    assert (cfg.model.num_layers, cfg.model.hidden_size, cfg.model.params_dtype) == (2, 64, torch.bfloat16)
    assert {"model.num_layers", "model.params_dtype", "model.hidden_size"} <= cfg.explicit_paths


@pytest.mark.parametrize("text, message", [
    ("model: {num_layer: 2}\n", "unknown key 'num_layer' in section 'model'; did you mean 'num_layers'"),
    ("modle: {num_layers: 2}\n", "unknown section 'modle'; did you mean 'model'?"),
    ("model: {num_layers: two}\n", "model.num_layers: invalid value 'two': expected an integer"),
    ("model: {num_layers: null}\n", "expected an integer, not null"),
    ("model: {_target_: os.system}\n", "refused _target_ 'os.system'"),
    ("model: {_target_: megatron_bridge_cli.config.peft.LoRAConfig}\n", "is not a ModelProviderBase"),
    ("model: 3\n", "expected a mapping of fields, a kind name (gpt, t5, mamba) or null"),
    ("- a\n- b\n", "expected a mapping of sections, got list"),
    ("peft: {dim: 4, nope: 1}\n", "unknown key 'nope' in section 'peft'"),
])
def test_yaml_errors_name_the_file(yaml_file, text, message):
    path = yaml_file(text)
    with pytest.raises(ConfigError) as e:
        build("--config-file", path)
    assert message in str(e.value) and path in str(e.value)


def test_empty_yaml_changes_nothing(yaml_file):
    assert build("--config-file", yaml_file("")) == build()


# ----------------------------------------------------------------------------- recipes
def test_python_recipe_file_with_its_own_provider_class(tmp_path):
    """A field added to a config class gets its flag with no other change."""
    (tmp_path / "my_recipes.py").write_text(textwrap.dedent("""
        from dataclasses import dataclass
        from megatron_bridge_cli.config import GPTModelProvider
        from megatron_bridge_cli.recipes import RECIPES

        @dataclass
        class MyProvider(GPTModelProvider):
            my_extra_depth: int = 0
            '''A field only this project has.'''

        def tiny_debug():
            cfg = RECIPES["gpt_cpu_tiny"]()
            cfg.model = MyProvider(num_layers=2, hidden_size=64, num_attention_heads=4)
            return cfg

        def other():
            return None
    """))
    recipe = f"{tmp_path / 'my_recipes.py'}:tiny_debug"
    cfg = build("--recipe", recipe, "--model.my-extra-depth=5", "--model.num_layers=3")
    assert type(cfg.model).__name__ == "MyProvider" and cfg.model.my_extra_depth == 5
    assert cfg.model.num_layers == 3
    with pytest.raises(ConfigError, match="returned NoneType, not a ConfigContainer"):
        build("--recipe", f"{tmp_path / 'my_recipes.py'}:other")
    with pytest.raises(ConfigError, match="name the function as FILE.py:FUNCTION"):
        build("--recipe", str(tmp_path / "my_recipes.py"))
    with pytest.raises(ConfigError, match="has no function 'tiny_debg'; did you mean 'tiny_debug'"):
        build("--recipe", f"{tmp_path / 'my_recipes.py'}:tiny_debg")
