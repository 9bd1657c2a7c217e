"""--profiling, --straggler and --comm_overlap in real 2-process jobs over gloo (bridge-train --nproc-per-node 2).

Five short jobs of a 2-layer tiny GPT (DP=2, 5 iterations), started together and shared by the
assertions:

    base             nothing switched on
    observed         PyTorch profiler over iterations [2, 4) on rank 1 only, straggler report every 2
    overlap          --comm_overlap=default (gradient reduce overlapped, small buckets: several of
                     them), --straggler with disable_on_start
    distopt          the distributed optimizer
    distopt_overlap  the distributed optimizer with --comm_overlap=default (grad reduce and
                     param all-gather overlapped), saving a checkpoint at iteration 3
    resumed          (after the others) distopt_overlap resumed from that checkpoint: the weights
                     saved must be those after step 3, though their all-gather is still pending

Profiling, straggler reports and overlap must leave the losses exactly as they were.
"""

from __future__ import annotations

import gzip
import json
import re
import subprocess

import pytest

from tests.integration.harness import LOSS_RE, PYTHON, ROOT, WORKER, env

SHORT = ["--model.num_layers=2", "--model.hidden_size=64", "--model.ffn_hidden_size=256", "--model.seq_length=64",
         "--train.global_batch_size=8", "--train.micro_batch_size=2", "--train.train_iters=5", "--train.eval_iters=0",
         "--logger.log_interval=1", "--scheduler.lr_warmup_iters=0", "--dataset.num_workers=0"]
DISTOPT = ["--optimizer.use_distributed_optimizer=true", "--ddp.use_distributed_optimizer=true"]
OVERLAP = ["--comm_overlap=default", "--comm_overlap.bucket_size=20000"]  # ~156k parameters: 8 buckets
JOBS = {
    "base": [],
    "observed": ["--profiling=pytorch", "--profiling.profile_step_start=2", "--profiling.profile_step_end=4",
                 "--profiling.profile_ranks=1", "--profiling.trace_dir={traces}",
                 "--straggler=default", "--straggler.report_interval=2"],
    "overlap": [*OVERLAP, "--straggler=default", "--straggler.report_interval=1", "--straggler.disable_on_start"],
    "distopt": DISTOPT,
    "distopt_overlap": [*DISTOPT, *OVERLAP, "--checkpoint.save={root}/ck", "--checkpoint.save_interval=3"],
}
RESUMED = [*DISTOPT, *OVERLAP, "--checkpoint.load={root}/ck", "--checkpoint.ckpt_step=3"]
STRAGGLER_RE = re.compile(r"^straggler report at iteration (\d+) \| step time \(ms\) per rank: (.*?) \| "
                          r"slowest: rank (\d) \(([0-9.]+) ms\) \| fastest: rank (\d) \(([0-9.]+) ms\) \|", re.M)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """name -> (exit code, output); the trace folder is under "traces"."""
    root = tmp_path_factory.mktemp("diagnostics")
    traces = root / "traces"

    def start(name, extra):
        argv = [a.format(traces=traces, root=root) for a in SHORT + extra]
        # bridge-train's own launcher: workers forked after one import of megatron-core (cheaper than torchrun's)
        cmd = [PYTHON, str(WORKER), "--cli", "--nproc-per-node", "2", *argv]
        with open(root / name, "w") as f:
            return subprocess.Popen(["timeout", "--kill-after=10", "240", *cmd], cwd=ROOT, env=env(),
                                    stdout=f, stderr=subprocess.STDOUT, text=True)

    procs = {name: start(name, extra) for name, extra in JOBS.items()}
    out = {name: (p.wait(), (root / name).read_text()) for name, p in procs.items()}
    out["resumed"] = (start("resumed", RESUMED).wait(), (root / "resumed").read_text())
    out["traces"] = traces
    return out


def _losses(runs, name) -> list[str]:
    rc, out = runs[name]
    assert rc == 0, out[-3000:]
    found = [(int(m.group(1)), m.group(3)) for m in LOSS_RE.finditer(out)]
    assert [i for i, _ in found] == [1, 2, 3, 4, 5], out[-3000:]
    return [loss for _, loss in found]  # as printed: 7 significant digits


def test_profiler_trace_covers_exactly_the_window_on_the_ranks_asked(runs):
    _losses(runs, "observed")
    files = sorted(p.name for p in runs["traces"].iterdir())
    assert len(files) == 1 and re.fullmatch(r"rank1\.\d+\.pt\.trace\.json", files[0]), files  # no rank 0 trace
    path = runs["traces"] / files[0]
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        trace = json.load(f)  # the Chrome trace format TensorBoard's plugin and Perfetto read
    steps = sorted({e["name"] for e in trace["traceEvents"] if e.get("name", "").startswith("ProfilerStep#")})
    assert steps == ["ProfilerStep#2", "ProfilerStep#3"]
    ops = {e["name"] for e in trace["traceEvents"] if e.get("cat") == "cpu_op"}
    assert "aten::mm" in ops or "aten::addmm" in ops or "aten::matmul" in ops  # the model's work is in it


def test_profiling_and_straggler_reports_leave_the_losses_unchanged(runs):
    assert _losses(runs, "observed") == _losses(runs, "base")


def test_straggler_line_lists_every_rank_and_names_slowest_and_fastest(runs):
    _, out = runs["observed"]
    lines = list(STRAGGLER_RE.finditer(out))
    assert [int(m.group(1)) for m in lines] == [2, 4], out[-3000:]  # every --straggler.report_interval, once
    for m in lines:
        per_rank = dict(item.split(": ") for item in m.group(2).split(", "))
        assert sorted(per_rank) == ["0", "1"]
        times = {int(r): float(t) for r, t in per_rank.items()}
        slow, fast = int(m.group(3)), int(m.group(5))
        assert times[slow] == max(times.values()) == float(m.group(4))
        assert times[fast] == min(times.values()) == float(m.group(6))
        assert min(times.values()) > 0


def test_straggler_disable_on_start_prints_no_report(runs):
    _losses(runs, "overlap")
    assert "straggler report" not in runs["overlap"][1]


def test_data_parallel_overlap_gives_the_same_losses(runs):
    assert _losses(runs, "overlap") == _losses(runs, "base")
    assert _losses(runs, "distopt_overlap") == _losses(runs, "distopt")


def test_a_checkpoint_saved_with_param_gather_overlap_holds_the_updated_weights(runs):
    rc, out = runs["resumed"]
    assert rc == 0, out[-3000:]
    resumed = [(int(m.group(1)), m.group(3)) for m in LOSS_RE.finditer(out)]
    assert resumed == list(zip([4, 5], _losses(runs, "distopt_overlap")[3:])), out[-3000:]
