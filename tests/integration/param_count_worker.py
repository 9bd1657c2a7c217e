"""torchrun worker: build real TP/PP shards of small GPTs and print each rank's parameter count.

argv: one or more LAYOUT arguments 'TP,PP,tied|untied[,EP]' (with EP: 4 experts of an MoE MLP,
expert TP 1); prints 'COUNTS {layout: [per-rank counts]}'.
"""

from __future__ import annotations

import json
import sys

import torch


def small_gpt(tp: int, pp: int, tied: bool, ep: int | None = None):
    from megatron_bridge_cli.config import GPTModelProvider

    moe = {} if ep is None else dict(
        num_moe_experts=4, moe_router_topk=2, moe_ffn_hidden_size=48, moe_shared_expert_intermediate_size=32,
        expert_model_parallel_size=ep, expert_tensor_parallel_size=1,
    )
    return GPTModelProvider(
        num_layers=4, hidden_size=64, num_attention_heads=4, num_query_groups=2, ffn_hidden_size=96,
        vocab_size=300, seq_length=32, position_embedding_type="rope", normalization="RMSNorm",
        gated_linear_unit=True, add_bias_linear=False, share_embeddings_and_output_weights=tied,
        tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp, pipeline_dtype=torch.float32, **moe,
    )


def parse(layout: str) -> tuple[int, int, bool, int | None]:
    tp, pp, tied, *ep = layout.split(",")
    return int(tp), int(pp), tied == "tied", int(ep[0]) if ep else None


def main() -> None:
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

    from megatron_bridge_cli.training.cpu_compat import apply_cpu_compat

    apply_cpu_compat()
    torch.distributed.init_process_group("gloo")
    results = {}
    for layout in sys.argv[1:]:
        tp, pp, tied, ep = parse(layout)
        parallel_state.initialize_model_parallel(tp, pp, expert_model_parallel_size=ep or 1,
                                                 expert_tensor_parallel_size=1 if ep else None)
        model_parallel_cuda_manual_seed(1)
        provider = small_gpt(tp, pp, tied, ep)
        provider.finalize()
        local = sum(p.numel() for p in provider.provide().parameters())
        counts = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(counts, local)
        results[layout] = counts
        parallel_state.destroy_model_parallel()
    if torch.distributed.get_rank() == 0:
        print("COUNTS " + json.dumps(results))
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
