"""HuggingFace checkpoints in and out, offline only.

* ``directory``: what a local HF model folder is (``config.json`` + ``*.safetensors``), and the
  error for a hub id with no local copy (never a network call).
* ``families``: ``config.json`` <-> GPTModelProvider fields for the supported architectures
  (Llama, Mistral, Qwen2, Qwen3, GPT-2), and the recipe-vs-file architecture check.
* ``weights``: HF tensor names <-> megatron-core parameter names, and the slice of each HF
  tensor a tensor-parallel rank owns.
* ``load``: streams a rank's own slices from the memory-mapped safetensors files into a built
  model (any TP/PP/VP layout).
* ``export``: writes a model (or a dist checkpoint) as an HF folder that
  ``transformers.AutoModelForCausalLM.from_pretrained`` loads.

Needs ``safetensors`` (and ``transformers`` only for tokenizers and for the tests):
``pip install '.[hf]'``.
"""
