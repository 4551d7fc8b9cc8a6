"""The one user-facing error type.

Every message has the shape ``what | problem. Note: what was expected`` so a
user reading one line on a terminal knows what to fix. The CLI prints it and
exits 1 without a traceback; any other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations


class EdgehalError(Exception):
    """An error caused by the user's input, not by a bug in edgehal."""

    def __init__(self, what: str, problem: str, expected: str | None = None) -> None:
        self.what = what
        self.problem = problem
        self.expected = expected
        message = f"{what} | {problem}"
        if expected:
            message += f". Note: {expected}"
        super().__init__(message)
