"""Worker of tests/integration/test_peft.py: train_worker's overrides plus ``"peft": "lora"|"dora"``
(and ``peft.*`` fields), with two test hooks.

    python tests/integration/peft_worker.py train '{"peft": "lora", ...}'
        trains (run_training); before and after training it records every frozen and every
        trainable parameter and prints ``frozen unchanged: N/M`` and ``adapters changed: N/M``.
    python tests/integration/peft_worker.py logits OUT.pt '{...}' [OUT2.pt '{...}' ...]
        for each: builds and loads the model as training would, runs one forward pass on fixed tokens
        (fp32) and saves rank 0's logits to OUT.pt.
"""

import json
import sys


def build(overrides: dict):
    from megatron_bridge_cli.config.peft import PEFT_KINDS
    from tests.integration.train_worker import build as build_cfg

    overrides = dict(overrides)
    kind = overrides.pop("peft", None)
    fields = {k: overrides.pop(k) for k in list(overrides) if k.startswith("peft.")}
    cfg = build_cfg(overrides)
    if kind:
        cfg.peft = PEFT_KINDS[kind]()
        for path, value in fields.items():
            setattr(cfg.peft, path.split(".", 1)[1], value)
    return cfg


def watch_training() -> None:
    """Wrap loop.train: snapshot the parameters before, compare after."""
    import torch

    from megatron_bridge_cli.training import loop
    from megatron_bridge_cli.training.setup import unwrap

    real_train = loop.train

    def train(cfg, built, *args, **kwargs):
        params = [(n, p) for c in built.model for n, p in unwrap(c).named_parameters()]
        before = {id(p): p.detach().clone() for _, p in params}
        result = real_train(cfg, built, *args, **kwargs)
        frozen = [(n, p) for n, p in params if not p.requires_grad]
        trained = [(n, p) for n, p in params if p.requires_grad]
        same = sum(torch.equal(before[id(p)], p.detach()) for _, p in frozen)
        changed = sum(not torch.equal(before[id(p)], p.detach()) for _, p in trained)
        names = sorted({n.rsplit(".", 1)[-1] for n, _ in trained})
        print(f"rank {torch.distributed.get_rank()}: frozen unchanged: {same}/{len(frozen)}; "
              f"adapters changed: {changed}/{len(trained)} {names}", flush=True)
        return result

    loop.train = train


def logits(out: str, overrides: dict) -> int:
    import torch

    from megatron_bridge_cli.training import setup as S
    from megatron_bridge_cli.training.checkpointing import load_checkpoint
    from megatron_bridge_cli.training.cpu_compat import apply_cpu_compat
    from megatron_bridge_cli.training.env import detect_world
    from megatron_bridge_cli.training.preflight import prepare

    world = detect_world()
    final = prepare(build(overrides), world.world_size)
    apply_cpu_compat()
    S.init_distributed(final, world)
    try:
        S.set_seeds(final)
        model = S.build_model(final)
        optimizer = S.build_optimizer(final, model)
        built = S.Built(model=model, optimizer=optimizer, scheduler=S.build_scheduler(final, optimizer),
                        state=S.TrainingState())
        load_checkpoint(final, built)
        g = torch.Generator().manual_seed(1234)
        seq = final.model.seq_length
        tokens = torch.randint(0, 256, (2, seq), generator=g)
        position_ids = torch.arange(seq).unsqueeze(0).expand(2, -1)
        gpt = S.unwrap(model[0]).eval()
        with torch.no_grad():
            out_logits = gpt(tokens, position_ids, None)
        from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

        out_logits = gather_from_tensor_model_parallel_region(out_logits)
        if torch.distributed.get_rank() == 0:
            torch.save(out_logits.float().cpu(), out)
        return 0
    finally:
        S.destroy_distributed()


def main() -> int:
    from megatron_bridge_cli.errors import ConfigError
    from megatron_bridge_cli.training.entry import run_training

    try:
        if sys.argv[1] == "logits":  # OUT CONFIG [OUT CONFIG ...]: several models in one process
            pairs = sys.argv[2:]
            for out, overrides in zip(pairs[::2], pairs[1::2]):
                logits(out, json.loads(overrides))
            return 0
        watch_training()
        return run_training(build(json.loads(sys.argv[2])))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # dist_checkpointing's saver spawns processes: the guard matters
    sys.exit(main())
