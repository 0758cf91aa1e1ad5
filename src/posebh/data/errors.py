"""Errors that name the file and the problem, so a bad input never ends deep in a stack."""

from __future__ import annotations

from pathlib import Path


class DataFileError(ValueError):
    """A whole input file is unusable (missing, unreadable, wrong structure)."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class UnsafePathError(DataFileError):
    """A file name in an annotation would escape its image root."""
