"""bridge-train: a dataclass-driven command-line training launcher for megatron-core."""

import warnings

# megatron-core warns once per module when neither Transformer Engine nor Apex is installed.
# That is the normal state on CPU machines and says nothing the user can act on.
warnings.filterwarnings("ignore", message="Transformer Engine and Apex are not installed")
warnings.filterwarnings("ignore", message="Apex is not installed")
# TransformerConfig.__post_init__ warns about its own default cuda_graph_scope on every finalize.
warnings.filterwarnings("ignore", message="full scope is deprecated")

__version__ = "0.1.0"
