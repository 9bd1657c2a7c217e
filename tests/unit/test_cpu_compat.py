"""The CPU compatibility layer against real megatron-core (gloo, one process, no mocks)."""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from megatron_bridge_cli.training.cpu_compat import apply_cpu_compat, cpu_compat_active

pytestmark = pytest.mark.skipif(
    torch.cuda.is_available(), reason="the CPU compatibility layer is inert when CUDA exists"
)

SEQ, VOCAB, BATCH = 32, 128, 2


@pytest.fixture
def megatron_single_process() -> Iterator[None]:
    """A one-rank gloo world with TP=PP=1 and seeded model-parallel RNG; torn down after."""
    from tests.parallel import single_rank_parallel_state

    assert apply_cpu_compat()
    with single_rank_parallel_state(seed=1234):
        yield


def _tiny_gpt(**config_overrides):
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.transformer import TransformerConfig

    config = TransformerConfig(
        num_layers=2, hidden_size=64, num_attention_heads=4, hidden_dropout=0.0,
        attention_dropout=0.0, **config_overrides,
    )
    model = GPTModel(
        config=config, transformer_layer_spec=get_gpt_layer_local_spec(),
        vocab_size=VOCAB, max_sequence_length=SEQ,
    )
    return config, model


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    tokens = torch.randint(0, VOCAB, (BATCH, SEQ), generator=torch.Generator().manual_seed(0))
    labels = torch.roll(tokens, shifts=-1, dims=1)
    position_ids = torch.arange(SEQ).unsqueeze(0).expand(BATCH, SEQ)
    return tokens, labels, position_ids


def test_apply_is_idempotent_and_active_without_cuda() -> None:
    assert apply_cpu_compat() is True
    assert apply_cpu_compat() is True
    assert cpu_compat_active()
    modes = torch.overrides._get_current_function_mode_stack()
    assert sum(type(m).__name__ == "_CudaAsCpuMode" for m in modes) == 1
    assert torch.cuda.current_device() == 0
    torch.cuda.synchronize()  # a no-op instead of "Torch not compiled with CUDA enabled"
    torch.cuda.set_device(0)
    assert not torch.cuda.is_available()  # callers can still tell they run on CPU


def test_apply_before_importing_megatron_models() -> None:
    """Fresh interpreter, layer first: torch._dynamo (imported by megatron.core.models.gpt)
    indexes torch.cuda attributes by identity and refuses one stand-in under two names."""
    code = (
        "from megatron_bridge_cli.training.cpu_compat import apply_cpu_compat\n"
        "assert apply_cpu_compat()\n"
        "import megatron.core.models.gpt\n"
    )
    repo_root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([repo_root, os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code], env=env, capture_output=True, text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("device", ["cuda", "cuda:0", torch.device("cuda"), 0])
def test_cuda_devices_become_cpu(device) -> None:
    apply_cpu_compat()
    assert torch.zeros(2, device=device).device.type == "cpu"
    assert torch.ones(2).to(device).device.type == "cpu"
    assert torch.ones(2).to(device=device, dtype=torch.float64).dtype == torch.float64


def test_tensor_methods_report_cuda() -> None:
    apply_cpu_compat()
    t = torch.ones(3)
    assert t.cuda() is t
    assert t.pin_memory() is t
    assert torch.empty(3, pin_memory=True).device.type == "cpu"
    assert t.type() == "torch.cuda.FloatTensor"  # what clip_grads/optimizers assert
    assert torch.ones(1, dtype=torch.bfloat16).type() == "torch.cuda.BFloat16Tensor"
    assert t.type(torch.float64).dtype == torch.float64  # conversions are untouched
    assert t.to(torch.int32).dtype == torch.int32
    assert torch.nn.Linear(2, 2).cuda().weight.device.type == "cpu"


def test_a_new_thread_must_apply_again() -> None:
    """The torch-function mode stack is per thread (documented limitation)."""
    apply_cpu_compat()
    seen: list[object] = []

    def worker() -> None:
        try:
            torch.zeros(1, device="cuda")
            seen.append("no error")
        except (AssertionError, RuntimeError):
            seen.append("error")
        apply_cpu_compat()
        seen.append(torch.zeros(1, device="cuda").device.type)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == ["error", "cpu"]


def test_streams_and_events_are_synchronous_stand_ins() -> None:
    """megatron-core's MoE alltoall dispatcher makes a side stream and waits on an event."""
    apply_cpu_compat()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        moved = torch.ones(2, device="cuda").to(torch.device("cpu"), non_blocking=True)
    event = side.record_event()
    event.synchronize()
    assert event.query() and moved.tolist() == [1.0, 1.0]
    assert torch.cuda.current_stream() is torch.cuda.default_stream() and isinstance(torch.cuda.Event(), object)


class _AllocatesOnTheDeviceInBackward(torch.autograd.Function):
    """Like megatron-core's tensor_parallel.mappings._AllToAll, whose backward allocates on
    torch.cuda.current_device()."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x * 2

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        out = grad.new_empty(size=list(grad.shape), dtype=grad.dtype, device=torch.cuda.current_device())
        return out.copy_(grad) * 2


@pytest.mark.parametrize("how", ["tensor.backward", "autograd.backward", "with grad_tensors"])
def test_backward_passes_run_inside_the_layer(how) -> None:
    """torch pops a mode while its __torch_function__ runs; backward() must not leave it."""
    apply_cpu_compat()
    x = torch.ones(3, requires_grad=True)
    out = _AllocatesOnTheDeviceInBackward.apply(x)
    if how == "tensor.backward":
        out.sum().backward()
    elif how == "autograd.backward":
        torch.autograd.backward(out.sum())
    else:
        torch.autograd.backward(out, grad_tensors=torch.full((3,), 0.5))
    assert x.grad.tolist() == ([1.0] * 3 if how == "with grad_tensors" else [2.0] * 3)


def test_moe_split_sizes_come_back_as_numpy() -> None:
    """The alltoall dispatcher hands its host copies to all_to_all_single(output_split_sizes=...)."""
    from megatron.core.transformer.moe import moe_utils, token_dispatcher

    apply_cpu_compat()
    splits = torch.tensor([3, 1], device="cuda")
    assert token_dispatcher.maybe_move_tensor_to_cpu is moe_utils.maybe_move_tensor_to_cpu
    assert moe_utils.maybe_move_tensor_to_cpu(splits, as_numpy=True).tolist() == [3, 1]
    assert type(moe_utils.maybe_move_tensor_to_cpu(splits, as_numpy=True)).__module__ == "numpy"
    assert moe_utils.maybe_move_tensor_to_cpu(splits) is splits


def test_rng_tracker_forks_the_cpu_generator(megatron_single_process, caplog) -> None:
    from megatron.core.tensor_parallel.random import (
        get_cuda_rng_tracker,
        model_parallel_cuda_manual_seed,
    )

    def draw() -> tuple[torch.Tensor, torch.Tensor]:
        before = torch.get_rng_state()
        with get_cuda_rng_tracker().fork():
            forked = torch.rand(4)
        assert torch.equal(torch.get_rng_state(), before)  # fork restores the default state
        return forked, torch.rand(4)

    with caplog.at_level(logging.WARNING):
        forked, default = draw()
    assert not torch.equal(forked, default)
    assert "CPU RNG state changed" not in caplog.text
    model_parallel_cuda_manual_seed(1234)
    assert all(torch.equal(a, b) for a, b in zip(draw(), (forked, default)))  # reproducible


def test_gpt_forward_backward(megatron_single_process) -> None:
    _, model = _tiny_gpt()
    tokens, labels, position_ids = _batch()
    per_token_loss = model(tokens, position_ids, None, labels=labels)
    assert per_token_loss.shape == (BATCH, SEQ)
    loss = per_token_loss.float().mean()
    assert math.isfinite(loss.item())
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("distributed_optimizer", [False, True], ids=["adam", "adam-distopt"])
def test_ddp_optimizer_steps_reduce_loss(megatron_single_process, distributed_optimizer) -> None:
    from megatron.core.distributed import (
        DistributedDataParallel,
        DistributedDataParallelConfig,
        finalize_model_grads,
    )
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.pipeline_parallel import get_forward_backward_func

    config, model = _tiny_gpt()
    ddp = DistributedDataParallel(
        config,
        DistributedDataParallelConfig(
            grad_reduce_in_fp32=True, use_distributed_optimizer=distributed_optimizer
        ),
        model,
    )
    config.finalize_model_grads_func = finalize_model_grads
    optimizer = get_megatron_optimizer(
        OptimizerConfig(
            optimizer="adam", lr=1e-2, clip_grad=1.0,
            use_distributed_optimizer=distributed_optimizer,
        ),
        [ddp],
    )
    tokens, labels, position_ids = _batch()

    def forward_step(data_iterator, chunk):
        batch_tokens, batch_labels = next(data_iterator)
        output = chunk(batch_tokens, position_ids, None, labels=batch_labels)

        def loss_func(per_token_loss: torch.Tensor):
            loss = per_token_loss.float().mean()
            return loss, {"lm loss": loss.detach()}

        return output, loss_func

    forward_backward = get_forward_backward_func()
    losses = []
    for _ in range(3):
        ddp.zero_grad_buffer()
        optimizer.zero_grad()
        reduced = forward_backward(
            forward_step_func=forward_step, data_iterator=iter([(tokens, labels)]),
            model=[ddp], num_microbatches=1, seq_length=SEQ, micro_batch_size=BATCH,
        )
        update_successful, grad_norm, _ = optimizer.step()
        assert update_successful and grad_norm > 0
        losses.append(reduced[0]["lm loss"].item())
    assert all(math.isfinite(x) for x in losses)
    assert losses[0] > losses[1] > losses[2], losses


def test_meta_device_build_still_works(megatron_single_process) -> None:
    """Explicit cuda requests map to cpu, but torch.device('meta') defaults are kept."""
    with torch.device("meta"):
        _, model = _tiny_gpt(init_model_with_meta_device=True, use_cpu_initialization=True)
    assert {p.device.type for p in model.parameters()} == {"meta"}
