"""Worker for the integration tests: gpt_cpu_tiny + dotted overrides -> run_training.

    torchrun --standalone --nproc-per-node 2 tests/integration/train_worker.py \
        '{"model.num_layers": 2, "train.train_iters": 10}'

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


def main() -> int:
    import faulthandler
    import signal

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 <pid>`: where is it stuck?
    from megatron_bridge_cli.errors import ConfigError
    from megatron_bridge_cli.training.entry import run_training

    overrides = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    try:
        return run_training(build(overrides))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # dist_checkpointing's saver spawns processes: the guard matters
    sys.exit(main())
