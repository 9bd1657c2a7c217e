"""Worker for the integration tests: gpt_cpu_tiny + dotted overrides -> run_training.

    torchrun --standalone --nproc-per-node 2 tests/integration/train_worker.py \
        '{"model.num_layers": 2, "train.train_iters": 10}'
    python tests/integration/train_worker.py --cli --nproc-per-node 2 ...   # bridge-train, hook installed

Independent of the CLI on purpose: these tests exercise the training path itself. Values are
JSON; a dotted path sets an attribute of the ConfigContainer (and marks it explicit).
"""

import json
import sys


def build(overrides: dict):
    from megatron_bridge_cli.recipes import gpt

    cfg = gpt.gpt_cpu_tiny()
    for path, value in overrides.items():
        obj = cfg
        *parents, leaf = path.split(".")
        for name in parents:
            obj = getattr(obj, name)
        if not hasattr(obj, leaf):
            raise SystemExit(f"unknown override {path}")
        setattr(obj, leaf, value)
        cfg.explicit_paths.add(path)
    return cfg


FAULT_ENV = "BRIDGE_TRAIN_TEST_FAULT"
"""Test hook, `ACTION:RANK:ITERATION`: that rank, at the start of that iteration (counted from
the job's start), `hang`s (sleeps without end, outside any collective) or `exitN`s (exits with
code N at once). Installed before the launcher forks, so bridge-train's forked workers have it."""


def install_fault() -> None:
    import os

    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    action, rank, iteration = spec.split(":")
    import time

    from megatron_bridge_cli.training import loop

    real_step, calls = loop.train_step, [0]

    def train_step(*args, **kwargs):
        calls[0] += 1
        if calls[0] == int(iteration) and int(os.environ.get("RANK", "0")) == int(rank):
            print(f"fault: rank {rank} {action} at iteration {iteration}", flush=True)
            if action == "hang":
                while True:
                    time.sleep(3600)
            os._exit(int(action[len("exit"):]))
        return real_step(*args, **kwargs)

    loop.train_step = train_step


def main() -> int:
    import faulthandler
    import signal

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 <pid>`: where is it stuck?
    install_fault()
    from megatron_bridge_cli.errors import ConfigError
    from megatron_bridge_cli.training.entry import run_training

    if sys.argv[1:2] == ["--cli"]:  # bridge-train's own command line (and launcher), with the hook
        from megatron_bridge_cli.cli.main import main as bridge_train

        return bridge_train(sys.argv[2:])
    overrides = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    try:
        return run_training(build(overrides))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # dist_checkpointing's saver spawns processes: the guard matters
    sys.exit(main())
