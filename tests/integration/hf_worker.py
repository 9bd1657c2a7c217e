"""Worker of tests/integration/test_hf.py: import HF checkpoints into megatron-core models
built the way training builds them, and record their logits.

    torchrun --nproc-per-node N tests/integration/hf_worker.py SPEC.json

SPEC: ``{"tp": T, "pp": P, "seq": S, "cases": [{"arch": HF_DIR, "weights": DIR, "logits": OUT.pt,
"export": HF_OUT (optional, TP=PP=1 only)}, ...]}``. For each case the model is
``--model=hf:HF_DIR`` at TP x PP, its weights ``--checkpoint.pretrained_checkpoint=DIR`` (an HF
folder or a bridge-train checkpoint); one forward pass in fp32 on fixed tokens (seed 1234),
stages chained with send/recv, logits gathered over TP, saved by the last stage's first rank.
``export`` writes the imported model back out as an HF folder (hf.export.write_hf_folder).
"""

import json
import sys

SEED = 1234


def tokens_for(vocab: int, seq: int):
    import torch

    g = torch.Generator().manual_seed(SEED)
    return torch.randint(0, vocab, (2, seq), generator=g)


def run_case(case: dict, tp: int, pp: int, seq: int) -> None:
    import torch
    from megatron.core import parallel_state as ps
    from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

    from megatron_bridge_cli.config.models.gpt import GPTModelProvider
    from megatron_bridge_cli.recipes.gpt import gpt_cpu_tiny
    from megatron_bridge_cli.training import setup as S
    from megatron_bridge_cli.training.checkpointing import load_checkpoint
    from megatron_bridge_cli.training.env import detect_world
    from megatron_bridge_cli.training.preflight import prepare

    world = detect_world()
    cfg = gpt_cpu_tiny()
    cfg.model = GPTModelProvider.from_hf(case["arch"])
    cfg.model.tensor_model_parallel_size, cfg.model.pipeline_model_parallel_size = tp, pp
    cfg.model.seq_length = seq
    cfg.model.hidden_dropout = cfg.model.attention_dropout = 0.0
    cfg.tokenizer.tokenizer_type = "NullTokenizer"
    cfg.explicit_paths.add("tokenizer.tokenizer_type")
    cfg.checkpoint.pretrained_checkpoint = case["weights"]
    cfg.train.micro_batch_size, cfg.train.global_batch_size = 1, world.world_size // (tp * pp)
    cfg.dataset.data_path = None
    final = prepare(cfg, world.world_size)
    S.init_distributed(final, world)
    try:
        S.set_seeds(final)
        model = S.build_model(final)
        built = S.Built(model=model, optimizer=None, scheduler=None, state=S.TrainingState())
        load_checkpoint(final, built)
        gpt = S.unwrap(model[0]).eval()
        tokens = tokens_for(final.model.vocab_size, seq)
        positions = torch.arange(seq).unsqueeze(0).expand(2, -1)
        stage, stages = ps.get_pipeline_model_parallel_rank(), ps.get_pipeline_model_parallel_world_size()
        group = ps.get_pipeline_model_parallel_group()
        ranks = torch.distributed.get_process_group_ranks(group)
        with torch.no_grad():
            if stage > 0:  # hidden states [s, b, h] from the previous stage
                hidden = torch.empty(seq, 2, final.model.hidden_size)
                torch.distributed.recv(hidden, src=ranks[stage - 1], group=group)
                gpt.set_input_tensor(hidden)
            out = gpt(tokens, positions, None)
            if stage < stages - 1:
                torch.distributed.send(out.contiguous(), dst=ranks[stage + 1], group=group)
                return
            logits = gather_from_tensor_model_parallel_region(out)
        if ps.get_tensor_model_parallel_rank() == 0:
            torch.save(logits.float().cpu(), case["logits"])
            if case.get("export"):
                from megatron_bridge_cli.hf.directory import read_hf_config
                from megatron_bridge_cli.hf.export import model_tensors, write_hf_folder
                from megatron_bridge_cli.hf.families import hf_config_for

                source = read_hf_config(case["arch"], "arch")
                write_hf_folder(model_tensors([S.unwrap(c) for c in model], final.model),
                                hf_config_for(final.model, source), case["export"], source=case["arch"])
    finally:
        ps.destroy_model_parallel()  # the process group stays for the next case


def main() -> int:
    import warnings

    from megatron_bridge_cli.training import setup as S
    from megatron_bridge_cli.training.cpu_compat import apply_cpu_compat

    warnings.filterwarnings("ignore")
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    if S.on_cpu():
        apply_cpu_compat()
    try:
        for case in spec["cases"]:
            run_case(case, spec["tp"], spec["pp"], spec["seq"])
    finally:
        S.destroy_distributed()
    return 0


if __name__ == "__main__":  # dist_checkpointing may spawn processes: the guard matters
    sys.exit(main())
