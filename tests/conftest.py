"""Suite-wide: a private flag-schema cache, so tests never read or write the user's ~/.cache."""

import os
import tempfile

os.environ.setdefault("BRIDGE_TRAIN_CACHE_DIR", tempfile.mkdtemp(prefix="bridge-train-test-cache-"))


import logging  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _restore_logging():
    """Tests that run bridge-train's main() in-process configure logging as a run does (levels
    per rank, root handlers); put it back so the next test's caplog sees what it expects."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: lg.level for name, lg in logging.Logger.manager.loggerDict.items() if isinstance(lg, logging.Logger)}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, lg in logging.Logger.manager.loggerDict.items():
        if isinstance(lg, logging.Logger):
            lg.setLevel(levels.get(name, logging.NOTSET))
