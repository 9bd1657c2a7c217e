"""`python -m megatron_bridge_cli` is the same as `bridge-train`."""

from megatron_bridge_cli.cli.main import main

if __name__ == "__main__":  # the guard matters: dist_checkpointing's saver spawns processes
    raise SystemExit(main())
