"""Every value-syntax rule of the command line, through the real flags of the default recipe."""

from __future__ import annotations

import signal
from typing import Any, Callable, Dict, List, Literal, Optional, Tuple, Union

import pytest
import torch
import torch.nn.functional as F

from megatron_bridge_cli import typeinfo, values
from megatron_bridge_cli.cli.parser import parse_command_line
from megatron_bridge_cli.cli.flags import build_table
from megatron_bridge_cli.cli.layering import resolve
from megatron_bridge_cli.errors import ConfigError


def flags(*argv: str):
    """The container the default recipe plus these flags resolve to."""
    g, options = parse_command_line(list(argv))
    return resolve(g.recipe, g.config_files, options)


def value(path: str, *argv: str):
    obj = flags(*argv)
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize("argv, path, expected", [
    # int, float, str: '=' or a separate token, hyphens anywhere in the name
    (["--model.num_layers=8"], "model.num_layers", 8),
    (["--model.num_layers", "8"], "model.num_layers", 8),
    (["--model.num-layers=8"], "model.num_layers", 8),
    (["--train.train_iters=1e3"], "train.train_iters", 1000),
    (["--optimizer.lr=3e-4"], "optimizer.lr", 3e-4),
    (["--optimizer.lr", "1"], "optimizer.lr", 1.0),
    (["--scheduler.lr_warmup_init=-0.5"], "scheduler.lr_warmup_init", -0.5),
    (["--checkpoint.most_recent_k", "-1"], "checkpoint.most_recent_k", -1),
    (["--checkpoint.save=/tmp/run 1"], "checkpoint.save", "/tmp/run 1"),
    # bool
    (["--model.bf16"], "model.bf16", True),
    (["--model.bf16=true"], "model.bf16", True),
    (["--model.bf16=1"], "model.bf16", True),
    (["--model.bf16=yes"], "model.bf16", True),
    (["--model.bf16", "True"], "model.bf16", True),
    (["--model.bf16", "--model.bf16=false"], "model.bf16", False),
    (["--model.bf16", "--model.bf16=0"], "model.bf16", False),
    (["--model.bf16", "--model.bf16=no"], "model.bf16", False),
    (["--model.bf16", "--no-model.bf16"], "model.bf16", False),
    (["--no-model.add-bias-linear"], "model.add_bias_linear", False),
    (["--no-logger.log_throughput"], "logger.log_throughput", False),
    # Optional: null, None, ~, and 'none' where it is not a value itself
    (["--train.eval_interval=null"], "train.eval_interval", None),
    (["--train.eval_interval=None"], "train.eval_interval", None),
    (["--train.eval_interval=~"], "train.eval_interval", None),
    (["--train.eval_interval=none"], "train.eval_interval", None),
    (["--model.pipeline_dtype=null"], "model.pipeline_dtype", None),  # `dtype = None` default
    # lists: comma, several tokens, YAML flow, empty
    (["--dataset.data_path=a,b"], "dataset.data_path", ["a", "b"]),
    (["--dataset.data_path", "a", "b"], "dataset.data_path", ["a", "b"]),
    (["--dataset.data_path=[a, b]"], "dataset.data_path", ["a", "b"]),
    (["--dataset.data_path=[]"], "dataset.data_path", []),
    (["--profiling=pytorch", "--profiling.profile_ranks=0,3"], "profiling.profile_ranks", [0, 3]),
    (["--profiling=pytorch", "--profiling.profile_ranks", "1", "2"], "profiling.profile_ranks", [1, 2]),
    (["--model.recompute_modules=core_attn,mlp"], "model.recompute_modules", ["core_attn", "mlp"]),
    # dtypes
    (["--model.params_dtype=bf16"], "model.params_dtype", torch.bfloat16),
    (["--model.params_dtype=bfloat16"], "model.params_dtype", torch.bfloat16),
    (["--model.params_dtype=torch.bfloat16"], "model.params_dtype", torch.bfloat16),
    (["--model.params_dtype=fp16"], "model.params_dtype", torch.float16),
    (["--optimizer.main_grads_dtype=fp32"], "optimizer.main_grads_dtype", torch.float32),
    (["--model.params_dtype={_target_: torch.bfloat16, _call_: false}"], "model.params_dtype", torch.bfloat16),
    # callables: short name or allow-listed import path
    (["--model.activation_func=gelu"], "model.activation_func", F.gelu),
    (["--model.activation_func=torch.nn.functional.silu"], "model.activation_func", F.silu),
    (["--model.init_method=null"], "model.init_method", None),
    # enums by member name; Literal choices
    (["--model.attention_backend=flash"], "model.attention_backend", "AttnBackend.flash"),
    (["--model.attention_backend=UNFUSED"], "model.attention_backend", "AttnBackend.unfused"),
    (["--train.exit_signal=SIGINT"], "train.exit_signal", signal.SIGINT),
    (["--scheduler.lr_decay_style=WSD"], "scheduler.lr_decay_style", "WSD"),
    (["--logger.timing_log_level=2"], "logger.timing_log_level", 2),
    (["--model.position_embedding_type=none"], "model.position_embedding_type", "none"),
    # megatron-core unions
    (["--model.moe_layer_freq=2"], "model.moe_layer_freq", 2),
    (["--model.moe_layer_freq=1,0,1"], "model.moe_layer_freq", [1, 0, 1]),
    (["--model.moe_layer_freq", "1", "0"], "model.moe_layer_freq", [1, 0]),
    (["--model.moe_layer_freq=[1]"], "model.moe_layer_freq", [1]),
    (["--model.window_size=128,0"], "model.window_size", (128, 0)),
    (["--model.window_size=[4, 4]"], "model.window_size", (4, 4)),
    (["--model.moe_router_load_balancing_type=seq_aux_loss"], "model.moe_router_load_balancing_type", "seq_aux_loss"),
    (["--model.moe_router_load_balancing_type=aux_loss,seq_aux_loss"], "model.moe_router_load_balancing_type",
     ["aux_loss", "seq_aux_loss"]),
    (["--model.moe_aux_loss_coeff=0.01"], "model.moe_aux_loss_coeff", 0.01),
    (["--model.moe_aux_loss_coeff=0.01,0.02"], "model.moe_aux_loss_coeff", [0.01, 0.02]),
    (["--model.cp_comm_type=a2a"], "model.cp_comm_type", "a2a"),
    (["--model.cuda_graph_scope=full"], "model.cuda_graph_scope", "full"),
    (["--model.cuda_graph_scope=attn"], "model.cuda_graph_scope", "CudaGraphScope.attn"),
    (["--model.cuda_graph_scope=attn,mlp"], "model.cuda_graph_scope", ["CudaGraphScope.attn", "CudaGraphScope.mlp"]),
    (["--model.pipeline_model_parallel_layout=Et|tL"], "model.pipeline_model_parallel_layout", "Et|tL"),
    (["--model.window_attn_skip_freq=4"], "model.window_attn_skip_freq", 4),
    (["--model.quant_recipe=null"], "model.quant_recipe", None),
    (["--model.hierarchical_context_parallel_sizes=2,2"], "model.hierarchical_context_parallel_sizes", [2, 2]),
])
def test_flag_value_syntax(argv, path, expected):
    got = value(path, *argv)
    if isinstance(expected, str) and expected.startswith(("AttnBackend.", "CudaGraphScope.")):
        assert str(got).endswith(expected) and type(got).__name__ == expected.split(".")[0]
    elif isinstance(expected, list) and expected and str(expected[0]).startswith("CudaGraphScope."):
        assert [str(g) for g in got] == expected
    else:
        assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("token, hint, expected", [
    ("{a: 1, b: [x, y]}", Dict[str, Any], {"a": 1, "b": ["x", "y"]}),
    ("{lr: 0.1}", dict, {"lr": 0.1}),
    ("{n: 3}", Dict[str, int], {"n": 3}),
    ("1,2", Tuple[int, ...], (1, 2)),
    ("squared_relu", Callable, "squared_relu"),
    ("math.sqrt", Optional[Callable], "sqrt"),
    ("e4m3", Optional[Literal["e4m3", "hybrid"]], "e4m3"),
    ("0.5", Union[float, List[float]], 0.5),
])
def test_rules_without_a_current_field(token, hint, expected):
    got = values.from_text([token], hint)
    assert (got.__name__ == expected) if callable(got) else got == expected


@pytest.mark.parametrize("token, hint, message", [
    ("abc", int, "an integer"),
    ("1.5", int, "an integer"),
    ("x", float, "a number"),
    ("maybe", bool, "true or false"),
    ("bogus", torch.dtype, "a dtype"),
    ("no_such_fn", Callable, "a function name"),
    ("os.system", Callable, "refused _target_ 'os.system'"),
    ("z", Literal["a", "b"], "one of: a, b"),
    ("1,2,3", Tuple[int, int], "2 comma-separated values"),
    ("null", int, "an integer"),
    ("x", Union[int, List[int]], "an integer or a list of INT"),
    ("[1", List[int], "valid YAML flow syntax"),
    ("[a]", Dict[str, int], "a YAML mapping"),
    ("{a: b}", Dict[str, int], "an integer"),
])
def test_bad_values_say_what_was_expected(token, hint, message):
    with pytest.raises(values.CoercionError) as e:
        values.from_text([token], hint)
    assert message in e.value.expected


def test_yaml_values_take_the_same_rules():
    # Strings from YAML go through the text rules; typed values are checked, not guessed.
    assert values.conform("bf16", torch.dtype) is torch.bfloat16
    assert values.conform(3, float) == 3  # an int is a float (numeric tower); kept as written
    assert values.conform([1, "2"], List[int]) == [1, 2]
    assert values.conform("silu", Callable) is F.silu
    assert values.conform({"_target_": "torch.nn.functional.gelu", "_call_": False}, Callable) is F.gelu
    assert values.conform("full", Union[str, List[str]]) == "full"  # a str stays a str
    assert values.conform(None, Optional[int]) is None
    for bad, hint in ((True, int), ("x", int), (None, int), ([1], int), ({"a": 1}, List[int])):
        with pytest.raises(values.CoercionError):
            values.conform(bad, hint)


def test_every_field_has_a_rule_that_accepts_its_default():
    """Every generated flag's type has a rule, a name for --help and an error phrase, and the
    rule accepts the field's current value (so no megatron-core type falls through)."""
    from megatron_bridge_cli.cli.flags import kind_class

    table = build_table()
    checked = 0
    for section in table.sections.values():
        instances = [f() for _, f in section.kinds] or [section.declared()]
        for obj in instances:
            hints = __import__("typing").get_type_hints(type(obj))
            for flag in table.section_flags(section.path):
                if not hasattr(obj, flag.name) or flag.name not in hints:
                    continue
                hint = hints[flag.name]
                assert typeinfo.type_name(hint) and typeinfo.expected(hint)
                current = getattr(obj, flag.name)
                nullable = current is None
                assert values.conform(current, hint, nullable) == current, flag.path
                checked += 1
        assert all(kind_class(f) for _, f in section.kinds)
    assert checked > 600


def test_type_names_for_help():
    assert typeinfo.type_name(Optional[int]) == "INT|null"
    assert typeinfo.type_name(Literal["a", "b"]) == "{a,b}"
    assert typeinfo.type_name(Union[int, List[int]]) == "INT|LIST[INT]"
    assert typeinfo.type_name(Optional[Tuple[int, int]]) == "TUPLE[INT,INT]|null"
    assert typeinfo.type_name(torch.dtype) == "DTYPE"
    assert typeinfo.type_name(Optional[Callable]) == "CALLABLE|null"


@pytest.mark.parametrize("argv, message", [
    (["--model.num_layers=abc"], "--model.num_layers: invalid value 'abc': expected an integer"),
    (["--scheduler.lr_decay_style=cos"], "one of: constant, linear, cosine, inverse-square-root, WSD"),
    (["--model.attention_backend=fastest"], "one of: flash, fused, unfused, local, auto"),
    (["--model.activation_func=os.system"], "refused _target_ 'os.system'"),
    (["--model.window_size=1,2,3"], "2 comma-separated values"),
    (["--model.num_layers", "1", "2"], "takes one value, got 2"),
    (["--model.num_layers"], "--model.num_layers takes one value, got none (INT)"),
    (["--no-model.bf16=true"], "takes no value"),
    (["--model.quant_recipe=foo"], "_target_: ...}' mapping giving a RecipeConfig"),
])
def test_bad_flag_values(argv, message):
    with pytest.raises(ConfigError) as e:
        flags(*argv)
    assert message in str(e.value)


def test_none_switches_off_an_optional_path():
    """--checkpoint.save=none means no saving, not a folder named 'none' (any spelling of null)."""
    from typing import Optional

    from megatron_bridge_cli.values import from_text

    for word in ("none", "None", "NONE", "null", "~"):
        assert from_text([word], Optional[str]) is None
    assert from_text(["none"], str) == "none"  # a required string keeps the word
