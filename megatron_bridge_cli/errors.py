"""The kinds of failure bridge-train tells apart: a user's config mistake (exit 2), a run that
failed in a way it can explain (exit 1, one paragraph), and the rest (a bug: a traceback)."""

from __future__ import annotations

__all__ = ["ConfigError", "ValidationError", "RunFailure"]


class ConfigError(Exception):
    """A mistake in flags, YAML files or recipes: reported as one paragraph, exit code 2."""

    exit_code = 2


class ValidationError(ConfigError):
    """Every problem validate() found, reported together."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid configuration ({len(self.problems)} problem(s)):\n{lines}")


class RunFailure(Exception):
    """A runtime failure bridge-train diagnosed (e.g. a NaN loss): reported as one paragraph by
    the rank it happened on (the text names the rank), exit code 1."""

    exit_code = 1
