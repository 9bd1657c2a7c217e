"""Checkpoints that cannot be loaded: each is refused with one paragraph naming the flag and the
folder, before training where the files show it, at load otherwise; --checkpoint.fallback_to_previous
loads the newest readable one instead, only when asked.

One real 2-process run saves iterations 2, 4 and 6; every case damages a copy of it the way
crashes, full disks and people do (truncated and overwritten shards, garbled trackers, missing
folders, a model of another shape), and is checked through checkpoint_problems (what
validation, --dry-run and the launcher's pre-flight report) and, for the load-time ones,
through bridge-train itself (exit 2, rank 0 only, no traceback).
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import subprocess

import pytest

from megatron_bridge_cli.training.checkpoint_files import checkpoint_problems, resolve
from tests.integration.harness import PYTHON, ROOT, env, losses

TINY = ["--model.num_layers=2", "--model.hidden_size=64", "--model.ffn_hidden_size=256", "--model.seq_length=64",
        "--train.global_batch_size=8", "--train.micro_batch_size=2", "--logger.log_interval=1",
        "--dataset.num_workers=0", "--train.eval_interval=null", "--train.eval_iters=0",
        "--scheduler.lr_warmup_iters=1", "--train.train_iters=6"]


def bridge_train(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(["timeout", "--kill-after=10", str(int(timeout)), PYTHON, "-m", "megatron_bridge_cli",
                           "--nproc-per-node", "2", *TINY, *args],
                          cwd=ROOT, env=env(), capture_output=True, text=True)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(checkpoint folder with iter 2, 4, 6, the run's losses)."""
    root = tmp_path_factory.mktemp("faults") / "ckpt"
    run = bridge_train(f"--checkpoint.save={root}", "--checkpoint.save_interval=2")
    assert run.returncode == 0, run.stderr[-3000:]
    assert sorted(os.listdir(root)) == ["iter_0000002", "iter_0000004", "iter_0000006",
                                        "latest_checkpointed_iteration.txt"]
    return root, losses(run.stdout)


@pytest.fixture
def ckpt(saved, tmp_path):
    copy = tmp_path / "ckpt"
    shutil.copytree(saved[0], copy)
    return copy


def _cfg(**checkpoint):
    from megatron_bridge_cli.recipes.gpt import gpt_cpu_tiny

    cfg = gpt_cpu_tiny()
    for name, value in checkpoint.items():
        setattr(cfg.checkpoint, name, value)
    return cfg


def _shard(folder, index: int = 0):
    return sorted(p for p in folder.iterdir() if p.name.endswith(".distcp"))[index]


def _truncate(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _overwrite(path, at: int, junk: bytes) -> None:
    data = bytearray(path.read_bytes())
    data[at: at + len(junk)] = junk
    path.write_bytes(bytes(data))


def _tensor_offset(folder, key: str) -> tuple[str, int]:
    """(shard file, byte offset) where the checkpoint index puts the tensor ``key``."""
    from torch.distributed.checkpoint import FileSystemReader

    index = FileSystemReader(str(folder)).read_metadata()
    for where, info in index.storage_data.items():
        if where.fqn == key:
            return info.relative_path, info.offset
    raise KeyError(key)


# --------------------------------------------------------------------------- found before training
def _damage(ckpt, case: str):
    """Damage the copy ``ckpt`` as ``case`` says; returns the settings to check and the text the
    one problem must hold (besides the flag and the folder)."""
    latest = ckpt / "iter_0000006"
    tracker = ckpt / "latest_checkpointed_iteration.txt"
    if case == "tracker file given":
        return {"load": str(tracker)}, rf"is a file, not a checkpoint folder; did you mean --checkpoint.load={ckpt}\?"
    if case == "some file given":
        (ckpt / "notes.txt").write_text("x")
        return {"load": str(ckpt / "notes.txt")}, r"is a file, not a checkpoint folder; give the folder"
    if case == "empty folder, exit_on_missing":
        (ckpt / "empty").mkdir()
        return ({"load": str(ckpt / "empty"), "exit_on_missing_checkpoint": True},
                r"is an empty folder: there is no checkpoint to load; --checkpoint.exit_on_missing_checkpoint")
    if case == "empty folder, pretrained":
        (ckpt / "empty").mkdir()
        return {"pretrained_checkpoint": str(ckpt / "empty")}, r"pretrained_checkpoint=.*is an empty folder"
    if case == "missing folder, pretrained":
        return {"pretrained_checkpoint": str(ckpt / "nope")}, r"pretrained_checkpoint=.*nope: no such folder"
    if case == "tracker garbage":
        tracker.write_text("twenty\n")
        return {"load": str(ckpt)}, r"holds 'twenty', not an iteration number or 'release'"
    if case == "tracker binary garbage":
        tracker.write_bytes(b"\x00\xff\xfe garbage")
        return {"load": str(ckpt)}, r"not an iteration number or 'release'"
    if case == "tracker names a missing folder":
        tracker.write_text("8")
        return {"load": str(ckpt)}, (r"latest_checkpointed_iteration.txt names iteration 8, but the folder does not "
                                     r"exist\. The newest loadable one is .*iter_0000006: add "
                                     r"--checkpoint.fallback_to_previous to load it \(or --checkpoint.ckpt_step=6\)")
    if case == "incomplete folder":
        (latest / ".metadata").unlink()
        return {"load": str(ckpt)}, r"iter_0000006 cannot be loaded: it is incomplete \(.metadata missing"
    if case == "truncated shard":
        shard = _shard(latest)
        _truncate(shard)
        return {"load": str(ckpt)}, rf"its shard file {shard.name} is truncated \([\d,]+ bytes; the index needs"
    if case == "empty shard":
        shard = _shard(latest, 1)
        shard.write_bytes(b"")
        return {"load": str(ckpt)}, rf"its shard file {shard.name} is truncated \(0 bytes"
    if case == "missing shard":
        shard = _shard(latest)
        shard.unlink()
        return {"load": str(ckpt)}, rf"its shard file {shard.name} is missing"
    if case == "corrupted common.pt":
        common = latest / "common.pt"
        _overwrite(common, common.stat().st_size // 2, b"\x00" * 64)
        return {"load": str(ckpt)}, r"its common.pt is (corrupted|truncated or corrupted)"
    if case == "truncated common.pt":
        _truncate(latest / "common.pt")
        return {"load": str(ckpt)}, r"its common.pt is truncated or corrupted"
    if case == "garbage index":
        (latest / ".metadata").write_bytes(os.urandom(500))
        return {"load": str(ckpt)}, r"its .metadata index is truncated or corrupted"
    if case == "garbage metadata.json":
        (latest / "metadata.json").write_text("{not json")
        return {"load": str(ckpt)}, r"its metadata.json is unreadable or not JSON"
    if case == "ckpt_step missing":
        return {"load": str(ckpt), "ckpt_step": 5}, r"--checkpoint.ckpt_step=5: .*iter_0000005 does not exist \(iterations saved in .*: 2, 4, 6\)"
    if case == "ckpt_step damaged":
        _truncate(_shard(ckpt / "iter_0000004"))
        return {"load": str(ckpt), "ckpt_step": 4}, r"--checkpoint.ckpt_step=4: .*iter_0000004 cannot be loaded: its shard file"
    if case == "iteration folder given, damaged":
        _truncate(_shard(latest))
        return {"load": str(latest)}, r"the checkpoint cannot be loaded: its shard file"
    if case == "all damaged, fallback":
        for it in (2, 4, 6):
            _truncate(_shard(ckpt / f"iter_{it:07d}"))
        return ({"load": str(ckpt), "fallback_to_previous": True},
                r"iter_0000006 cannot be loaded: .*truncated.*\. No older checkpoint there can be loaded either")
    if case == "save under a file":
        (ckpt / "afile").write_text("x")
        return {"save": str(ckpt / "afile" / "sub")}, r"--checkpoint.save=.*afile/sub: .*afile is a file"
    raise AssertionError(case)


CASES = ["tracker file given", "some file given", "empty folder, exit_on_missing", "empty folder, pretrained",
         "missing folder, pretrained", "tracker garbage", "tracker binary garbage", "tracker names a missing folder",
         "incomplete folder", "truncated shard", "empty shard", "missing shard", "corrupted common.pt",
         "truncated common.pt", "garbage index", "garbage metadata.json", "ckpt_step missing", "ckpt_step damaged",
         "iteration folder given, damaged", "all damaged, fallback", "save under a file"]


@pytest.mark.parametrize("case", CASES)
def test_problem_is_one_paragraph_naming_flag_and_folder(ckpt, case):
    settings, expected = _damage(ckpt, case)
    problems = checkpoint_problems(_cfg(**settings))
    assert len(problems) == 1, problems
    (problem,) = problems
    assert "\n" not in problem and re.search(expected, problem), problem
    flag = "ckpt_step" if "ckpt_step" in settings else next(iter(settings))
    assert f"--checkpoint.{flag}=" in problem and str(ckpt) in problem, problem


def test_sound_checkpoints_and_leftovers_of_crashes_are_no_problem(ckpt):
    # A save killed mid-write (iter_N.tmp), one killed after its rename (iter_N past the tracker),
    # a prune killed mid-delete (.deleting) and a tracker write killed (tracker .tmp).
    (ckpt / "iter_0000008.tmp").mkdir()
    (ckpt / "iter_0000008.tmp" / "__0_0.distcp").write_bytes(b"half")
    shutil.copytree(ckpt / "iter_0000006", ckpt / "iter_0000007")
    (ckpt / "iter_0000001.deleting").mkdir()
    (ckpt / "latest_checkpointed_iteration.txt.tmp").write_text("7")
    save = ckpt.parent / "new" / "deeper"
    cfg = _cfg(load=str(ckpt), save=str(save))
    assert checkpoint_problems(cfg) == []
    assert resolve("checkpoint.load", str(ckpt)).path == str(ckpt / "iter_0000006")
    assert not save.exists() and not save.parent.exists()  # the writability probe leaves nothing behind
    assert checkpoint_problems(_cfg(load=str(ckpt / "nothing_yet"))) == []  # auto-resume: train from scratch
    assert checkpoint_problems(_cfg(load=str(ckpt / "iter_0000004"))) == []  # an iteration folder itself


def test_fallback_skips_the_broken_latest_only_when_asked(ckpt):
    _truncate(_shard(ckpt / "iter_0000006"))
    assert len(checkpoint_problems(_cfg(load=str(ckpt)))) == 1
    assert checkpoint_problems(_cfg(load=str(ckpt), fallback_to_previous=True)) == []
    choice = resolve("checkpoint.load", str(ckpt), fallback=True)
    assert choice.path == str(ckpt / "iter_0000004")
    assert [p for p, _ in choice.skipped] == [str(ckpt / "iter_0000006")]
    # An explicit step is never replaced.
    assert len(checkpoint_problems(_cfg(load=str(ckpt), ckpt_step=6, fallback_to_previous=True))) == 1


class _Boom:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('BOOM_MARKER', '/nonexistent/x')}",))


def test_a_crafted_index_runs_no_code_during_checks(ckpt, tmp_path, monkeypatch):
    """Validation (and --dry-run) reads torch's .metadata index to find truncated shards: a
    pickle naming anything but torch's checkpoint classes is not followed."""
    marker = tmp_path / "ran"
    monkeypatch.setenv("BOOM_MARKER", str(marker))
    (ckpt / "iter_0000006" / ".metadata").write_bytes(pickle.dumps(_Boom()))
    checkpoint_problems(_cfg(load=str(ckpt)))
    assert not marker.exists()
    # the same call reached through a module the index may name: protocol 4 walks 'os.system'
    def text(t: str) -> bytes:  # SHORT_BINUNICODE
        return b"\x8c" + bytes([len(t.encode())]) + t.encode()

    # PROTO 4, STACK_GLOBAL(module, 'os.system'), TUPLE1(command), REDUCE, STOP
    walk = b"\x80\x04" + text("torch.distributed.checkpoint.filesystem") + text("os.system") + b"\x93" + \
        text(f"touch {marker}") + b"\x85R."
    assert pickle.loads(walk) == 0 and marker.exists()  # the payload is real...
    marker.unlink()
    (ckpt / "iter_0000006" / ".metadata").write_bytes(walk)
    checkpoint_problems(_cfg(load=str(ckpt)))
    assert not marker.exists()  # ...and validation does not run it


# --------------------------------------------------------------------------- through bridge-train
def _one_error(run: subprocess.CompletedProcess) -> str:
    """The one error paragraph of a failed bridge-train run (rank 0 only, no traceback)."""
    assert run.returncode == 2, (run.returncode, run.stderr[-3000:])
    assert "Traceback" not in run.stderr + run.stdout, run.stderr[-3000:]
    lines = run.stderr.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("bridge-train: error:")]
    assert len(starts) == 1, run.stderr[-3000:]
    # One message; validation's list form puts each problem on a line of its own ("  - ...").
    block = [lines[starts[0]]] + [line for line in lines[starts[0] + 1:] if line.startswith("  - ")]
    return " ".join(block)


def test_model_of_another_shape_names_the_first_mismatching_tensor(saved):
    error = _one_error(bridge_train(f"--checkpoint.load={saved[0]}", "--model.ffn_hidden_size=128"))
    assert re.search(r"--checkpoint.load=\S+: this model does not fit the checkpoint \S+iter_0000006: tensor "
                     r"decoder\.layers\.mlp\.linear_fc\d\.weight has shape \[2, \d+, \d+\] in the checkpoint and "
                     r"\[2, \d+, \d+\] in this model \(run_config.yaml of the checkpoint: --model.ffn_hidden_size is "
                     r"256 there, 128 here\)", error), error


def test_truncated_latest_is_refused_before_any_worker_starts(ckpt):
    _truncate(_shard(ckpt / "iter_0000006"))
    run = bridge_train(f"--checkpoint.load={ckpt}")
    error = _one_error(run)
    assert "iter_0000006 cannot be loaded: its shard file" in error and "--checkpoint.fallback_to_previous" in error
    assert "worker rank" not in run.stderr  # the launcher's pre-flight refused it: no worker ran


def test_shard_damaged_inside_is_reported_at_load_naming_the_folder(ckpt):
    """Bytes overwritten inside a shard pass the file checks (sizes match); reading it fails on
    every rank, which the load turns into one message naming the checkpoint."""
    name, offset = _tensor_offset(ckpt / "iter_0000006", "embedding.word_embeddings.weight")
    _overwrite(ckpt / "iter_0000006" / name, offset, b"\xde\xad\xbe\xef" * 16)
    error = _one_error(bridge_train(f"--checkpoint.load={ckpt}"))
    assert re.search(rf"--checkpoint.load={re.escape(str(ckpt))}: the checkpoint \S+iter_0000006 cannot be read: "
                     r".+; --checkpoint.fallback_to_previous loads the newest older one", error), error


def test_fallback_to_previous_loads_the_newest_readable_and_trains_on(saved, ckpt):
    """iter_6 truncated (the file checks skip it), iter_4 damaged inside (its read fails): the
    run warns about both by name, loads iter_2, and logs the first run's losses from 3 on."""
    _truncate(_shard(ckpt / "iter_0000006"))
    name, offset = _tensor_offset(ckpt / "iter_0000004", "embedding.word_embeddings.weight")
    _overwrite(ckpt / "iter_0000004" / name, offset, b"\xde\xad\xbe\xef" * 16)
    run = bridge_train(f"--checkpoint.load={ckpt}", "--checkpoint.fallback_to_previous")
    assert run.returncode == 0, run.stderr[-3000:]
    warnings = [line for line in run.stdout.splitlines() if line.startswith("warning: --checkpoint.fallback_to_previous")]
    assert len(warnings) == 2, run.stdout[-3000:]
    assert "iter_0000006 cannot be loaded (its shard file" in warnings[0] and "loading" in warnings[0]
    assert "iter_0000004 cannot be loaded" in warnings[1] and warnings[1].endswith(
        f"loading {ckpt / 'iter_0000002'} instead (also skipped {ckpt / 'iter_0000006'})")
    assert f"loaded checkpoint {ckpt / 'iter_0000002'} (iteration 2)" in run.stdout
    assert losses(run.stdout) == {i: saved[1][i] for i in range(3, 7)}


# --------------------------------------------------------------------------- the save side's steps
def test_pruning_renames_before_deleting_and_clears_leftovers(tmp_path):
    """most_recent_k: old folders leave the iter_ namespace before their files go (a kill mid-
    delete leaves a .deleting folder, never a partial iter_N), and leftovers are cleared."""
    from megatron_bridge_cli.training.checkpointing import Checkpointer

    for it in (1, 2, 3, 4):
        (tmp_path / f"iter_{it:07d}").mkdir()
        (tmp_path / f"iter_{it:07d}" / "metadata.json").write_text("{}")
    (tmp_path / "iter_0000000.deleting").mkdir()  # a prune killed earlier
    (tmp_path / "iter_0000009").mkdir()  # newer than the tracker: a save killed after its rename
    cfg = _cfg(most_recent_k=2)
    Checkpointer(cfg, cfg)._prune(str(tmp_path), 4)
    assert sorted(os.listdir(tmp_path)) == ["iter_0000003", "iter_0000004", "iter_0000009"]


def test_saving_an_existing_iteration_swaps_it_in_one_step(tmp_path):
    from megatron_bridge_cli.training.checkpointing import _exchange

    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "a").write_text("new")
    (tmp_path / "iter_0000004").mkdir()
    (tmp_path / "iter_0000004" / "a").write_text("old")
    _exchange(str(tmp_path / "new"), str(tmp_path / "iter_0000004"))
    assert (tmp_path / "iter_0000004" / "a").read_text() == "new" and (tmp_path / "new" / "a").read_text() == "old"
