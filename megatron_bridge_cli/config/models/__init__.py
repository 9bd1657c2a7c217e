"""Model providers: megatron-core TransformerConfigs that build their model with provide()."""

from megatron_bridge_cli.config.models.gpt import GPTModelProvider
from megatron_bridge_cli.config.models.mamba import MambaModelProvider
from megatron_bridge_cli.config.models.provider import ModelProviderBase
from megatron_bridge_cli.config.models.t5 import T5ModelProvider

__all__ = ["GPTModelProvider", "T5ModelProvider", "MambaModelProvider", "ModelProviderBase"]

MODEL_KINDS = {"gpt": GPTModelProvider, "t5": T5ModelProvider, "mamba": MambaModelProvider}
"""Names that select a model family, e.g. ``--model=t5``."""
