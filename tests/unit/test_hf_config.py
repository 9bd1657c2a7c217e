"""HF folders at the command line (issue 13): --model=hf:DIR, the recipe-vs-config.json check,
unsupported architectures, hub ids with no local copy, folders without safetensors; and the
config.json <-> provider mapping in both directions.

Folders are real: config.json written by transformers' own config classes, weights by
safetensors. Everything runs bridge-train's ``main()`` in-process (``--dry-run`` counts the
parameters on the meta device), so no weights need to be meaningful.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from megatron_bridge_cli.cli.main import main
from megatron_bridge_cli.hf.families import SUPPORTED_ARCHITECTURES, hf_config_for, provider_fields

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

TINY = dict(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2)
CONFIGS = {
    "llama31": lambda: transformers.LlamaConfig(**TINY, rope_theta=500000.0, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192}),
    "mistral": lambda: transformers.MistralConfig(**TINY, sliding_window=8),
    "qwen2": lambda: transformers.Qwen2Config(**TINY),
    "qwen3": lambda: transformers.Qwen3Config(**TINY, head_dim=32, tie_word_embeddings=True),
    "gpt2": lambda: transformers.GPT2Config(vocab_size=96, n_embd=64, n_layer=2, n_head=4, n_positions=64),
}


def _folder(root: Path, name: str, config, weights: bool = True) -> Path:
    """A real HF folder: config.json and (tiny) safetensors weights saved by transformers."""
    d = root / name
    model = transformers.AutoModelForCausalLM.from_config(config)
    if weights:
        model.save_pretrained(d)
    else:
        config.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf_cli")
    out = {name: _folder(root, name, make()) for name, make in CONFIGS.items()}
    falcon = _folder(root, "falcon", transformers.LlamaConfig(**TINY))
    data = json.loads((falcon / "config.json").read_text())
    data["architectures"] = ["FalconForCausalLM"]
    (falcon / "config.json").write_text(json.dumps(data))
    out["falcon"] = falcon
    pickles = _folder(root, "pickles", transformers.LlamaConfig(**TINY), weights=False)
    (pickles / "pytorch_model.bin").write_bytes(b"not loaded")
    out["pickles"] = pickles
    return out


def _error(capsys, argv) -> str:
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 2, (rc, out, err)
    assert err.count("bridge-train: error:") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("name", list(CONFIGS))
def test_model_from_hf_folder_has_the_released_parameter_count(folders, name, capsys):
    """--model=hf:DIR --dry-run builds the architecture from config.json alone: its exact
    parameter count equals the transformers model's."""
    folder = folders[name]
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(folder)
    expected = sum(p.numel() for p in hf_model.parameters())
    # (GPT-2: megatron-core's position table has seq_length rows, n_positions = 64 from config.json)
    assert main([f"--model=hf:{folder}", "--tokenizer.tokenizer_type=NullTokenizer", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^parameters: (\d+)$", out, re.M).group(1) == str(expected), out


def test_recipe_and_config_json_mismatch_names_both(folders, capsys):
    err = _error(capsys, ["--recipe", "llama3_8b", f"--checkpoint.pretrained_checkpoint={folders['llama31']}",
                          "--dry-run"])
    assert "config.json num_hidden_layers 2 vs --model.num_layers 32" in err
    assert "config.json hidden_size 64 vs --model.hidden_size 4096" in err
    assert "config.json rope_scaling true vs --model.rope_scaling false" in err
    assert f"--model=hf:{folders['llama31']}" in err  # the way out


def test_one_field_mismatch_with_the_matching_architecture(folders, capsys):
    err = _error(capsys, [f"--model=hf:{folders['qwen3']}", f"--checkpoint.pretrained_checkpoint={folders['qwen3']}",
                          "--tokenizer.tokenizer_type=NullTokenizer", "--model.rotary_base=10", "--dry-run"])
    assert re.search(r"config.json rope_theta \d+ vs --model.rotary_base 10 ", err), err
    assert err.count(" vs --model.") == 1


def test_unsupported_architecture_lists_the_supported(folders, capsys):
    err = _error(capsys, [f"--model=hf:{folders['falcon']}", "--dry-run"])
    assert "FalconForCausalLM is not supported" in err
    for arch in SUPPORTED_ARCHITECTURES:
        assert arch in err


@pytest.mark.parametrize("flag", ["--model=hf:", "--checkpoint.pretrained_checkpoint="])
def test_hub_id_is_never_downloaded(flag, capsys):
    err = _error(capsys, [f"{flag}meta-llama/Meta-Llama-3-8B", "--dry-run"])
    assert "no such local folder" in err and "download it first" in err
    assert "huggingface-cli download meta-llama/Meta-Llama-3-8B" in err


def test_folder_without_safetensors_is_refused(folders, capsys):
    err = _error(capsys, [f"--model=hf:{folders['pickles']}", f"--checkpoint.pretrained_checkpoint={folders['pickles']}",
                          "--tokenizer.tokenizer_type=NullTokenizer", "--dry-run"])
    assert "no model.safetensors" in err and "pytorch_model.bin" in err


def test_save_hf_needs_save(capsys, tmp_path):
    err = _error(capsys, [f"--checkpoint.save_hf={tmp_path / 'hf'}", "--dry-run"])
    assert "--checkpoint.save_hf" in err and "set --checkpoint.save" in err


@pytest.mark.parametrize("name", list(CONFIGS))
def test_exported_config_json_describes_the_same_model(folders, name):
    """config.json written for a provider maps back to the same provider fields."""
    from megatron_bridge_cli.config.models.gpt import GPTModelProvider

    hf = json.loads((folders[name] / "config.json").read_text())
    fields = provider_fields(hf, name)
    again = provider_fields(hf_config_for(GPTModelProvider(**fields)), name)
    assert again == fields
    loaded = transformers.AutoConfig.for_model(**{k: v for k, v in hf_config_for(GPTModelProvider(**fields)).items()
                                                  if k not in ("architectures", "dtype")})
    assert loaded.num_hidden_layers == 2
