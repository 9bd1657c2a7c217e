"""The generated flag table: every user field has a flag, nothing else does, and a snapshot pins it.

Changing a config class changes the flag list; the snapshot makes that a deliberate change:
    UPDATE_SNAPSHOTS=1 .venv/bin/python -m pytest tests/unit/test_cli_flags.py
rewrites tests/unit/snapshots/cli_flags.txt, which then shows up in the diff under review.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from pathlib import Path

import pytest

from megatron_bridge_cli.cli.flags import build_table, kind_class
from megatron_bridge_cli.config import SECTION_KINDS, ConfigContainer
from megatron_bridge_cli.typeinfo import init_fields

SNAPSHOT = Path(__file__).parent / "snapshots" / "cli_flags.txt"


def test_flag_list_snapshot():
    current = "\n".join(build_table().listing()) + "\n"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(current)
    if not SNAPSHOT.exists():  # a missing snapshot is a failure, not a fresh baseline
        pytest.fail(f"{SNAPSHOT} is missing; create it with UPDATE_SNAPSHOTS=1 and commit it")
    expected = SNAPSHOT.read_text()
    if current != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), current.splitlines(True),
                                            "snapshot", "generated", n=0))
        pytest.fail("the generated flag list changed; if that is intended, rerun with UPDATE_SNAPSHOTS=1 "
                    f"and commit {SNAPSHOT.name}:\n{diff}")


def _section_classes(name: str, declared: type) -> list[type]:
    return [declared] + [kind_class(f) for f in SECTION_KINDS.get(name, {}).values()]


def test_every_user_field_of_every_section_class_has_a_flag():
    table = build_table()
    hints = {f.name: f for f in dataclasses.fields(ConfigContainer)}
    for name in hints:
        declared = table.sections[name].declared
        for cls in _section_classes(name, declared):
            for f in init_fields(cls):
                assert f"{name}.{f.name}" in table.flags, (cls.__name__, f.name)
    assert len(table.flags) > 450  # megatron-core's TransformerConfig alone has ~250 fields


def test_derived_and_private_fields_have_no_flag():
    table = build_table()
    for path in ("train.data_parallel_size", "train.num_microbatches", "scheduler.lr_decay_steps",
                 "model.padded_vocab_size", "dataset.sample_length"):
        assert path not in table.flags
    assert not [p for p in table.flags if p.rsplit(".", 1)[1].startswith("_")]


def test_spellings_map_to_one_flag():
    table = build_table()
    flag = table.flags["model.num_layers"]
    for spelling in ("--model.num_layers", "--model.num-layers", "model.num_layers"):
        assert table.lookup(spelling) == (flag, None, False)
    assert table.lookup("--mixed-precision.fp8-recipe")[0].path == "mixed_precision.fp8_recipe"
    assert table.lookup("--no-model.bf16") == (table.flags["model.bf16"], None, True)
    assert table.lookup("--no-model.num_layers") == (None, None, False)  # only bools negate
    assert table.lookup("--model.no_sync_func")[0].name == "no_sync_func"  # a field named no_...
    assert table.lookup("--peft")[1].path == "peft"
    assert table.lookup("--rerun-state-machine.rerun-mode")[0].path == "rerun_state_machine.rerun_mode"


def test_listing_names_types_and_switches():
    lines = build_table().listing()
    assert "--model {gpt,t5,mamba}" in lines
    assert "--peft {lora,dora,null}" in lines
    assert "--model.num_layers INT" in lines
    assert "--model.bf16 BOOL | --no-model.bf16" in lines
    assert "--model.moe_layer_freq INT|LIST[INT]" in lines
    assert "--train.train_iters INT|null" in lines
