"""Parallel layouts train the same model the same way (real torchrun jobs over gloo on CPU).

One single-process run is the reference; DP=2 (with the distributed optimizer) and TP=2 must
log the same losses on the same global batches, and a TP=2 checkpoint must load into TP=1 and
continue with the same losses. PP=2 with virtual stages (interleaved 1F1B) must train too.
"""

from __future__ import annotations

import pytest

from tests.integration.harness import assert_ok, close, losses, repeated_lines, run_job, tb_scalars, val_losses

ITERS = 6
# Float sums run in another order across ranks: equal up to rounding, not bitwise.
REL = 2e-5


@pytest.fixture(scope="module")
def reference(stdlib_data, tmp_path_factory):
    tb = tmp_path_factory.mktemp("tb")
    out = assert_ok(run_job({
        "train.train_iters": ITERS, "train.eval_interval": 3, "dataset.data_path": [stdlib_data],
        "logger.tensorboard_dir": str(tb),
    }, nproc=1))
    return out, tb


@pytest.fixture(scope="module")
def tp2(stdlib_data, tmp_path_factory):
    save = tmp_path_factory.mktemp("ckpt_tp2")
    out = assert_ok(run_job({
        "train.train_iters": ITERS, "train.eval_interval": 3, "dataset.data_path": [stdlib_data],
        "model.tensor_model_parallel_size": 2,
        "model.make_vocab_size_divisible_by": 64,  # 257 -> 384 rows at TP=2 as at TP=1 (128 x 1)
        "checkpoint.save": str(save), "checkpoint.save_interval": 4,
    }, nproc=2))
    return out, save


def test_single_process_trains_and_reports(reference):
    out, tb = reference
    ref = losses(out)
    assert sorted(ref) == list(range(1, ITERS + 1))
    assert ref[ITERS] < ref[1]
    vals = val_losses(out)
    assert [v[:2] for v in vals] == [(3, None), (6, None), (6, "validation"), (6, "test")]
    assert "throughput per GPU (TFLOP/s/GPU):" in out and "memory | mem-max-rss-MB:" in out
    scalars = tb_scalars(tb)
    for tag in ("lm loss", "learning-rate", "grad-norm", "batch-size", "throughput/tokens-per-sec",
                "iteration-time", "mem-max-rss-MB", "lm loss validation", "lm loss test"):
        assert tag in scalars, f"{tag} missing from TensorBoard: {sorted(scalars)}"
    assert sorted(scalars["lm loss"]) == list(range(1, ITERS + 1))
    assert all(abs(scalars["lm loss"][i] - ref[i]) <= 1e-6 * ref[i] for i in ref)
    assert scalars["batch-size"][1] == 8


def test_data_parallel_with_distributed_optimizer_matches_single_process(reference, stdlib_data):
    out = assert_ok(run_job({
        "train.train_iters": ITERS, "train.eval_interval": 3, "dataset.data_path": [stdlib_data],
        "optimizer.use_distributed_optimizer": True, "ddp.use_distributed_optimizer": True,
    }, nproc=2))
    assert "DP=2" in out
    assert repeated_lines(out) == {}, out[-3000:]  # library warnings: once, from rank 0
    assert close(losses(out), losses(reference[0]), REL), (losses(out), losses(reference[0]))
    assert close(dict((i, v[2]) for i, v in enumerate(val_losses(out))),
                 dict((i, v[2]) for i, v in enumerate(val_losses(reference[0]))), REL)


def test_tensor_parallel_matches_single_process(reference, tp2):
    out, save = tp2
    assert "TP=2" in out
    assert repeated_lines(out) == {}, out[-3000:]
    assert close(losses(out), losses(reference[0]), REL), (losses(out), losses(reference[0]))
    assert (save / "latest_checkpointed_iteration.txt").read_text() == str(ITERS)
    assert (save / "iter_0000004" / "run_config.yaml").is_file()


def test_tp2_checkpoint_loads_into_tp1(tp2, stdlib_data, tmp_path):
    out_tp2, save = tp2
    out = assert_ok(run_job({
        "train.train_iters": ITERS, "train.eval_interval": 3, "dataset.data_path": [stdlib_data],
        "checkpoint.load": str(save), "checkpoint.ckpt_step": 4, "checkpoint.save": str(tmp_path / "tp1"),
    }, nproc=1))
    assert "loaded checkpoint" in out and "iter_0000004" in out
    resumed = losses(out)
    assert sorted(resumed) == [5, 6]
    assert close(resumed, {i: losses(out_tp2)[i] for i in (5, 6)}, REL), (resumed, losses(out_tp2))


def test_interleaved_pipeline_trains(stdlib_data, tmp_path):
    save = tmp_path / "ckpt"
    out = assert_ok(run_job({
        "train.train_iters": 6, "train.eval_interval": 6, "dataset.data_path": [stdlib_data],
        "model.pipeline_model_parallel_size": 2, "model.virtual_pipeline_model_parallel_size": 2,
        "checkpoint.save": str(save),
    }, nproc=2))
    assert "PP=2 VP=2" in out
    assert out.count("setting --model.batch_p2p_comm=false") == 1 and repeated_lines(out) == {}, out[-3000:]
    got = losses(out)
    assert sorted(got) == list(range(1, 7)) and got[6] < got[1] - 0.2, got
    assert (save / "latest_checkpointed_iteration.txt").read_text() == "6"
