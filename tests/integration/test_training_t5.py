"""T5 trains end to end through bridge-train: `--recipe t5_220m` shrunk by flags, 2 CPU processes.

Four real jobs, shared by the assertions: an uninterrupted 12-iteration run at DP=2, the same
run stopped at 6 by exit_interval, its resume from that checkpoint, and TP=2 on the same global
batches. Data: Python stdlib sources, byte-level, one sequence per line (span corruption packs
whole sentences), with 32 sentinel tokens. Dropout is off so that TP=2 and DP=2 compute the
same thing.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.integration.harness import JOB_TIMEOUT, PYTHON, ROOT, assert_ok, close, env, losses, val_losses

ITERS = 12
REL = 2e-5  # float sums in another order across ranks: equal up to rounding

T5_TINY = [
    "--recipe=t5_220m", "--mixed_precision=null",
    "--model.num_layers=2", "--model.encoder_num_layers=2", "--model.hidden_size=64",
    "--model.num_attention_heads=4", "--model.kv_channels=16", "--model.ffn_hidden_size=256",
    "--model.seq_length=64", "--model.encoder_seq_length=128",  # decoder / encoder tokens
    "--model.vocab_size=null", "--model.should_pad_vocab=true",  # 257 bytes + <s> + <mask> + 32 sentinels -> 384 rows
    "--model.hidden_dropout=0", "--model.attention_dropout=0",
    "--model.use_cpu_initialization=true",  # TP=2 starts from TP=1's exact weights
    "--tokenizer.tokenizer_type=ByteLevelTokenizer", "--tokenizer.vocab_extra_ids=32",
    f"--train.train_iters={ITERS}", "--train.global_batch_size=8", "--train.micro_batch_size=2",
    "--train.eval_interval=4", "--train.eval_iters=2",
    "--optimizer.lr=3e-3", "--optimizer.min_lr=3e-4", "--scheduler.lr_warmup_iters=1",
    "--logger.log_interval=1", "--dataset.num_workers=0", "--dataset.split=90,5,5",
]


def bridge_train(*flags: str) -> str:
    """`bridge-train --nproc-per-node 2` with the shrunk T5 flags plus ``flags``; its output."""
    proc = subprocess.run(
        ["timeout", "--kill-after=10", str(JOB_TIMEOUT), PYTHON, "-m", "megatron_bridge_cli",
         "--nproc-per-node", "2", *T5_TINY, *flags],
        cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    return assert_ok(proc)


@pytest.fixture(scope="module")
def runs(stdlib_sentences, tmp_path_factory):
    base = tmp_path_factory.mktemp("t5")
    data = f"--dataset.data_path={stdlib_sentences}"
    full = bridge_train(data)
    first = bridge_train(data, f"--checkpoint.save={base / 'split'}", "--train.exit_interval=6")
    second = bridge_train(data, f"--checkpoint.load={base / 'split'}")
    tp2 = bridge_train(data, "--model.tensor_model_parallel_size=2",
                       "--model.make_vocab_size_divisible_by=64")  # 291 ids -> 384 rows, as at TP=1
    return base, full, first, second, tp2


def test_t5_trains_on_two_processes_with_falling_validation_loss(runs):
    full = runs[1]
    assert "DP=2" in full and "TP=1" in full
    got = losses(full)
    assert sorted(got) == list(range(1, ITERS + 1)) and got[ITERS] < got[1] - 0.5, got
    vals = val_losses(full)
    assert [v[:2] for v in vals] == [(4, None), (8, None), (12, None), (12, "validation"), (12, "test")]
    assert vals[2][2] < vals[0][2] - 0.2, vals  # validation loss at 12 well below the one at 4


def test_t5_resume_logs_the_losses_of_the_uninterrupted_run(runs):
    base, full, first, second = runs[:4]
    assert "exiting after iteration 6 (exit interval)" in first
    assert sorted(losses(first)) == list(range(1, 7))
    assert (base / "split" / "latest_checkpointed_iteration.txt").read_text() == "6"
    assert (base / "split" / "iter_0000006" / "run_config.yaml").is_file()
    assert "loaded checkpoint" in second and "iter_0000006 (iteration 6)" in second
    assert losses(second) == {i: losses(full)[i] for i in range(7, ITERS + 1)}
    # Evaluation continues at the same validation samples too.
    assert [v for v in val_losses(second) if v[1] is None] == [v for v in val_losses(full) if v[0] > 6 and v[1] is None]


def test_t5_tensor_parallel_matches_data_parallel(runs):
    full, tp2 = runs[1], runs[4]
    assert "TP=2" in tp2 and "DP=1" in tp2
    assert close(losses(tp2), losses(full), REL), (losses(tp2), losses(full))
    assert close(dict(enumerate(v[2] for v in val_losses(tp2))), dict(enumerate(v[2] for v in val_losses(full))), REL)
