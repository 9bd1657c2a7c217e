"""Exact resume: a 10-iteration run and a run stopped at 6 (exit_interval) then resumed to 10
log bitwise-identical losses at 7-10 (data position, RNG, optimizer and scheduler restored).

PP=2 with 4 micro-batches, so the 1F1B schedule is what is resumed. Losses are compared
through the TensorBoard scalars (float32, bit for bit) and the console lines.
"""

from __future__ import annotations

import pytest

from tests.integration.harness import assert_ok, losses, run_job, tb_scalars

RUN = {
    "train.train_iters": 10, "train.eval_interval": 5, "model.pipeline_model_parallel_size": 2,
    "checkpoint.save_interval": 3,
}


@pytest.fixture(scope="module")
def runs(stdlib_data, tmp_path_factory):
    base = tmp_path_factory.mktemp("resume")
    data = {"dataset.data_path": [stdlib_data]}
    full = assert_ok(run_job({
        **RUN, **data, "checkpoint.save": str(base / "full"), "checkpoint.most_recent_k": 2,
        "logger.tensorboard_dir": str(base / "tb_full"),
    }, nproc=2))
    first = assert_ok(run_job({
        **RUN, **data, "checkpoint.save": str(base / "split"), "train.exit_interval": 6,
        "logger.tensorboard_dir": str(base / "tb_first"),
    }, nproc=2))
    # A save that crashed half-way leaves a .tmp folder: it must not be taken for a checkpoint.
    (base / "split" / "iter_0000009.tmp").mkdir()
    (base / "split" / "iter_0000009.tmp" / "garbage").write_text("half-written")
    second = assert_ok(run_job({
        **RUN, **data, "checkpoint.save": str(base / "split"), "checkpoint.load": str(base / "split"),
        "logger.tensorboard_dir": str(base / "tb_second"),
    }, nproc=2))
    return base, full, first, second


def test_exit_interval_stops_with_a_checkpoint(runs):
    base, _, first, _ = runs
    assert "exiting after iteration 6 (exit interval)" in first
    assert sorted(losses(first)) == list(range(1, 7))
    assert (base / "split" / "iter_0000006" / "run_config.yaml").is_file()


def test_resume_continues_bitwise(runs):
    base, full, _, second = runs
    assert "loaded checkpoint" in second and "iter_0000006 (iteration 6)" in second
    assert sorted(losses(second)) == [7, 8, 9, 10]
    assert {i: losses(full)[i] for i in range(7, 11)} == losses(second)
    tb_full = tb_scalars(base / "tb_full")["lm loss"]
    tb_second = tb_scalars(base / "tb_second")["lm loss"]
    assert [tb_full[i] for i in range(7, 11)] == [tb_second[i] for i in range(7, 11)]
    # Learning rate follows the same schedule after the resume.
    assert [tb_scalars(base / "tb_full")["learning-rate"][i] for i in range(7, 11)] == \
        [tb_scalars(base / "tb_second")["learning-rate"][i] for i in range(7, 11)]


def test_checkpoint_layout_and_most_recent_k(runs):
    base = runs[0]
    full = base / "full"
    assert (full / "latest_checkpointed_iteration.txt").read_text() == "10"
    assert sorted(p.name for p in full.iterdir()) == ["iter_0000009", "iter_0000010", "latest_checkpointed_iteration.txt"]
    assert (full / "iter_0000010" / "metadata.json").is_file()
    # The run's own (unfinalized) configuration, reloadable.
    from megatron_bridge_cli.config import ConfigContainer

    cfg = ConfigContainer.from_yaml(str(full / "iter_0000010" / "run_config.yaml"))
    assert cfg.model.pipeline_model_parallel_size == 2 and cfg.train.train_iters == 10
    split = base / "split"
    assert (split / "latest_checkpointed_iteration.txt").read_text() == "10"
    assert not (split / "iter_0000009.tmp").exists()
