"""Local HuggingFace model folders: recognizing one, reading its config.json, and the
error for a hub id that has no local copy (bridge-train never downloads)."""

from __future__ import annotations

import json
import os
import re
from typing import Optional

from megatron_bridge_cli.errors import ConfigError

__all__ = [
    "CONFIG_FILE", "INDEX_FILE", "TOKENIZER_FILES", "is_hf_directory", "read_hf_config",
    "hf_directory_problem", "looks_like_hub_id",
]

CONFIG_FILE = "config.json"
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "generation_config.json", "chat_template.jinja")
"""Files copied along on export and read by the HuggingFace tokenizer."""

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def is_hf_directory(path: Optional[str]) -> bool:
    """A folder with a config.json: an HF model (weights are checked by hf_directory_problem)."""
    return bool(path) and os.path.isfile(os.path.join(str(path), CONFIG_FILE))


def looks_like_hub_id(path: str) -> bool:
    """``meta-llama/Meta-Llama-3-8B``: owner/name with no local folder of that name."""
    return bool(_HUB_ID.fullmatch(path)) and not os.path.exists(path)


def read_hf_config(path: str, flag: str) -> dict:
    """config.json of the HF folder ``path`` (named by ``--flag``) as a dict."""
    file = os.path.join(path, CONFIG_FILE)
    try:
        with open(file, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"--{flag}={path}: {file} cannot be read as JSON ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--{flag}={path}: {file} must hold a JSON object")
    return data


def weight_files(path: str) -> list[str]:
    """The safetensors files of the HF folder, from its index when it has one."""
    index = os.path.join(path, INDEX_FILE)
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            names = sorted(set(json.load(f).get("weight_map", {}).values()))
        return [os.path.join(path, n) for n in names]
    single = os.path.join(path, SINGLE_FILE)
    return [single] if os.path.isfile(single) else []


def hf_directory_problem(path: str, flag: str) -> Optional[str]:
    """Why ``--flag=path`` is not a loadable HF model folder, or None."""
    if not os.path.isfile(os.path.join(path, CONFIG_FILE)):
        return f"--{flag}={path}: no {CONFIG_FILE}; an HF model folder holds config.json and *.safetensors"
    try:
        files = weight_files(path)
    except (OSError, ValueError) as e:
        return f"--{flag}={path}: {INDEX_FILE} cannot be read ({e})"
    if not files:
        bins = [n for n in os.listdir(path) if n.endswith(".bin") or n.endswith(".pt")]
        hint = (f" (it has {bins[0]}: PyTorch pickles are not loaded; convert them to safetensors, e.g. "
                "with transformers' save_pretrained(safe_serialization=True))") if bins else ""
        return f"--{flag}={path}: no model.safetensors or {INDEX_FILE}{hint}"
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        return f"--{flag}={path}: {INDEX_FILE} names {os.path.basename(missing[0])}, which is missing"
    return None


def hub_id_problem(value: str, flag: str) -> Optional[str]:
    """A hub id with no local copy: say how to get one (bridge-train never downloads)."""
    if not looks_like_hub_id(value):
        return None
    return (f"--{flag}={value}: no such local folder. bridge-train reads HuggingFace models from local "
            f"folders only (no network access, also on offline clusters); download it first, e.g. "
            f"`huggingface-cli download {value} --local-dir /models/{value.split('/')[-1]}`, and pass that folder")
