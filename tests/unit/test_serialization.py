"""YAML round trip, safe loading, and the errors a user sees for bad files."""

import functools
import signal

import pytest
import torch
import torch.nn.functional as F
import yaml

from megatron_bridge_cli.config import ConfigContainer, DoRAConfig
from megatron_bridge_cli.errors import ConfigError
from tests.factories import full_container, tiny_container


def test_round_trip_is_exact_and_byte_identical(tmp_path):
    cfg = full_container()
    path = tmp_path / "run.yaml"
    text = cfg.to_yaml(str(path))
    assert path.read_text() == text
    loaded = ConfigContainer.from_yaml(str(path))
    assert loaded.to_yaml() == text  # byte-identical
    # the awkward types come back as the same objects, not look-alikes
    assert loaded.model.activation_func is F.silu
    assert loaded.model.params_dtype is torch.bfloat16
    assert loaded.model.window_size == (128, 0) and isinstance(loaded.model.window_size, tuple)
    assert loaded.model.init_method.func is torch.nn.init.normal_ and loaded.model.init_method.keywords["std"] == 0.01
    assert loaded.train.exit_signal is signal.SIGUSR1
    assert isinstance(loaded.peft, DoRAConfig) and loaded.peft.target_modules == ["linear_qkv"]
    assert loaded.profiling.profile_ranks == [0, 1]
    assert loaded.comm_overlap.overlap_grad_reduce is True
    loaded.model.init_method = cfg.model.init_method  # functools.partial has no __eq__
    assert loaded == cfg


def test_round_trip_of_none_sections_and_finalized_container(tmp_path):
    cfg = tiny_container()
    run = cfg.finalize(world_size=1)  # holds megatron-core derived partials (init methods)
    path = tmp_path / "final.yaml"
    run.to_yaml(str(path))
    again = ConfigContainer.from_yaml(str(path))
    assert again.to_yaml() == run.to_yaml()
    assert again.peft is None and again.mixed_precision is None


def test_encoded_forms(tmp_path):
    cfg = full_container()
    data = yaml.safe_load(cfg.to_yaml())
    assert data["_target_"] == "megatron_bridge_cli.config.container.ConfigContainer"
    assert data["model"]["params_dtype"] == {"_target_": "torch.bfloat16", "_call_": False}
    assert data["model"]["activation_func"] == {"_target_": "torch.nn.functional.silu", "_call_": False}
    assert data["train"]["exit_signal"] == {"_target_": "signal.Signals.SIGUSR1", "_call_": False}
    assert data["model"]["init_method"] == {"_target_": "torch.nn.init.normal_", "_partial_": True, "mean": 0.0, "std": 0.01}


def test_print_yaml_matches_to_yaml(capsys):
    cfg = tiny_container()
    cfg.print_yaml()
    assert capsys.readouterr().out == cfg.to_yaml()


def test_python_overrides_survive_round_trip(tmp_path):
    cfg = tiny_container()
    cfg.train.train_iters = 5000
    cfg.model.num_layers = 48
    path = tmp_path / "a.yaml"
    cfg.to_yaml(str(path))
    loaded = ConfigContainer.from_yaml(str(path))
    assert loaded.train.train_iters == 5000 and loaded.model.num_layers == 48


@pytest.mark.parametrize(
    "target",
    ["os.system", "builtins.eval", "subprocess.Popen", "subprocess.run", "torch._C._nn.gelu",
     "megatron_bridge_cli.targets._import_path", "posix.system"],
)
def test_refused_targets_are_not_imported(tmp_path, target):
    import sys

    cfg = tiny_container()
    data = yaml.safe_load(cfg.to_yaml())
    data["model"]["activation_func"] = {"_target_": target, "_call_": False}
    path = tmp_path / "evil.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    module = target.split(".")[0]
    was_loaded = module in sys.modules
    with pytest.raises(ConfigError, match="refused _target_"):
        ConfigContainer.from_yaml(str(path))
    if not was_loaded:
        assert module not in sys.modules  # refused before import


def test_allowed_target_that_is_not_a_config_class_is_not_called(tmp_path):
    cfg = tiny_container()
    data = yaml.safe_load(cfg.to_yaml())
    data["model"]["activation_func"] = {"_target_": "torch.zeros"}  # no _call_: false (torch.save is denied)
    path = tmp_path / "call.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError, match="not a config class"):
        ConfigContainer.from_yaml(str(path))


def test_unknown_key_names_section_and_suggests(tmp_path):
    cfg = tiny_container()
    data = yaml.safe_load(cfg.to_yaml())
    data["model"]["num_layer"] = 4
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError) as err:
        ConfigContainer.from_yaml(str(path))
    message = str(err.value)
    assert "'num_layer'" in message and "section 'model'" in message and "did you mean 'num_layers'" in message
    assert str(path) in message


def test_unknown_section_suggests(tmp_path):
    data = yaml.safe_load(tiny_container().to_yaml())
    data["optimiser"] = data.pop("optimizer")
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError, match="did you mean 'optimizer'"):
        ConfigContainer.from_yaml(str(path))


def test_missing_and_malformed_files_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml.*does not exist"):
        ConfigContainer.from_yaml(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  num_layers: [1, 2\ntrain: {}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*not valid YAML at line \d+"):
        ConfigContainer.from_yaml(str(bad))
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        ConfigContainer.from_yaml(str(scalar))


def test_float_written_without_dot_is_read_as_float(tmp_path):
    data = yaml.safe_load(tiny_container().to_yaml())
    data["optimizer"]["lr"] = "3e-4"  # what a hand-written `lr: 3e-4` loads as under YAML 1.1
    path = tmp_path / "lr.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert ConfigContainer.from_yaml(str(path)).optimizer.lr == 3e-4


def test_unsaveable_value_is_a_clear_error():
    cfg = tiny_container()
    cfg.model.activation_func = lambda x: x
    with pytest.raises(ConfigError, match="model.activation_func"):
        cfg.to_yaml()


def test_write_is_atomic(tmp_path):
    """A failed save leaves the previous file intact and no temporary behind."""
    path = tmp_path / "run.yaml"
    cfg = tiny_container()
    cfg.to_yaml(str(path))
    before = path.read_text()
    cfg.model.activation_func = functools.partial(lambda x: x)
    with pytest.raises(ConfigError):
        cfg.to_yaml(str(path))
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["run.yaml"]
