"""The ConfigContainer tree: sections, defaults, Python overrides, model independence."""

import dataclasses

import pytest
import torch
from megatron.core.distributed import DistributedDataParallelConfig as McoreDDPConfig
from megatron.core.optimizer import OptimizerConfig as McoreOptimizerConfig
from megatron.core.transformer import TransformerConfig

from megatron_bridge_cli.config import (
    ConfigContainer,
    DistributedInitConfig,
    GPTModelProvider,
    MambaModelProvider,
    RerunStateMachineConfig,
    RNGConfig,
    T5ModelProvider,
    finalize,
)
from tests.factories import tiny_container

REQUIRED = ["model", "train", "optimizer", "scheduler", "dataset", "logger", "tokenizer", "checkpoint"]
DEFAULTED = {"dist": DistributedInitConfig, "ddp": McoreDDPConfig, "rng": RNGConfig,
             "rerun_state_machine": RerunStateMachineConfig}
OPTIONAL = ["mixed_precision", "comm_overlap", "peft", "profiling", "ft", "straggler",
            "nvrx_straggler", "inprocess_restart"]


def test_sections_split_into_required_defaulted_optional():
    fields = {f.name: f for f in dataclasses.fields(ConfigContainer)}
    assert list(fields) == REQUIRED + list(DEFAULTED) + OPTIONAL
    for name in REQUIRED:
        assert fields[name].default is dataclasses.MISSING and fields[name].default_factory is dataclasses.MISSING
    with pytest.raises(TypeError):
        ConfigContainer()  # required sections cannot be left out


def test_defaulted_and_optional_sections():
    cfg = tiny_container()
    for name, cls in DEFAULTED.items():
        assert isinstance(getattr(cfg, name), cls), name
    for name in OPTIONAL:
        assert getattr(cfg, name) is None, name
    assert cfg.rng.seed == 1234
    assert cfg.dist.distributed_backend is None and cfg.dist.distributed_timeout_minutes == 10
    assert cfg.rerun_state_machine.rerun_mode == "disabled"


def test_sections_are_megatron_core_configs():
    cfg = tiny_container()
    assert isinstance(cfg.model, TransformerConfig)
    assert isinstance(cfg.optimizer, McoreOptimizerConfig)
    assert isinstance(cfg.ddp, McoreDDPConfig)
    for provider in (GPTModelProvider, T5ModelProvider, MambaModelProvider):
        assert issubclass(provider, TransformerConfig)


def test_every_config_field_has_a_docstring_for_help():
    """Our own dataclasses document each field they declare (the text becomes --help)."""
    import megatron_bridge_cli.config as config
    from megatron_bridge_cli.cli.docs import field_docs  # the extractor --help uses

    checked = 0
    for name in config.__all__:
        cls = getattr(config, name)
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            continue
        own = set(cls.__dict__.get("__annotations__", {}))
        docs = field_docs(cls)
        for f in dataclasses.fields(cls):
            if f.name in own:
                assert docs.get(f.name, "").strip(), f"{cls.__name__}.{f.name} has no docstring"
                checked += 1
    assert checked > 150


def test_megatron_post_init_is_deferred():
    model = GPTModelProvider(num_layers=2, hidden_size=64, num_attention_heads=4)
    assert model.ffn_hidden_size is None and model.kv_channels is None and model.init_method is None
    # an invalid combination does not raise at construction, only at finalize
    bad = GPTModelProvider(num_layers=2, hidden_size=64, num_attention_heads=4, fp16=True, bf16=True)
    with pytest.raises(ValueError):
        bad.finalize()


def test_override_after_creation_then_finalize_gives_fresh_derived_values():
    cfg = tiny_container()
    first = finalize(cfg, world_size=2)
    assert first.model.ffn_hidden_size == 256 and first.train.num_microbatches == 2
    cfg.model.hidden_size = 128
    cfg.train.global_batch_size = 16
    cfg.train.train_iters = 50
    second = finalize(cfg, world_size=2)
    assert second.model.ffn_hidden_size == 512
    assert second.model.kv_channels == 32
    assert second.train.num_microbatches == 4
    assert second.scheduler.lr_decay_steps == 50 * 16
    # the user's container keeps its own (unset) values
    assert cfg.model.ffn_hidden_size is None and cfg.train.num_microbatches is None


def test_finalize_twice_gives_the_same_result():
    cfg = tiny_container()
    once = finalize(cfg, world_size=2)
    twice = finalize(once, world_size=2)
    for section in ("model", "train", "scheduler", "optimizer", "dataset"):
        a, b = getattr(once, section), getattr(twice, section)
        for f in dataclasses.fields(a):
            assert getattr(a, f.name) == getattr(b, f.name) or f.name.endswith("init_method"), (section, f.name)
    assert once.to_yaml() == twice.to_yaml()


def test_derived_values():
    cfg = tiny_container(global_batch_size=16, micro_batch_size=2, train_iters=None, train_samples=1600)
    cfg.model.tensor_model_parallel_size = 2
    cfg.train.eval_micro_batch_size = 4
    cfg.scheduler.lr_warmup_iters = 0
    cfg.scheduler.lr_warmup_fraction = 0.1
    run = finalize(cfg, world_size=4)
    assert run.train.data_parallel_size == 2
    assert run.train.num_microbatches == 16 // (2 * 2)
    assert run.train.total_iters == 100
    assert run.train.eval_num_microbatches == 16 // (4 * 2)
    assert run.scheduler.lr_decay_steps == 1600 and run.scheduler.lr_warmup_steps == 160
    assert run.model.padded_vocab_size == 256  # 128 rounded up to 128 x TP
    assert run.dataset.sample_length == 32
    assert run.model.num_query_groups == 4 and run.model.kv_channels == 16


def test_vocab_size_from_tokenizer():
    cfg = tiny_container()
    cfg.model.vocab_size = None
    cfg.tokenizer.tokenizer_type = "ByteLevelTokenizer"
    assert finalize(cfg).model.padded_vocab_size == 384  # 257 -> next multiple of 128
    cfg.tokenizer.tokenizer_type = "NullTokenizer"
    cfg.tokenizer.vocab_size = 1023  # + end-of-document = 1024
    assert finalize(cfg).model.padded_vocab_size == 1024
    cfg.tokenizer.vocab_size = 1024
    assert finalize(cfg).model.padded_vocab_size == 1152


def test_mixed_precision_preset_applies_and_explicit_values_win(caplog):
    from megatron_bridge_cli.config import MIXED_PRECISION_PRESETS

    cfg = tiny_container()
    cfg.mixed_precision = MIXED_PRECISION_PRESETS["bf16_mixed"]()
    run = finalize(cfg)
    assert run.model.bf16 and run.optimizer.bf16 and run.model.params_dtype == torch.bfloat16
    cfg.model.params_dtype = torch.float32
    cfg.explicit_paths.add("model.params_dtype")
    with caplog.at_level("WARNING"):
        run = finalize(cfg)
    assert run.model.params_dtype == torch.float32 and run.model.bf16
    assert "model.params_dtype" in caplog.text and "bfloat16" in caplog.text


def test_gpt_provider_builds_a_model_standalone():
    """Model independence: a provider alone (vocab + seq length) builds a working GPTModel."""
    from tests.parallel import single_rank_parallel_state

    provider = GPTModelProvider(num_layers=2, hidden_size=32, num_attention_heads=4, vocab_size=100, seq_length=16)
    with single_rank_parallel_state():
        model = provider.provide()
        tokens = torch.randint(0, 100, (2, 16))
        position_ids = torch.arange(16).expand(2, 16)
        loss = model(tokens, position_ids, None, labels=tokens)
    assert loss.shape == (2, 16) and torch.isfinite(loss).all()
    assert model.embedding.word_embeddings.weight.shape == (128, 32)  # padded vocab
