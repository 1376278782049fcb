"""One error type for bad input files: it always names the file, and the line and field when known."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """A problem in an input file, reported as ``file:line: field 'x': message``."""

    def __init__(self, path: str | Path, message: str, *, line: int | None = None, field: str | None = None):
        self.path, self.line, self.field = str(path), line, field
        where = self.path if line is None else f"{self.path}:{line}"
        what = f"field {field!r}: " if field else ""
        super().__init__(f"{where}: {what}{message}")


class DataWarning(UserWarning):
    """Something in an input file that was read anyway, changed or as is (labels stripped of spaces, texts
    longer than a model reads, a file decoded as GB18030): one line naming the file, counted, never silent."""
