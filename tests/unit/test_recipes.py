"""Every built-in recipe: it builds, takes the per-run keywords, validates at its documented
world size, survives a YAML round trip, and its --dry-run parameter count equals the count of
the megatron-core model actually built from it.

Parameter counts: small models are built whole in memory; big ones are built on PyTorch's meta
device (real megatron-core modules, no storage) with 1 and 2 layers per stack, which gives the
per-layer and fixed (embedding, final norm, output layer) parts exactly:
total = fixed + L x per_layer.
"""

from __future__ import annotations

import contextlib
import copy
import inspect

import pytest
import torch

from megatron_bridge_cli.config import ConfigContainer, T5ModelProvider, finalize
from megatron_bridge_cli.config.models.mamba import mamba_missing_packages
from megatron_bridge_cli.errors import ValidationError
from megatron_bridge_cli.recipes import DEFAULT_RECIPE, RECIPES
from megatron_bridge_cli.training.param_count import count_parameters

MAMBA_READY = not mamba_missing_packages()
FITS_IN_MEMORY = 300_000_000  # build the whole model for real below this many parameters
SHIPPED = [
    "gpt_cpu_tiny", "gpt3_126m", "gpt3_175b", "llama2_7b", "llama3_8b", "llama3_70b",
    "llama31_405b", "mistral_7b", "qwen25_7b", "qwen3_8b", "mixtral_8x7b", "qwen3_30b_a3b", "t5_220m",
    "mamba2_130m",
]


@pytest.fixture(scope="module")
def single_rank(tmp_path_factory):
    """A one-rank gloo group with TP=PP=1 and the CPU compatibility layer, for building models."""
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

    from megatron_bridge_cli.training.cpu_compat import apply_cpu_compat

    apply_cpu_compat()
    own_group = not torch.distributed.is_initialized()
    if own_group:
        store = tmp_path_factory.mktemp("gloo") / "store"
        torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    own_state = not parallel_state.model_parallel_is_initialized()
    if own_state:
        parallel_state.initialize_model_parallel(1, 1)
    model_parallel_cuda_manual_seed(1234)
    yield
    if own_state:
        parallel_state.destroy_model_parallel()
    if own_group:
        torch.distributed.destroy_process_group()


def finalized(name: str):
    """The recipe's container finalized at its documented world size."""
    fn = RECIPES[name]
    return finalize(fn(), fn.documented_world_size)


def built_parameters(model, layers: int | None = None, encoder_layers: int | None = None,
                     meta: bool = True) -> int:
    """Parameters of the megatron-core model built from a copy of the finalized provider
    ``model`` on one rank, optionally with fewer layers. The copy keeps the real run's
    (tensor-parallel dependent) padded vocabulary."""
    p = copy.deepcopy(model)
    padded_vocab = p.padded_vocab_size
    p.tensor_model_parallel_size = p.pipeline_model_parallel_size = p.context_parallel_size = 1
    p.virtual_pipeline_model_parallel_size = None
    p.num_layers_in_first_pipeline_stage = p.num_layers_in_last_pipeline_stage = None
    p.sequence_parallel = False
    p.num_layers = layers or p.num_layers
    if isinstance(p, T5ModelProvider):
        p.encoder_num_layers = encoder_layers or p.encoder_num_layers
    p.perform_initialization = False
    p.use_cpu_initialization = True
    p.init_model_with_meta_device = meta
    p.finalize()
    p.padded_vocab_size = padded_vocab
    with torch.device("meta") if meta else contextlib.nullcontext():
        built = p.provide(pre_process=True, post_process=True)
    return sum(t.numel() for t in built.parameters())


def extrapolated_parameters(model) -> int:
    """fixed + L x per_layer, both measured on meta-device builds with 1 and 2 layers."""
    if isinstance(model, T5ModelProvider):
        one = built_parameters(model, 1, 1)
        enc_layer = built_parameters(model, 1, 2) - one
        dec_layer = built_parameters(model, 2, 1) - one
        fixed = one - enc_layer - dec_layer
        return fixed + model.encoder_num_layers * enc_layer + model.num_layers * dec_layer
    one, two = built_parameters(model, 1), built_parameters(model, 2)
    per_layer = two - one
    return one - per_layer + model.num_layers * per_layer


def test_the_shipped_recipes_are_registered_under_their_names():
    assert sorted(RECIPES) == sorted(SHIPPED)
    assert DEFAULT_RECIPE == "gpt_cpu_tiny"
    for name, fn in RECIPES.items():
        assert fn.__name__ == name
        first_line = (inspect.getdoc(fn) or "").split("\n", 1)[0]
        assert first_line.endswith("."), f"{name}: the first docstring line (--list-recipes) must be a sentence"
        assert isinstance(fn.documented_world_size, int) and fn.documented_world_size >= 1


@pytest.mark.parametrize("name", SHIPPED)
def test_recipe_builds_with_defaults_and_takes_per_run_keywords(name):
    fn = RECIPES[name]
    cfg = fn()
    assert isinstance(cfg, ConfigContainer)
    assert cfg.train.train_iters and cfg.optimizer.lr and cfg.scheduler.lr_decay_style == "cosine"
    params = inspect.signature(fn).parameters
    for keyword in ("tensor_parallel", "global_batch_size", "micro_batch_size", "train_iters", "data_path"):
        assert keyword in params, f"{name} lacks the {keyword}= keyword"
    assert {"seq_length", "encoder_seq_length"} & set(params)
    # The keywords reach the container.
    changed = fn(tensor_parallel=4, global_batch_size=64, micro_batch_size=2, data_path=["/data/x_text_document"])
    assert changed.model.tensor_model_parallel_size == 4
    assert (changed.train.global_batch_size, changed.train.micro_batch_size) == (64, 2)
    assert changed.dataset.data_path == ["/data/x_text_document"]
    if name != "gpt_cpu_tiny":  # the CPU recipe trains in fp32; the real ones in bf16
        assert "precision" in params and cfg.mixed_precision.bf16
        assert fn(precision=None).mixed_precision is None


@pytest.mark.parametrize("name", [n for n in SHIPPED if n != "mamba2_130m" or MAMBA_READY])
def test_recipe_validates_at_its_documented_world_size(name):
    run = finalized(name)
    fn = RECIPES[name]
    mp = run.model.tensor_model_parallel_size * run.model.pipeline_model_parallel_size * run.model.context_parallel_size
    assert run.train.data_parallel_size * mp == fn.documented_world_size
    assert not run.model.sequence_parallel and run.model.fp8 is None  # nothing TE-only by default


@pytest.mark.skipif(MAMBA_READY, reason="mamba-ssm stack is installed here")
def test_mamba_recipe_without_mamba_ssm_fails_validation_with_an_install_hint():
    fn = RECIPES["mamba2_130m"]
    with pytest.raises(ValidationError) as info:
        finalize(fn(), fn.documented_world_size)
    assert len(info.value.problems) == 1, "the mamba packages must be the only problem"
    message = info.value.problems[0]
    assert "mamba_ssm" in message and "transformer_engine" in message and "pip install mamba-ssm" in message


@pytest.mark.parametrize("name", SHIPPED)
def test_recipe_yaml_round_trip_is_identical(name, tmp_path):
    cfg = RECIPES[name]()
    path = tmp_path / f"{name}.yaml"
    cfg.to_yaml(str(path))
    reloaded = ConfigContainer.from_yaml(str(path))
    assert reloaded == cfg
    assert reloaded.to_yaml() == cfg.to_yaml()


@pytest.mark.parametrize("name", [n for n in SHIPPED if n != "mamba2_130m" or MAMBA_READY])
def test_dry_run_parameter_count_equals_the_built_model(name, single_rank):
    if name == "mamba2_130m":
        run = finalize(RECIPES[name](), 1)  # (only reached where mamba-ssm is installed)
    else:
        run = finalized(name)
    counted = count_parameters(run.model).total
    if counted < FITS_IN_MEMORY:
        assert counted == built_parameters(run.model, meta=False)  # the whole model, in memory
    else:
        assert counted == extrapolated_parameters(run.model)


def test_extrapolation_matches_a_whole_model_build(single_rank):
    """The 1-and-2-layer extrapolation is exact: check it where the whole model fits too."""
    for name in ("gpt3_126m", "t5_220m"):
        model = finalized(name).model
        assert extrapolated_parameters(model) == built_parameters(model, meta=False)


def test_user_recipe_extends_a_builtin():
    from megatron_bridge_cli.recipes.llama import llama3_8b

    def my_recipe():
        cfg = llama3_8b(seq_length=4096, data_path=["/data/corpus_text_document"])
        cfg.train.train_iters = 10_000
        cfg.model.num_layers = 16  # a half-depth variant
        return cfg

    run = finalize(my_recipe(), world_size=llama3_8b.documented_world_size)
    assert (run.model.seq_length, run.model.num_layers, run.train.train_iters) == (4096, 16, 10_000)
    assert run.model.num_query_groups == 8 and run.model.rotary_base == 500_000
    assert run.dataset.sample_length == 4096


def test_recipes_return_fresh_containers():
    """Changing one container must not leak into the next call (no shared mutable defaults)."""
    first = RECIPES["llama3_8b"]()
    first.model.num_layers = 1
    first.optimizer.lr = 1.0
    second = RECIPES["llama3_8b"]()
    assert second.model.num_layers == 32 and second.optimizer.lr == 3e-4


def test_uneven_pipeline_split_of_405b():
    """126 layers over 8 stages: 15 on each end stage (which also hold embedding / output
    layer), 16 on each of the 6 middle ones."""
    m = finalized("llama31_405b").model
    first, last, pp = m.num_layers_in_first_pipeline_stage, m.num_layers_in_last_pipeline_stage, m.pipeline_model_parallel_size
    assert (first, last, pp) == (15, 15, 8)
    assert (m.num_layers - first - last) % (pp - 2) == 0 and (m.num_layers - first - last) // (pp - 2) == 16


@pytest.mark.parametrize("name", SHIPPED)
def test_every_recipe_takes_a_short_smoke_run(name, caplog):
    """`--train.train_iters=10` on any recipe finalizes at its documented world size: recipe
    defaults written for a full run (warmup) shrink to fit, with a warning."""
    fn = RECIPES[name]
    cfg = fn()
    cfg.train.train_iters, cfg.train.train_samples = 10, None
    cfg.explicit_paths.add("train.train_iters")
    if name.startswith("mamba") and not MAMBA_READY:
        pytest.skip("the Mamba recipe needs mamba-ssm (validation says so)")
    final = finalize(cfg, fn.documented_world_size)
    assert final.train.total_iters == 10
    assert final.scheduler.lr_warmup_steps < final.scheduler.lr_decay_steps
