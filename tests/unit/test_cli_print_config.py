"""--print-config prints YAML that, fed back with --recipe or --config-file, gives the same container."""

from __future__ import annotations

import pytest

from megatron_bridge_cli.cli.parser import parse_command_line
from megatron_bridge_cli.cli.layering import resolve
from megatron_bridge_cli.cli.main import main
from megatron_bridge_cli.recipes import RECIPES

FLAGS = [
    "--peft=dora", "--peft.dim=4", "--model.params_dtype=bf16", "--model.activation_func=gelu",
    "--mixed_precision=bf16_mixed", "--model.window_size=4,0", "--model.attention_backend=flash",
    "--train.exit_signal=SIGINT", "--dataset.data_path=a,b", "--model.moe_layer_freq=1,0",
    "--model.cuda_graph_scope=attn", "--profiling=nsys", "--scheduler.lr_decay_style=WSD",
]


def build(*argv: str):
    g, options = parse_command_line(list(argv))
    return resolve(g.recipe, g.config_files, options)


def printed(capsys, *argv: str) -> str:
    assert main(["--print-config", *argv]) == 0
    out, err = capsys.readouterr()
    return out


def test_round_trip_via_recipe_and_via_config_file(tmp_path, capsys):
    original = build(*FLAGS)
    text = printed(capsys, *FLAGS)
    path = tmp_path / "resolved.yaml"
    path.write_text(text)
    via_recipe = build("--recipe", str(path))
    via_config_file = build("--config-file", str(path))
    assert via_recipe == original
    assert via_config_file == original
    assert type(via_recipe.peft).__name__ == "DoRAConfig" and via_recipe.model.window_size == (4, 0)
    # And printing it again gives the same text: the format is a fixed point.
    assert printed(capsys, "--recipe", str(path)) == text
    assert printed(capsys, "--config-file", str(path)) == text


def test_printed_file_plus_flags_layers_as_usual(tmp_path, capsys):
    path = tmp_path / "resolved.yaml"
    path.write_text(printed(capsys, "--model.num_layers=3"))
    assert build("--recipe", str(path), "--model.hidden_size=64").model.num_layers == 3
    assert build("--config-file", str(path), "--model.num_layers=5").model.num_layers == 5


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_every_recipe_round_trips(recipe, tmp_path, capsys):
    path = tmp_path / f"{recipe}.yaml"
    path.write_text(printed(capsys, "--recipe", recipe))
    assert build("--recipe", str(path)) == build("--recipe", recipe)


def test_print_config_is_yaml_only(capsys):
    import yaml

    data = yaml.safe_load(printed(capsys))
    assert data["model"]["_target_"].endswith("GPTModelProvider") and data["peft"] is None


@pytest.mark.parametrize("flags", [
    ["--mixed_precision=bf16_mixed"],  # the preset sets model.bf16: a dump must not block that
    ["--mixed_precision=bf16_mixed", "--model.params_dtype=fp32"],  # an explicit value beats it
])
def test_round_trip_reproduces_the_finalized_run(flags, tmp_path, capsys):
    from megatron_bridge_cli.config import finalize

    original = build(*flags)
    path = tmp_path / "resolved.yaml"
    path.write_text(printed(capsys, *flags))
    expected = finalize(original, 1)
    for layer in (["--recipe", str(path)], ["--config-file", str(path)]):
        again = build(*layer)
        assert again == original and again.explicit_paths == original.explicit_paths
        final = finalize(again, 1)
        assert final.to_yaml() == expected.to_yaml()  # (partials compare by identity; their YAML does not)
    assert expected.model.bf16 is True
    assert expected.model.params_dtype == (original.model.params_dtype if len(flags) > 1 else
                                           original.mixed_precision.params_dtype)


def test_explicit_list_must_be_paths(tmp_path):
    from megatron_bridge_cli.errors import ConfigError

    path = tmp_path / "bad.yaml"
    path.write_text("_explicit_: model.bf16\n")
    with pytest.raises(ConfigError, match="_explicit_ must be a list of dotted paths"):
        build("--config-file", str(path))


def test_a_to_yaml_snapshot_without_the_list_sets_nothing_explicit(tmp_path):
    from megatron_bridge_cli.config import finalize

    path = tmp_path / "saved.yaml"
    path.write_text(build("--mixed_precision=bf16_mixed").to_yaml())  # e.g. the config a checkpoint keeps
    cfg = build("--config-file", str(path))
    assert cfg.explicit_paths == set()
    assert finalize(cfg, 1).model.bf16 is True
