"""Python overrides: every config class refuses an unknown field with a did-you-mean (the
Python twin of an unknown flag), keeps accepting its real fields, and the design's keyword
spellings work."""

from __future__ import annotations

import dataclasses

import pytest

from megatron_bridge_cli.config import SECTION_KINDS, ConfigContainer, GPTDatasetConfig, T5DatasetConfig
from megatron_bridge_cli.config.strict import UnknownFieldError
from megatron_bridge_cli.errors import ConfigError
from megatron_bridge_cli.recipes.gpt import gpt_cpu_tiny
from megatron_bridge_cli.training import finetune


def _every_config_object():
    """The default recipe's sections plus one instance of every section kind."""
    cfg = gpt_cpu_tiny()
    yield "container", cfg
    for f in dataclasses.fields(cfg):
        if getattr(cfg, f.name) is not None:
            yield f.name, getattr(cfg, f.name)
    for section, kinds in SECTION_KINDS.items():
        for kind, cls in kinds.items():
            yield f"{section}={kind}", cls()


@pytest.mark.parametrize("name, obj", list(_every_config_object()), ids=lambda x: x if isinstance(x, str) else "")
def test_unknown_field_is_refused_with_a_suggestion(name, obj):
    field = next(f for f in dataclasses.fields(obj) if f.init and not f.name.startswith("_"))
    setattr(obj, field.name, getattr(obj, field.name))  # a real field: fine
    typo = field.name[:-1] if len(field.name) > 3 else field.name + "x"
    with pytest.raises(UnknownFieldError, match=rf"{type(obj).__name__} has no field '{typo}'; did you mean '{field.name}'"):
        setattr(obj, typo, 1)
    assert typo not in vars(obj)


def test_the_issue_example_and_that_finalized_copies_stay_open_to_megatron_core():
    cfg = gpt_cpu_tiny()
    with pytest.raises(AttributeError, match="did you mean 'train_iters'"):
        cfg.train.train_iter = 500
    cfg.train.train_iters = 7
    final = cfg.finalize(1)
    assert final.train.total_iters == 7
    final.model.some_megatron_core_attribute = 1  # megatron-core code sets attributes on the configs it gets


def test_dataset_sequence_length_keyword():
    assert GPTDatasetConfig(sequence_length=2048).seq_length == 2048
    assert T5DatasetConfig(sequence_length=512).seq_length == 512
    assert GPTDatasetConfig(seq_length=2048, sequence_length=2048).seq_length == 2048
    with pytest.raises(ConfigError, match="seq_length=1024 and sequence_length=2048 name the same setting"):
        GPTDatasetConfig(seq_length=1024, sequence_length=2048)
    assert "sequence_length" not in ConfigContainer.__dataclass_fields__  # one canonical name in YAML


def test_finetune_needs_base_weights():
    with pytest.raises(ConfigError, match="finetune\\(\\) needs base weights"):
        finetune(gpt_cpu_tiny())


def test_forward_step_signatures():
    from megatron_bridge_cli.training.entry import _user_step

    def two(data_iterator, model): ...
    def three(state, data_iterator, model): ...
    def one(batch): ...

    assert _user_step(two, "state") is two
    assert _user_step(three, "state").args == ("state",)
    with pytest.raises(ConfigError, match="takes 1 arguments; it must take \\(data_iterator, model\\)"):
        _user_step(one, "state")
