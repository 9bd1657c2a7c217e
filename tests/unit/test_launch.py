"""launch_workers without training: how a failed worker is reported, which start method is
used, and that a forked worker's exit code is bridge-train's return code.

The real jobs (a killed worker, SIGTERM, a worker-side config error) are in
tests/integration/test_training_failures.py.
"""

from __future__ import annotations

import multiprocessing

import pytest

from megatron_bridge_cli.errors import ConfigError
from megatron_bridge_cli.training import launch


def _child_failed(rank: int, exitcode: int, tmp_path):
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    failure = ProcessFailure(local_rank=rank, pid=12345, exitcode=exitcode, error_file=str(tmp_path / "none.json"))
    return ChildFailedError(name="_worker", failures={rank: failure})


@pytest.mark.parametrize("exitcode, expected_rc, text", [
    (2, 2, "bridge-train: worker rank 1 failed with exit code 2; the job stopped"),
    (1, 1, "bridge-train: worker rank 1 failed with exit code 1; the job stopped"),
    (-9, 1, "bridge-train: worker rank 1 was killed by SIGKILL; the job stopped"),
])
def test_a_failed_worker_is_one_line_with_its_rank_and_code(monkeypatch, capsys, tmp_path, exitcode, expected_rc, text):
    """torch's ProcessFailure has local_rank and no rank: the global rank is the failures key."""
    import torch.distributed.launcher.api as api

    def fail(config, entrypoint):
        def run(*args):
            raise _child_failed(1, exitcode, tmp_path)
        return run

    monkeypatch.setattr(api, "elastic_launch", fail)
    monkeypatch.setenv(launch.START_METHOD_ENV, "fork")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # config_from_args would set it for the test process
    rc = launch.launch_workers(nproc_per_node=2, argv=["--train.train_iters=1"])
    err = capsys.readouterr().err
    assert rc == expected_rc
    assert err.strip().splitlines() == [text]


def test_start_method(monkeypatch):
    for value, method in (("fork", "fork"), ("EXEC", "exec"), (" exec ", "exec")):
        monkeypatch.setenv(launch.START_METHOD_ENV, value)
        assert launch._start_method() == method
    monkeypatch.setenv(launch.START_METHOD_ENV, "spawn")
    with pytest.raises(ConfigError, match="BRIDGE_TRAIN_START_METHOD='spawn': use 'fork' or 'exec'"):
        launch._start_method()


def _fake_main(argv):
    import signal

    if argv[0] == "raise":
        raise RuntimeError("boom in the worker")
    if argv[0] == "sigterm":
        signal.raise_signal(signal.SIGTERM)  # default action, as in a fresh interpreter
    if argv[0] == "sighup":
        signal.raise_signal(signal.SIGHUP)
        return 0
    if argv[0] == "threads":
        import torch

        return 40 + torch.get_num_threads()
    return int(argv[0])


@pytest.mark.parametrize("argv, exitcode, ignored", [
    (["0"], 0, ()), (["2"], 2, ()), (["raise"], 1, ()), (["sigterm"], -15, ()), (["threads"], 41, ()),
    (["sighup"], -1, ()), (["sighup"], 0, ("SIGHUP",)),  # started under nohup: the worker ignores it too
])
def test_forked_worker_exit_code_is_mains_return_code(monkeypatch, capfd, argv, exitcode, ignored):
    import signal

    import megatron_bridge_cli.cli.main as cli_main

    monkeypatch.setattr(cli_main, "main", _fake_main)
    monkeypatch.setattr(launch, "_ignored_by_caller", frozenset(ignored))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    previous = signal.signal(signal.SIGTERM, lambda *a: None)  # what the elastic agent leaves to its children
    try:
        proc = multiprocessing.get_context("fork").Process(target=launch._worker, args=(argv,))
        proc.start()
        proc.join(60)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert proc.exitcode == exitcode
    err = capfd.readouterr().err
    assert ("RuntimeError: boom in the worker" in err) == (argv == ["raise"])


def test_fork_is_the_default_only_without_cuda(monkeypatch):
    import torch

    monkeypatch.delenv(launch.START_METHOD_ENV, raising=False)
    assert launch._start_method() == ("exec" if torch.cuda.is_available() else "fork")
