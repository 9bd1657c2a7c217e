"""Mixture of experts trains on CPU over gloo, with expert parallelism, and changes EP on resume.

A 2-layer MoE GPT (hidden 64, 4 experts of width 128, top-2, load-balancing loss 0.01) runs
three jobs that continue each other:

    EP=2, 2 processes, alltoall dispatcher: iterations 1-8, checkpoints at 3 and 6
    EP=1, 1 process:  loads EP=2's iteration 3, trains 4-8, checkpoints at 6
    EP=2, 2 processes, allgather dispatcher: loads EP=1's iteration 6, trains 7-8

Each must log the first job's losses (LM and load-balancing) for the same iterations: the
checkpoints reshard experts (and the optimizer state) between EP=2 and EP=1 in both directions,
and EP=1, EP=2 and both dispatchers compute the same thing on the same global batch. (Fresh
runs at EP=1 and EP=2 cannot be compared directly: megatron-core draws each EP rank's experts
from its own RNG stream, so they start from different weights.)
"""

from __future__ import annotations

import re

import pytest

from tests.integration.harness import assert_ok, close, losses, run_job, tb_scalars

ITERS = 8
REL = 2e-5  # sums in another order across ranks: equal up to rounding
MOE = {
    "model.num_layers": 2,
    "model.num_moe_experts": 4,
    "model.moe_router_topk": 2,
    "model.moe_ffn_hidden_size": 128,
    "model.moe_aux_loss_coeff": 0.01,
    "model.moe_token_dispatcher_type": "alltoall",
    "train.train_iters": ITERS,
    "train.eval_interval": 4,
}
AUX_RE = re.compile(r"^iteration\s+(\d+)/.*\| lm loss: [0-9.E+-]+ \| load_balancing_loss: ([0-9.E+-]+) \|", re.M)


def aux_losses(output: str) -> dict[int, float]:
    return {int(m.group(1)): float(m.group(2)) for m in AUX_RE.finditer(output)}


@pytest.fixture(scope="module")
def runs(stdlib_data, tmp_path_factory):
    base = tmp_path_factory.mktemp("moe")
    data = {"dataset.data_path": [stdlib_data]}
    ep2 = assert_ok(run_job({
        **MOE, **data, "model.expert_model_parallel_size": 2,
        "checkpoint.save": str(base / "ep2"), "checkpoint.save_interval": 3,
        "logger.tensorboard_dir": str(base / "tb"),
    }, nproc=2))
    ep1 = assert_ok(run_job({
        **MOE, **data, "checkpoint.load": str(base / "ep2"), "checkpoint.ckpt_step": 3,
        "checkpoint.save": str(base / "ep1"), "checkpoint.save_interval": 3,
    }, nproc=1))
    back = assert_ok(run_job({
        **MOE, **data, "model.expert_model_parallel_size": 2, "model.moe_token_dispatcher_type": "allgather",
        "checkpoint.load": str(base / "ep1"), "checkpoint.ckpt_step": 6, "checkpoint.save": str(base / "back"),
    }, nproc=2))
    return base, ep2, ep1, back


def test_moe_trains_with_expert_parallel_and_logs_the_load_balancing_loss(runs):
    base, ep2, _, _ = runs
    assert " > number of parameters" in ep2 and "DP=2" in ep2
    lm, aux = losses(ep2), aux_losses(ep2)
    assert sorted(lm) == sorted(aux) == list(range(1, ITERS + 1))
    assert lm[ITERS] < lm[1] - 0.3, lm
    # Switch-Transformer loss / coefficient: E x sum(f_i P_i), 1 for perfectly balanced routing.
    assert all(0.9 < v < 2.0 for v in aux.values()), aux
    scalars = tb_scalars(base / "tb")
    assert sorted(scalars["load_balancing_loss"]) == list(range(1, ITERS + 1))
    assert close({i: scalars["load_balancing_loss"][i] for i in aux}, aux, 1e-6)


def test_ep2_checkpoint_continues_at_ep1_with_the_same_losses(runs):
    _, ep2, ep1, _ = runs
    assert "loaded checkpoint" in ep1 and "iter_0000003 (iteration 3)" in ep1
    later = range(4, ITERS + 1)
    assert sorted(losses(ep1)) == list(later)
    assert close(losses(ep1), {i: losses(ep2)[i] for i in later}, REL), (losses(ep1), losses(ep2))
    assert close(aux_losses(ep1), {i: aux_losses(ep2)[i] for i in later}, REL)


def test_ep1_checkpoint_continues_at_ep2_with_the_allgather_dispatcher(runs):
    base, ep2, _, back = runs
    assert "iter_0000006 (iteration 6)" in back
    later = range(7, ITERS + 1)
    assert close(losses(back), {i: losses(ep2)[i] for i in later}, REL), (losses(back), losses(ep2))
    assert close(aux_losses(back), {i: aux_losses(ep2)[i] for i in later}, REL)
    assert (base / "back" / "latest_checkpointed_iteration.txt").read_text() == str(ITERS)
