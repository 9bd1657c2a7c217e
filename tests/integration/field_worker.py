"""train_worker.py plus independent observations of the run, for test_field_effects.py.

    python tests/integration/field_worker.py '{"train.train_iters": 3, "mixed_precision": "fp32",
                                               "mixed_precision.autocast_dtype": "bfloat16"}'

Besides train_worker's dotted overrides it takes ``"mixed_precision": PRESET`` (switch the
section on first) and dtype names ("bfloat16") for ``*dtype`` fields. It prints, computed here
and not by bridge-train:

    observed linear output dtype: torch.bfloat16     (first attention projection, first forward)
    observed params norm: 38.123456                   (sqrt of the sum of squares of every parameter, after training)
"""

import json
import sys


def main() -> int:
    import torch

    from megatron_bridge_cli.config.precision import MIXED_PRECISION_PRESETS
    from megatron_bridge_cli.errors import ConfigError, RunFailure
    from megatron_bridge_cli.training import loop
    from megatron_bridge_cli.training.entry import run_training
    from megatron_bridge_cli.training.setup import unwrap
    from tests.integration.train_worker import build

    overrides = json.loads(sys.argv[1])
    preset = overrides.pop("mixed_precision", None)
    dtypes = {k: getattr(torch, overrides.pop(k)) for k in list(overrides) if k.endswith("dtype")}
    later = {k: overrides.pop(k) for k in list(overrides) if k.startswith("mixed_precision.")}
    cfg = build(overrides)
    if preset is not None:
        cfg.mixed_precision = MIXED_PRECISION_PRESETS[preset]()
    for path, value in {**later, **dtypes}.items():
        section, name = path.split(".")
        setattr(getattr(cfg, section), name, value)
        cfg.explicit_paths.add(path)

    real_train = loop.train

    def observed_train(final, built, *args):
        seen = []
        qkv = unwrap(built.model[0]).decoder.layers[0].self_attention.linear_qkv
        hook = qkv.register_forward_hook(lambda mod, inp, out: seen.append(out[0].dtype) if not seen else None)
        try:
            return real_train(final, built, *args)
        finally:
            hook.remove()
            unique = {id(p): p for chunk in built.model for p in chunk.parameters()}
            norm = torch.sqrt(sum((p.detach().double() ** 2).sum() for p in unique.values())).item()
            print(f"observed linear output dtype: {seen[0] if seen else None}", flush=True)
            print(f"observed params norm: {norm:.6f}", flush=True)

    loop.train = observed_train  # entry imports it at call time
    try:
        return run_training(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RunFailure as e:  # as cli.main reports it
        print(f"bridge-train: error: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":  # dist_checkpointing's saver spawns processes: the guard matters
    sys.exit(main())
