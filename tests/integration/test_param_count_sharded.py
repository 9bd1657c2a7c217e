"""count_parameters' per-GPU figure equals the shard megatron-core really builds on each rank."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from megatron_bridge_cli.training.param_count import count_parameters
from tests.integration.param_count_worker import parse, small_gpt
from tests.parallel import free_port

WORKER = Path(__file__).with_name("param_count_worker.py")
ROOT = Path(__file__).resolve().parents[2]
LAYOUTS = ["2,1,untied", "2,1,tied", "1,2,tied", "1,2,untied", "1,1,untied,2", "2,1,tied,2"]  # ,2: MoE at EP=2


@pytest.fixture(scope="module")
def built_counts():
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", f"--master-port={free_port()}",
           str(WORKER), *LAYOUTS]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.split("COUNTS ", 1)[1].splitlines()[0])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_per_gpu_count_matches_built_shards(built_counts, layout):
    tp, pp, tied, ep = parse(layout)
    figures = count_parameters(small_gpt(tp, pp, tied, ep))
    counts = built_counts[layout]
    assert figures.per_gpu_max == max(counts)
    if ep:  # each rank holds 2 of the 4 experts of every layer
        assert figures.per_gpu_experts == figures.routed_experts // 2
    if pp == 2:
        # stages hold disjoint parts, except that a tied embedding's last stage keeps a copy
        tied_copy = 384 * 64 if tied else 0  # padded vocab x hidden
        assert sum(counts) == figures.total + tied_copy
