"""Suite-wide: a private flag-schema cache, so tests never read or write the user's ~/.cache."""

import os
import tempfile

os.environ.setdefault("BRIDGE_TRAIN_CACHE_DIR", tempfile.mkdtemp(prefix="bridge-train-test-cache-"))
