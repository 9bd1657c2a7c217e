"""T5 span corruption: sentinel tokens, megatron-core's T5 dataset over a file written here,
mock T5 data, the attention masks of the forward step, and the checks of T5 runs."""

from __future__ import annotations

import numpy
import pytest
import torch

from megatron_bridge_cli.config import ConfigContainer, GPTDatasetConfig, T5DatasetConfig, TokenizerConfig, finalize
from megatron_bridge_cli.data.datasets import build_datasets
from megatron_bridge_cli.training.preflight import prepare
from megatron_bridge_cli.data.preprocess import split_sentences, write_indexed_dataset
from megatron_bridge_cli.data.tokenizers import ByteLevelTokenizer, build_tokenizer
from megatron_bridge_cli.errors import ConfigError, ValidationError
from megatron_bridge_cli.recipes import RECIPES
from tests.parallel import single_rank_parallel_state


def tiny_t5(**fields) -> ConfigContainer:
    """t5_220m shrunk as the README shows, byte-level with 32 sentinels."""
    cfg = RECIPES["t5_220m"](precision=None, global_batch_size=8, micro_batch_size=2, train_iters=10)
    m = cfg.model
    m.num_layers = m.encoder_num_layers = 2
    m.hidden_size, m.num_attention_heads, m.kv_channels, m.ffn_hidden_size = 64, 4, 16, 256
    m.seq_length, m.encoder_seq_length, m.vocab_size = 64, 128, None
    cfg.tokenizer.tokenizer_type, cfg.tokenizer.vocab_extra_ids = "ByteLevelTokenizer", 32
    cfg.scheduler.lr_warmup_iters, cfg.train.eval_iters, cfg.dataset.num_workers = 1, 1, 0
    for path, value in fields.items():
        section, name = path.split("__")
        setattr(getattr(cfg, section), name, value)
    return cfg


# --------------------------------------------------------------------------- tokenizer
def test_byte_level_tokenizer_appends_start_mask_and_sentinels():
    tok = build_tokenizer(TokenizerConfig(tokenizer_type="ByteLevelTokenizer", vocab_extra_ids=4))
    assert (tok.eod, tok.bos, tok.mask, tok.additional_special_tokens_ids) == (256, 257, 258, [259, 260, 261, 262])
    assert tok.vocab_size == 263 and tok.eos == tok.eod == tok.sep == tok.cls
    assert tok.inv_vocab[65] == "A" and tok.inv_vocab[259] == "<extra_id_0>" and len(tok.inv_vocab) == 263
    assert tok.tokenize("hé") == ByteLevelTokenizer().tokenize("hé")  # preprocessed data keeps its ids
    assert tok.detokenize([104, 259, 105, 256]) == "hi"
    with pytest.raises(NotImplementedError):
        tok.pad  # megatron-core then pads with -1, which collides with no id
    # finalize derives the same embedding size
    assert finalize(tiny_t5(), 1).model.vocab_size == 257 + 2 + 32


def test_null_tokenizer_leaves_room_for_the_sentinels_in_the_model_vocabulary():
    tok = build_tokenizer(TokenizerConfig(vocab_extra_ids=100), model_vocab_size=32128)  # t5_220m's default
    assert tok.vocab_size == 32128 and tok.eod == 32025
    assert tok.additional_special_tokens_ids == list(range(32028, 32128))
    assert tok.inv_vocab[7] == "7" and len(tok.inv_vocab) == 32128
    with pytest.raises(ConfigError, match=r"--model.vocab_size \(300\) is smaller .* \(359"):
        build_tokenizer(TokenizerConfig(tokenizer_type="ByteLevelTokenizer", vocab_extra_ids=100), model_vocab_size=300)


# --------------------------------------------------------------------------- samples
def _check_span_corruption(sample, tok, max_spans: int) -> list[int]:
    """Assert the sentinel structure of one sample; return the text it was made from (ids)."""
    sentinels = tok.additional_special_tokens_ids
    n_enc, n_dec = int(sample["enc_mask"].sum()), int(sample["dec_mask"].sum())
    enc, dec = [int(i) for i in sample["text_enc"][:n_enc]], [int(i) for i in sample["text_dec"][:n_dec]]
    labels = [int(i) for i in sample["labels"][:n_dec]]
    assert not sample["enc_mask"][n_enc:].any() and not sample["dec_mask"][n_dec:].any()  # padding at the end
    assert (sample["loss_mask"] == sample["dec_mask"]).all()  # the loss covers exactly the targets
    assert dec[0] == tok.bos and labels == dec[1:] + [tok.eos]  # teacher forcing: targets are inputs shifted
    used = [i for i in enc if i in sentinels]
    spans = len(used)
    assert 1 <= spans <= max_spans and used == sentinels[:spans]  # one sentinel per span, in order
    assert [i for i in dec if i in sentinels] == used  # the decoder names the same spans
    # Each sentinel in the encoder input stands for the tokens after it in the decoder input.
    span_tokens, current = {}, None
    for i in dec[1:]:
        if i in sentinels:
            current = i
            span_tokens[current] = []
        else:
            span_tokens[current].append(i)
    assert all(span_tokens[s] for s in used)
    assert sum(len(v) for v in span_tokens.values()) <= max_spans  # at most 15% of the tokens masked
    original = []
    for i in enc:
        original += span_tokens[i] if i in sentinels else [i]
    return original


@pytest.fixture
def indexed_text(tmp_path):
    docs = ["".join(f"Document {d}, line {i}: the {d * 7 + i}th brown fox jumps.\n" for i in range(40))
            for d in range(12)]
    prefix = tmp_path / "fox"
    stats = write_indexed_dataset(docs, ByteLevelTokenizer(), prefix, sentences=True)
    assert stats["documents"] == 12 and stats["sequences"] == 12 * 40
    return str(prefix), docs


def test_span_corruption_samples_from_an_indexed_file(indexed_text):
    prefix, docs = indexed_text
    cfg = prepare(tiny_t5(dataset__data_path=[prefix], dataset__split="80,10,10"), 1)
    tok = build_tokenizer(cfg.tokenizer, cfg.model.vocab_size)
    with single_rank_parallel_state():
        train, valid, test = build_datasets(cfg, tok, needs_data=True)
    assert type(train).__name__ == "T5MaskedWordPieceDataset" and len(train) >= 80 and len(valid) and len(test)
    for idx in range(24):
        sample = train[idx]
        assert sample["text_enc"].shape == (128,) and sample["text_dec"].shape == (64,)
        original = _check_span_corruption(sample, tok, max_spans=int(0.15 * 126))
        text = tok.detokenize(original)
        assert len(original) <= 126 and any(text in doc for doc in docs), text  # a stretch of one document


def test_mock_t5_data_has_the_same_structure():
    cfg = finalize(tiny_t5(), 1)
    assert cfg.dataset.uses_mock_data()
    tok = build_tokenizer(cfg.tokenizer, cfg.model.vocab_size)
    with single_rank_parallel_state():
        train, valid, _ = build_datasets(cfg, tok, needs_data=True)
    assert type(train).__name__ == "MockT5Dataset" and len(train) >= 80 and len(valid) > 0
    steps = []
    for idx in range(16):
        original = _check_span_corruption(train[idx], tok, max_spans=int(0.15 * 126))
        steps += [(b - a) % 256 for a, b in zip(original, original[1:]) if max(a, b) < 256]
    assert sum(s == 1 for s in steps) > 0.8 * len(steps)  # sentences count up: spans are predictable


def test_preprocessing_splits_lines_and_long_prose_at_sentence_ends():
    text = "def f():\n    return 1\n" + "Prose goes on. " * 20 + "The end!\n"
    pieces = split_sentences(text)
    assert "".join(pieces) == text
    assert pieces[:2] == ["def f():\n", "    return 1\n"] and pieces[2] == "Prose goes on. " and pieces[-1] == "The end!\n"


def test_documents_t5_cannot_sample_are_refused_before_training(tmp_path):
    from megatron.core.datasets.indexed_dataset import IndexedDataset, IndexedDatasetBuilder

    from megatron_bridge_cli.data.t5_data import usable_documents

    prefix = str(tmp_path / "long")
    builder = IndexedDatasetBuilder(prefix + ".bin", dtype=numpy.uint16)
    builder.add_document(numpy.full(600, 65), [600])  # one long sentence: usable (one sample)
    builder.add_document(numpy.full(610, 66), [10, 600])  # two sentences, one of > 512 tokens: skipped
    builder.finalize(prefix + ".idx")
    assert usable_documents(IndexedDataset(prefix)).tolist() == [True, False]
    bad = str(tmp_path / "bad")
    builder = IndexedDatasetBuilder(bad + ".bin", dtype=numpy.uint16)
    builder.add_document(numpy.full(610, 66), [10, 600])
    builder.finalize(bad + ".idx")
    with pytest.raises(ConfigError, match=r"--dataset.valid_data_path: .*bad \(1 documents\) has no document T5 "
                                          r"can sample from .* --split-sentences"):
        prepare(tiny_t5(dataset__train_data_path=[prefix], dataset__valid_data_path=[bad]), 1)
    prepare(tiny_t5(dataset__train_data_path=[prefix], dataset__valid_data_path=[prefix]), 1)  # the first document is enough
    with pytest.raises(ConfigError, match=r"--dataset.split='50,50' leaves the validation split .* T5 can sample"):
        prepare(tiny_t5(dataset__data_path=[prefix], dataset__split="50,50"), 1)


# --------------------------------------------------------------------------- forward step
def test_local_attention_masks_hide_padding_and_the_future():
    from megatron_bridge_cli.training.t5_step import attention_masks

    enc_real = torch.tensor([[True, True, False]])
    dec_real = torch.tensor([[True, True, False]])
    enc, dec, enc_dec = attention_masks(enc_real, dec_real, local=True)
    assert enc.shape == (1, 1, 3, 3) and dec.shape == (1, 1, 3, 3) and enc_dec.shape == (1, 1, 3, 3)
    assert enc[0, 0].tolist() == [[False, False, True], [False, False, True], [True, True, True]]
    assert dec[0, 0].tolist() == [[False, True, True], [False, False, True], [True, True, True]]
    assert enc_dec[0, 0].tolist() == [[False, False, True], [False, False, True], [True, True, True]]


# --------------------------------------------------------------------------- validation
def _problems(cfg, world_size: int = 1) -> str:
    with pytest.raises(ValidationError) as e:
        finalize(cfg, world_size)
    return str(e.value)


def test_t5_validation_reports_every_problem_naming_the_flag():
    cfg = tiny_t5(model__pipeline_model_parallel_size=2, tokenizer__vocab_extra_ids=4, model__seq_length=16)
    text = _problems(cfg, world_size=2)
    assert "(3 problem(s))" in text, text
    assert "--model.pipeline_model_parallel_size (2): megatron-core's T5Model does not support pipeline" in text
    assert "--tokenizer.vocab_extra_ids (4) is too small" in text and "at least 18" in text
    assert "--model.seq_length (16), the decoder length, is too short" in text


def test_t5_model_and_dataset_kinds_must_match():
    cfg = tiny_t5()
    cfg.dataset = GPTDatasetConfig()
    assert "--model=t5 trains on span-corruption samples: set --dataset=t5" in _problems(cfg)
    gpt = RECIPES["gpt_cpu_tiny"]()
    gpt.dataset = T5DatasetConfig()
    assert "--dataset=t5 makes span-corruption samples for an encoder-decoder model; use --model=t5" in _problems(gpt)
    assert "--model.context_parallel_size (2): context parallelism is not supported for T5" in _problems(
        tiny_t5(model__context_parallel_size=2), world_size=2)
    assert "--dataset.seq_length (100) != --model.encoder_seq_length (128)" in _problems(tiny_t5(dataset__seq_length=100))


def test_unsplittable_vocabulary_is_refused():
    text = _problems(tiny_t5(model__tensor_model_parallel_size=2), world_size=2)  # 291 rows, unpadded
    assert "the embedding's 291 rows" in text and "--model.should_pad_vocab=true" in text


def test_t5_recipe_uses_span_corruption_and_round_trips(tmp_path):
    cfg = RECIPES["t5_220m"]()
    assert isinstance(cfg.dataset, T5DatasetConfig) and cfg.tokenizer.vocab_extra_ids == 100
    final = finalize(cfg, RECIPES["t5_220m"].documented_world_size)
    assert (final.dataset.sample_length, final.dataset.decoder_sample_length) == (512, 128)
    cfg.dataset.masking_probability = 0.2
    cfg.to_yaml(str(tmp_path / "t5.yaml"))
    assert ConfigContainer.from_yaml(str(tmp_path / "t5.yaml")) == cfg
