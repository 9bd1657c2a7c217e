"""Mixture of experts: validation names the flags, the GPT provider builds megatron-core's MoE
layer, --dry-run counts total/active/per-GPU parameters, the log line carries the router loss."""

from __future__ import annotations

import logging

import pytest
import torch

from megatron_bridge_cli.config import finalize
from megatron_bridge_cli.config.models.moe import grouped_gemm_backend
from megatron_bridge_cli.errors import ValidationError
from megatron_bridge_cli.training.metrics import training_log_line
from megatron_bridge_cli.training.moe_losses import moe_loss_names
from megatron_bridge_cli.training.param_count import count_parameters
from tests.factories import tiny_container
from tests.parallel import single_rank_parallel_state

NO_GROUPED_GEMM = grouped_gemm_backend(uses_transformer_engine=False) is None and not torch.cuda.is_available()
MOE = dict(num_moe_experts=4, moe_router_topk=2, moe_ffn_hidden_size=32, add_bias_linear=False)


def moe_container(explicit: bool = True, **model):
    """tiny_container (2 layers, hidden 64, 4 heads) with an MoE MLP; fields set as flags would."""
    cfg = tiny_container()
    for name, value in {**MOE, **model}.items():
        setattr(cfg.model, name, value)
        if explicit:
            cfg.explicit_paths.add(f"model.{name}")
    return cfg


def problems(cfg, world_size: int) -> list[str]:
    with pytest.raises(ValidationError) as info:
        finalize(cfg, world_size)
    return info.value.problems


# ----------------------------------------------------------------------------- validation
def test_expert_parallel_layout_arithmetic():
    run = finalize(moe_container(expert_model_parallel_size=2, pipeline_model_parallel_size=2), 4)
    # EP does not change DP (world / (TP x PP x CP)); it splits the experts inside it.
    assert run.train.data_parallel_size == 2 and run.train.num_microbatches == 2
    found = problems(moe_container(expert_model_parallel_size=2, pipeline_model_parallel_size=2), 2)
    assert len(found) == 1 and "world size (2) is not divisible by --model.expert_tensor_parallel_size (1" in found[0]
    assert "--model.expert_model_parallel_size (2) x --model.pipeline_model_parallel_size (2) = 4" in found[0]


@pytest.mark.parametrize("model, expected", [
    (dict(num_moe_experts=None, moe_ffn_hidden_size=None, expert_model_parallel_size=2),
     "--model.expert_model_parallel_size (2) needs --model.num_moe_experts"),
    (dict(num_moe_experts=3, expert_model_parallel_size=2),
     "--model.num_moe_experts (3) is not divisible by --model.expert_model_parallel_size (2)"),
    (dict(moe_router_topk=5), "--model.moe_router_topk (5) must be between 1 and --model.num_moe_experts (4)"),
    (dict(tensor_model_parallel_size=2), "--model.tensor_model_parallel_size (2) with MoE layers needs "
                                         "--model.sequence_parallel=true"),
    (dict(moe_shared_expert_intermediate_size=64, add_bias_linear=True),
     "--model.moe_shared_expert_intermediate_size needs --model.add_bias_linear=false"),
], ids=["ep-without-experts", "experts-not-divisible", "topk", "tp-without-sp", "shared-expert-bias"])
def test_moe_problems_name_the_flag(model, expected):
    found = problems(moe_container(**model), 2)
    assert any(expected in p for p in found), found


@pytest.mark.skipif(torch.cuda.is_available(), reason="gloo is the default backend only without CUDA")
def test_flex_dispatcher_is_refused_over_gloo_with_the_one_that_works():
    found = problems(moe_container(expert_model_parallel_size=2, moe_token_dispatcher_type="flex"), 2)
    assert len(found) == 1
    assert "--model.moe_token_dispatcher_type=flex runs only on CUDA GPUs over NCCL, not gloo" in found[0]
    assert "use --model.moe_token_dispatcher_type=alltoall (or allgather)" in found[0]
    for dispatcher in ("alltoall", "allgather"):  # both run over gloo (tests/integration/test_training_moe.py)
        finalize(moe_container(expert_model_parallel_size=2, moe_token_dispatcher_type=dispatcher), 2)


@pytest.mark.skipif(not NO_GROUPED_GEMM, reason="a grouped-GEMM implementation is installed here")
def test_grouped_gemm_falls_back_unless_set_explicitly(caplog):
    from_recipe = moe_container(explicit=False, moe_grouped_gemm=True)
    with caplog.at_level(logging.WARNING):
        run = finalize(from_recipe, 1)
    assert run.model.moe_grouped_gemm is False and "using SequentialMLP" in caplog.text
    assert from_recipe.model.moe_grouped_gemm is True  # the user's container keeps its value
    found = problems(moe_container(moe_grouped_gemm=True), 1)
    assert len(found) == 1 and found[0].startswith("--model.moe_grouped_gemm needs Transformer Engine or grouped_gemm")
    assert "--model.moe_grouped_gemm=false" in found[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without Transformer Engine")
def test_te_only_moe_kernels_are_refused_without_te():
    found = problems(moe_container(moe_permute_fusion=True, moe_router_fusion=True), 1)
    assert any(p.startswith("--model.moe_permute_fusion is a Transformer Engine kernel") for p in found)
    assert any(p.startswith("--model.moe_router_fusion is a Transformer Engine kernel") for p in found)


def test_dense_models_are_untouched():
    assert finalize(tiny_container(), 2).model.num_moe_experts is None


# ----------------------------------------------------------------------------- the model
def test_provider_builds_megatron_core_moe_layers_that_train_on_cpu():
    from megatron.core.transformer.moe.experts import SequentialMLP
    from megatron.core.transformer.moe.moe_layer import MoELayer

    provider = finalize(moe_container(moe_shared_expert_intermediate_size=48, moe_aux_loss_coeff=0.01), 1).model
    with single_rank_parallel_state():
        model = provider.provide()
        mlp = model.decoder.layers[0].mlp
        assert isinstance(mlp, MoELayer) and isinstance(mlp.experts, SequentialMLP)
        assert len(mlp.experts.local_experts) == 4 and mlp.shared_experts is not None
        tokens = torch.randint(0, 128, (2, 32), generator=torch.Generator().manual_seed(0))
        positions = torch.arange(32).expand(2, 32)
        loss = model(tokens, positions, None, labels=tokens)  # the router runs without TE
        loss.mean().backward()
        experts = [p.grad for p in mlp.experts.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in experts)
        assert mlp.router.weight.grad is not None and mlp.router.weight.grad.abs().sum() > 0


def test_total_and_active_parameters_equal_the_built_model():
    provider = finalize(moe_container(moe_shared_expert_intermediate_size=48), 1).model
    count = count_parameters(provider)
    with single_rank_parallel_state():
        model = provider.provide()
        total = sum(p.numel() for p in model.parameters())
        routed = sum(p.numel() for layer in model.decoder.layers for p in layer.mlp.experts.parameters())
    assert count.total == total and count.routed_experts == routed
    assert count.active == total - routed // 2  # top-2 of 4 experts: a token skips half of them
    assert count.per_gpu_max == total and count.per_gpu_experts == routed  # one GPU holds everything


@pytest.mark.parametrize("freq, kinds", [(2, ["MoELayer", "MLP"]), ([0, 1], ["MLP", "MoELayer"])])
def test_moe_layer_freq_mixes_dense_and_moe_layers(freq, kinds):
    """DeepSeek-style first dense layers: megatron-core's decoder block spec follows moe_layer_freq."""
    provider = finalize(moe_container(moe_layer_freq=freq), 1).model
    count = count_parameters(provider)
    with single_rank_parallel_state():
        model = provider.provide()
        assert [type(layer.mlp).__name__ for layer in model.decoder.layers] == kinds
        assert count.total == sum(p.numel() for p in model.parameters())
        assert count.routed_experts == sum(p.numel() for p in model.decoder.layers[kinds.index("MoELayer")].mlp.experts.parameters())


def test_per_gpu_count_divides_the_experts_by_ep():
    run = finalize(moe_container(expert_model_parallel_size=2), 2)
    one = count_parameters(finalize(moe_container(), 2).model)
    two = count_parameters(run.model)
    assert two.total == one.total and two.active == one.active
    assert two.per_gpu_experts == one.routed_experts // 2
    assert two.per_gpu_max == one.total - one.routed_experts // 2


def test_dry_run_reports_active_parameters_and_the_expert_layout(capsys):
    from megatron_bridge_cli.cli.main import main

    rc = main(["--dry-run", "--world-size", "2", "--train.global_batch_size=8", "--train.micro_batch_size=2",
               "--tokenizer.tokenizer_type=ByteLevelTokenizer", "--model.num_moe_experts=4",
               "--model.moe_router_topk=2", "--model.expert_model_parallel_size=2"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "MoE 4 experts of ffn 512, top 2, allgather dispatcher" in out
    assert "experts: EP 2 x ETP 1 x PP 1 x expert-DP 1, 2 of 4 experts of each layer per GPU" in out
    assert "active parameters per token: " in out and "(top 2 of 4 routed experts per MoE layer" in out
    assert "(largest TP/PP/EP shard; " in out and "; routed experts 8 B/param" in out


def test_memory_estimate_shards_expert_optimizer_state_over_expert_dp():
    from megatron_bridge_cli.cli.memory import estimate_memory

    run = finalize(moe_container(expert_model_parallel_size=2), 2)
    run.optimizer.use_distributed_optimizer = True
    # fp32 Adam: 8 B/param of state; dense part over DP 2, experts over expert-DP 1
    assert estimate_memory(run, 1000, 400, expert_data_parallel_size=1).optimizer == 600 * 4 + 400 * 8


# ----------------------------------------------------------------------------- logging
def test_router_losses_follow_the_lm_loss_in_the_log_line():
    line = training_log_line(
        iteration=3, total_iters=10, consumed=24, iter_ms=1.0, tokens_per_s=None, tflops_per_gpu=None, lr=1e-3,
        global_batch=8, loss=2.5, aux_losses={"load_balancing_loss": 1.0031, "z_loss": 0.5}, loss_scale=1.0,
        grad_norm=0.5, skipped=0, nan=0,
    )
    assert "| lm loss: 2.500000E+00 | load_balancing_loss: 1.003100E+00 | z_loss: 5.000000E-01 | loss scale:" in line


def test_tracked_router_losses_are_those_with_a_coefficient():
    model = moe_container().model
    assert moe_loss_names(model) == []  # megatron-core's default coefficient is 0: no loss computed
    model.moe_aux_loss_coeff, model.moe_z_loss_coeff = 0.01, 1e-3
    assert moe_loss_names(model) == ["load_balancing_loss", "z_loss"]
    model.moe_router_load_balancing_type, model.moe_aux_loss_coeff = ["seq_aux_loss", "aux_loss"], [0.1, 0.0]
    assert moe_loss_names(model) == ["seq_load_balancing_loss", "z_loss"]
    assert moe_loss_names(tiny_container().model) == []
