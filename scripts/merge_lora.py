"""Merge a --peft run's LoRA/DoRA adapters into the base model: a full dist checkpoint.

    python scripts/merge_lora.py RUN OUT [--pretrained BASE] [--step N]

See megatron_bridge_cli/training/peft_merge.py.
"""

import os
import sys

if __name__ == "__main__":  # dist_checkpointing's saver spawns processes: the guard matters
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from megatron_bridge_cli.training.peft_merge import main

    sys.exit(main())
