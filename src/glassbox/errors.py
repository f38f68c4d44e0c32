"""The one exception type that means "the user gave us bad input": the CLI turns it into exit 2."""

from __future__ import annotations

from pathlib import Path


class BadInput(Exception):
    """Raised for anything wrong with what the user handed us: a file, an option, a model name.

    The message becomes the single `error: ...` line; it should name the file and the broken rule.
    """

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = str(path) if path is not None else None
        super().__init__(f"{self.path}: {message}" if self.path else message)
