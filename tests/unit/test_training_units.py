"""Fast checks of the training package's pure parts (no process groups)."""

from __future__ import annotations

import pytest

from megatron_bridge_cli.data.datasets import _GlobalBatchSampler, dataset_sizes, split_blend
from megatron_bridge_cli.training.preflight import prepare
from megatron_bridge_cli.errors import ConfigError
from megatron_bridge_cli.training.checkpointing import check_load_paths, checkpoint_dir_to_load
from megatron_bridge_cli.training.launch import torchrun_args
from megatron_bridge_cli.training.metrics import eval_log_line, num_floating_point_operations, training_log_line


def _cfg(**train):
    from megatron_bridge_cli.recipes.gpt import gpt_cpu_tiny

    cfg = gpt_cpu_tiny()
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


def test_training_log_line_is_megatron_lm_format():
    line = training_log_line(
        iteration=10, total_iters=100, consumed=80, iter_ms=12.34, tokens_per_s=1000.0, tflops_per_gpu=None,
        lr=1e-3, global_batch=8, loss=4.123456, loss_scale=1.0, grad_norm=1.2341, skipped=0, nan=0,
    )
    assert line == (
        "iteration       10/     100 | consumed samples: 80 | elapsed time per iteration (ms): 12.3 | "
        "throughput (tokens/s): 1000.0 | learning rate: 1.000000E-03 | global batch size:     8 | "
        "lm loss: 4.123456E+00 | loss scale: 1.0 | grad norm: 1.234 | number of skipped iterations:   0 | "
        "number of nan iterations:   0 |"
    )


def test_eval_log_line():
    assert eval_log_line("iteration 20", 3.9) == (
        "validation loss at iteration 20 | lm loss value: 3.900000E+00 | lm loss PPL: 4.940245E+01 |"
    )


def test_flops_formula_counts_a_known_model():
    cfg = _cfg().finalize(2)
    m = cfg.model
    h, s, L, v = m.hidden_size, m.seq_length, m.num_layers, m.resolved_vocab_size()
    expected = 12 * 16 * s * L * h * h * (1 + 4 * 1.5 + 1 + s / h + v / (2 * L * h))
    assert num_floating_point_operations(cfg, 16) == pytest.approx(expected)


@pytest.mark.parametrize("dp", [1, 2, 4])
def test_sampler_gives_every_dp_size_the_same_global_batch(dp):
    gbs, mbs = 8, 2
    per_rank = [list(_GlobalBatchSampler(64, 0, mbs, r, dp, cyclic=False)) for r in range(dp)]
    steps = gbs // (mbs * dp)
    first_global_batch = sorted(i for batches in per_rank for b in batches[:steps] for i in b)
    assert first_global_batch == list(range(gbs))


def test_sampler_resumes_at_the_consumed_sample_and_cycles():
    full = [i for b in _GlobalBatchSampler(32, 0, 2, 0, 1, cyclic=False) for i in b]
    resumed = [i for b in _GlobalBatchSampler(32, 16, 2, 0, 1, cyclic=False) for i in b]
    assert resumed == full[16:]
    it = iter(_GlobalBatchSampler(4, 2, 2, 0, 1, cyclic=True))
    assert [next(it), next(it)] == [[2, 3], [0, 1]]


def test_dataset_sizes_follow_megatron_lm():
    cfg = _cfg(train_iters=100, eval_interval=50, eval_iters=4).finalize(2)
    train, valid, test = dataset_sizes(cfg)
    assert train == 100 * 16 and test == 4 * 16 and valid >= 3 * 4 * 16


def test_weighted_blends_parse():
    assert split_blend(["0.3 a 0.7 b"]) == (["a", "b"], [0.3, 0.7])
    assert split_blend(["a", "b", "c"]) == (["a", "b", "c"], None)
    assert split_blend(None) is None


def test_missing_data_files_name_the_flag(tmp_path):
    cfg = _cfg()
    cfg.dataset.data_path = [str(tmp_path / "nope")]
    with pytest.raises(ConfigError, match=r"--dataset.data_path: .*nope.bin and .*nope.idx not found"):
        prepare(cfg, 1)


def test_split_without_documents_is_refused(tmp_path):
    from megatron_bridge_cli.data.preprocess import write_indexed_dataset
    from megatron_bridge_cli.data.tokenizers import ByteLevelTokenizer

    write_indexed_dataset([f"doc {i}" for i in range(20)], ByteLevelTokenizer(), tmp_path / "d")
    cfg = _cfg()
    cfg.dataset.data_path = [str(tmp_path / "d")]
    cfg.dataset.split = "969,30,1"
    with pytest.raises(ConfigError, match=r"--dataset.split='969,30,1' leaves the test split"):
        prepare(cfg, 1)
    cfg.dataset.split = "80,10,10"
    prepare(cfg, 1)


def test_checkpoint_paths(tmp_path):
    assert checkpoint_dir_to_load(str(tmp_path)) is None
    (tmp_path / "iter_0000020").mkdir()
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("20")
    assert checkpoint_dir_to_load(str(tmp_path)) == str(tmp_path / "iter_0000020")
    assert checkpoint_dir_to_load(str(tmp_path), 10) is None
    cfg = _cfg()
    cfg.checkpoint.load, cfg.checkpoint.ckpt_step = str(tmp_path), 10
    with pytest.raises(ConfigError, match="--checkpoint.ckpt_step=10"):
        check_load_paths(cfg)
    cfg.checkpoint.load, cfg.checkpoint.ckpt_step = str(tmp_path / "empty"), None
    check_load_paths(cfg)  # nothing there: train from scratch
    cfg.checkpoint.exit_on_missing_checkpoint = True
    with pytest.raises(ConfigError, match="--checkpoint.exit_on_missing_checkpoint"):
        check_load_paths(cfg)


def test_torchrun_arguments():
    assert torchrun_args(nproc_per_node=2, argv=["--x=1"]) == [
        "--nproc-per-node=2", "--nnodes=1", "--node-rank=0", "--standalone", "--module", "megatron_bridge_cli", "--x=1",
    ]
    multi = torchrun_args(nproc_per_node=8, nnodes=2, node_rank=1, master_addr="h0", master_port=1234)
    assert "--master-addr=h0" in multi and "--master-port=1234" in multi and "--standalone" not in multi


def test_config_errors_come_before_any_process_group(tmp_path):
    import torch

    from megatron_bridge_cli.training.entry import run_training

    cfg = _cfg()
    cfg.dataset.data_path = [str(tmp_path / "missing")]
    with pytest.raises(ConfigError):
        run_training(cfg)
    cfg = _cfg(global_batch_size=7)
    with pytest.raises(ConfigError, match="global_batch_size"):
        run_training(cfg)
    assert not torch.distributed.is_initialized()


def test_what_this_machine_cannot_do_is_refused_before_training(tmp_path):
    import torch

    from megatron_bridge_cli.config import ProfilingConfig
    from megatron_bridge_cli.training.entry import run_training

    if torch.cuda.is_available():
        pytest.skip("nsys profiling runs where CUDA is")
    cfg = _cfg()
    cfg.profiling = ProfilingConfig(use_nsys_profiler=True)
    with pytest.raises(ConfigError, match=r"--profiling.use_nsys_profiler \(--profiling=nsys\) needs a CUDA GPU"):
        run_training(cfg)
    assert not torch.distributed.is_initialized()
