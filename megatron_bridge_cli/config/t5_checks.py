"""Checks of encoder-decoder (T5) runs. Each problem names the flag to change.

Facts behind them (megatron-core 0.16.1, probed):

* **No pipeline parallelism for T5.** The schedules send one activation tensor between stages
  (``get_tensor_shapes`` has a single shape from ``decoder_seq_length``) and the encoder/decoder
  split rank is gone, while ``T5Model`` with ``pre_process``/``post_process`` cuts *both*
  stacks per stage: the decoder's cross-attention on the first stage would read a half-run
  encoder. Megatron-LM's own ``pretrain_t5.py`` raises "Pipeline parallelism is not supported
  for T5." Tensor and data parallelism work (tests/integration/test_training_t5.py).
* **No context parallelism** on the local attention (it asserts it), and T5's masks and
  relative position bias are built for the whole sequence.
* **Sentinels:** the dataset uses one sentinel per masked span and fails with an IndexError
  when they run out; a sample has at most ``floor(masking_probability x (encoder length - 2))``
  spans. The decoder input is ``<s>``, then a sentinel and the tokens of each span: at most
  ``1 + 2 x that``, and megatron-core asserts it fits the decoder length.
"""

from __future__ import annotations

import math

__all__ = ["check_t5", "max_masked_tokens", "typical_target_length"]


def max_masked_tokens(encoder_length: int, masking_probability: float) -> int:
    """Most tokens (and so most spans) one sample masks: megatron-core's ``n_maskings`` bound
    for a target of ``encoder_length - 2`` tokens (room for <s> and <eos>)."""
    return max(1, int(masking_probability * (encoder_length - 2)))


def _mean_span(d) -> float:
    """Expected masked span length in tokens, as megatron-core draws it."""
    n = d.masking_max_ngram
    if d.masking_use_geometric_distribution:
        return sum(0.8 ** k for k in range(n))  # E[min(Geometric(0.2), n)]
    weights = [(k if d.masking_use_longer_ngrams else 1 / k) for k in range(1, n + 1)]
    return sum(k * w for k, w in zip(range(1, n + 1), weights)) / sum(weights)


def typical_target_length(d, encoder_length: int) -> int:
    """Decoder tokens of a full-length sample with spans of the mean length."""
    masked = max_masked_tokens(encoder_length, d.masking_probability)
    return 1 + masked + math.ceil(masked / _mean_span(d))


def check_t5(cfg) -> list[str]:
    """Model/dataset pairing, parallelism, lengths and sentinels of a T5 run."""
    from megatron_bridge_cli.config.data import T5DatasetConfig
    from megatron_bridge_cli.config.models.t5 import T5ModelProvider

    m, d, problems = cfg.model, cfg.dataset, []
    t5_model, t5_data = isinstance(m, T5ModelProvider), isinstance(d, T5DatasetConfig)
    if t5_data and not t5_model:
        problems.append(f"--dataset=t5 makes span-corruption samples for an encoder-decoder model; use --model=t5, "
                        f"or --dataset=gpt for this {type(m).__name__}")
    if not t5_model:
        return problems
    if not t5_data:
        problems.append(f"--model=t5 trains on span-corruption samples: set --dataset=t5 "
                        f"(now {type(d).__name__}, which makes causal-LM samples)")
    if m.pipeline_model_parallel_size > 1:
        problems.append(
            f"--model.pipeline_model_parallel_size ({m.pipeline_model_parallel_size}): megatron-core's T5Model "
            "does not support pipeline parallelism (its schedules pass one tensor between stages, T5 needs the "
            "encoder output and the decoder states); use --model.tensor_model_parallel_size and data parallelism"
        )
    if m.context_parallel_size > 1:
        problems.append(f"--model.context_parallel_size ({m.context_parallel_size}): context parallelism is not "
                        "supported for T5; use tensor or data parallelism")
    if not t5_data:
        return problems
    encoder_length = m.encoder_seq_length or m.seq_length
    encoder_flag = "--model.encoder_seq_length" if m.encoder_seq_length else "--model.seq_length"
    if d.seq_length is not None and d.seq_length != encoder_length:
        problems.append(f"--dataset.seq_length ({d.seq_length}) != {encoder_flag} ({encoder_length}), "
                        "the encoder input length")
    if d.decoder_seq_length is not None and d.decoder_seq_length != m.seq_length:
        problems.append(f"--dataset.decoder_seq_length ({d.decoder_seq_length}) != --model.seq_length "
                        f"({m.seq_length}), the decoder length")
    problems += _check_masking(cfg, d.seq_length or encoder_length, d.decoder_seq_length or m.seq_length)
    return problems


def _check_masking(cfg, encoder_length: int, decoder_length: int) -> list[str]:
    d, tok, problems = cfg.dataset, cfg.tokenizer, []
    if not 0 < d.masking_probability < 1:
        problems.append(f"--dataset.masking_probability ({d.masking_probability}) must be between 0 and 1")
    if not 0 <= d.short_sequence_probability <= 1:
        problems.append(f"--dataset.short_sequence_probability ({d.short_sequence_probability}) must be in [0, 1]")
    if d.masking_max_ngram < 1:
        problems.append(f"--dataset.masking_max_ngram ({d.masking_max_ngram}) must be at least 1")
    if problems:
        return problems
    spans = max_masked_tokens(encoder_length, d.masking_probability)
    if tok.tokenizer_type != "HuggingFaceTokenizer" and tok.vocab_extra_ids < spans:
        problems.append(
            f"--tokenizer.vocab_extra_ids ({tok.vocab_extra_ids}) is too small: T5 span corruption needs a "
            f"sentinel token per masked span, up to {spans} per sample (--dataset.masking_probability "
            f"{d.masking_probability} x {encoder_length - 2} tokens); set it to at least {spans} (T5 uses 100)"
        )
    typical = typical_target_length(d, encoder_length)
    if decoder_length < typical:
        problems.append(
            f"--model.seq_length ({decoder_length}), the decoder length, is too short for the targets of "
            f"{encoder_length}-token inputs: <s> + {spans} masked tokens + a sentinel per span is about {typical} "
            f"tokens (at most {1 + 2 * spans}); raise it to at least {typical} or lower --dataset.masking_probability"
        )
    return problems
