"""Notices reach the console once: from rank 0 where every rank says the same.

Every rank runs the same setup code, so a warning from megatron-core, torch or finalize says
the same thing on every rank: with N ranks a job log showed it N times (N + 1 under
``bridge-train --nproc-per-node``, whose launcher validated the config first). Some say it
more than once per rank too: megatron-core's dataset builder warns "Unable to save
MockGPTDataset indexes because path_to_cache is None" once per split.

``show_notices_once(rank)`` makes each say it once:
- Notices that are the same on every rank by construction speak on rank 0 only (ERROR and
  above still on every rank): Python ``warnings`` (deprecations and library hints, tied to a
  line of code that every rank runs; routed through logging by ``logging.captureWarnings``) and
  finalize's notices (every rank finalizes the same config). In workers started by
  bridge-train's own launcher, finalize's notices stay quiet on every rank: the launcher
  already printed them when it validated the config.
- Everything that reaches the console through the root logger is shown once per process:
  a repeat of the same level and text is dropped (errors are never folded).
megatron-core's loggers keep speaking on every rank: megatron-core already logs its symmetric
notices on one rank (``log_single_rank``) and its per-rank ones (a spiky loss on the rank that
saw it) on that rank, which a rank filter would hide. The training loop's own lines
(iterations, evaluations, checkpoints) are plain prints, untouched.
"""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["SAME_ON_EVERY_RANK", "OncePerProcess", "show_notices_once"]

_FORMAT = "bridge-train: %(levelname)s: %(message)s"  # as cli.main's for --dry-run
_CONFIG_LOGGER = "megatron_bridge_cli.config"  # finalize's and validation's notices
SAME_ON_EVERY_RANK = ("py.warnings", _CONFIG_LOGGER)
"""Loggers whose notices every rank gives alike: below ERROR, rank 0's copy is enough."""
_LAUNCHER_PID_ENV = "BRIDGE_TRAIN_LAUNCHER_PID"  # training.launch sets it for its workers


class OncePerProcess(logging.Filter):
    """Lets each distinct notice (level + text) through once; errors always pass."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[int, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        key = (record.levelno, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


def _console_handlers(root: logging.Logger) -> list[logging.Handler]:
    """The root handlers that write to the console (not, e.g., a test runner's capture)."""
    return [h for h in root.handlers
            if type(h) is logging.StreamHandler and getattr(h, "stream", None) in (sys.stderr, sys.stdout)]


def show_notices_once(rank: int) -> None:
    """Install the filters for a process that is global rank ``rank``; safe to call again."""
    root = logging.getLogger()
    if not root.handlers:  # otherwise records fall to logging.lastResort, which no filter reaches
        logging.basicConfig(format=_FORMAT, level=logging.WARNING)
    for handler in _console_handlers(root):
        # A forked worker inherits its launcher's handlers: replace, do not stack, our filter.
        for old in [f for f in handler.filters if isinstance(f, OncePerProcess)]:
            handler.removeFilter(old)
        handler.addFilter(OncePerProcess())
    logging.captureWarnings(True)  # warnings.warn -> the "py.warnings" logger
    for name in SAME_ON_EVERY_RANK:
        if rank != 0:
            logging.getLogger(name).setLevel(logging.ERROR)
    if _started_by_our_launcher():
        logging.getLogger(_CONFIG_LOGGER).setLevel(logging.ERROR)


def _started_by_our_launcher() -> bool:
    """A worker of ``bridge-train --nproc-per-node``: its parent is the launcher that set the
    variable (the launcher itself, which also has it set, is not)."""
    return os.environ.get(_LAUNCHER_PID_ENV, "") == str(os.getppid())
