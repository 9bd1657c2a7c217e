"""Real client files: Megatron-Bridge's YAML override files (../shared/peer-cases/yaml, third-party
data, read in place and never copied) applied with --config-file onto the matching built-in
recipe. Each either loads, with its values landing, or fails naming every key we do not have.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from megatron_bridge_cli.cli.main import main

# Beside the checkout (../shared), or where this workplace keeps it for a checkout elsewhere (CI).
PEER = next((p for p in (Path(__file__).resolve().parents[3] / "shared" / "peer-cases" / "yaml",
                         Path("/work/shared/peer-cases/yaml")) if p.is_dir()), Path("../shared/peer-cases/yaml"))

# file -> (matching recipe, keys bridge-train does not model; empty: the file loads)
CASES = {
    "llama32_1b_pretrain": ("llama3_8b", []),
    "llama32_1b_finetune": ("llama3_8b", []),
    "quantized_llama3_8b_pretrain_override_example": ("llama3_8b", []),
    "llama32_3b-1b_distill_override_example": (
        "llama3_8b", ["'teacher' in section 'model'", "'kd_config' in section 'model'",
                      "'use_megatron_fsdp' in section 'dist'", "'use_torch_fsdp2' in section 'dist'"]),
    "qwen25_vl_pretrain_override_example": (
        "qwen25_7b", ["'use_megatron_fsdp' in section 'dist'", "'use_torch_fsdp2' in section 'dist'"]),
    "qwen3_next_80b_a3b_finetune_override_example": (
        "qwen3_8b", ["'finetune_lr' in section 'optimizer'", "'use_megatron_fsdp' in section 'dist'",
                     "'use_torch_fsdp2' in section 'dist'"]),
    "qwen3_vl_pretrain_override_example": (
        "qwen3_8b", ["'use_hf_vision_model' in section 'model'", "'freeze_language_model' in section 'model'",
                     "'freeze_vision_model' in section 'model'", "'freeze_vision_projection' in section 'model'",
                     "'use_megatron_fsdp' in section 'dist'", "'use_torch_fsdp2' in section 'dist'",
                     "'log_throughput_to_tensorboard' in section 'logger'",
                     "'log_timers_to_tensorboard' in section 'logger'",
                     "'log_validation_ppl_to_tensorboard' in section 'logger'",
                     "'log_l2_norm_grad_to_tensorboard' in section 'logger'",
                     "'enable_in_batch_packing' in section 'dataset'", "'nvtx_ranges' in section 'profiling'"]),
    "nemotron_nano_v2_vl_video": (
        "gpt_cpu_tiny", ["'freeze_language_model' in section 'model'", "'freeze_vision_model' in section 'model'",
                         "'freeze_vision_projection' in section 'model'", "'use_megatron_fsdp' in section 'dist'",
                         "'use_torch_fsdp2' in section 'dist'", "'source' in section 'dataset'"]),
}

pytestmark = pytest.mark.skipif(not PEER.is_dir(), reason="../shared/peer-cases/yaml is not on this machine")


def test_every_peer_file_has_a_case():
    assert sorted(p.stem for p in PEER.glob("*.yaml")) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_peer_file_loads_or_names_every_key_we_lack(name, capsys):
    recipe, missing = CASES[name]
    rc = main(["--recipe", recipe, "--config-file", str(PEER / f"{name}.yaml"), "--print-config"])
    out, err = capsys.readouterr()
    if not missing:
        assert rc == 0, err
        return
    assert rc == 2 and out == "" and "Traceback" not in err
    assert err.startswith(f"bridge-train: error: config file '{PEER / name}.yaml': {len(missing)} problems:")
    for key in missing:
        assert f"unknown key {key}" in err
    assert err.count("\n  - ") == len(missing)


def test_peer_values_land_with_their_types(capsys):
    import yaml

    def printed(name: str, recipe: str) -> dict:
        assert main(["--recipe", recipe, "--config-file", str(PEER / f"{name}.yaml"), "--print-config"]) == 0
        return yaml.safe_load(capsys.readouterr().out)

    pretrain = printed("llama32_1b_pretrain", "llama3_8b")
    assert pretrain["train"]["train_iters"] == 100 and pretrain["optimizer"]["min_lr"] == 3e-5
    assert pretrain["model"]["seq_length"] == 4096 and pretrain["scheduler"]["lr_decay_style"] == "cosine"
    finetune = printed("llama32_1b_finetune", "llama3_8b")  # peft: {dim: 8, alpha: 16} switches LoRA on
    assert finetune["peft"]["_target_"].endswith("LoRAConfig") and (finetune["peft"]["dim"], finetune["peft"]["alpha"]) == (8, 16)
    quantized = printed("quantized_llama3_8b_pretrain_override_example", "llama3_8b")
    assert quantized["model"]["gradient_accumulation_fusion"] is False  # YAML's capitalised False
    assert quantized["checkpoint"]["finetune"] is True
