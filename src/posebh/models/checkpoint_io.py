"""The one safe checkpoint reader and its error, shared by ``posebh.engine`` and ``posebh.models``.

:func:`read_checkpoint` is ``torch.load(weights_only=True)``: only tensors and plain containers
are rebuilt, so a file whose unpickling would import a global (and could run code) is refused,
never executed. Every failure names the file and the problem:

* missing -> :class:`CheckpointNotFoundError` ("no such checkpoint file"), both a
  :class:`CheckpointError` and a :class:`FileNotFoundError`;
* carries a global -> "refused: unpickling it would import <module.name>";
* anything else (empty, truncated, random bytes, not a pickle) -> "not a readable PyTorch
  checkpoint (...)". Torch's weights-only unpickler raises whatever arbitrary bytes provoke
  (AssertionError, KeyError, UnicodeDecodeError, ...), so every exception counts.

This module imports only torch: ``posebh.models.checkpoints`` and the training engine's
``posebh.engine.checkpoint`` both use it, and ``posebh.models`` never imports the engine.
"""

from __future__ import annotations

import io
import pickle
import re
from pathlib import Path
from typing import Any

import torch

#: How torch's weights-only unpickler names a global it refuses to import, in both of its messages
#: ("unsupported GLOBAL posix.system whose module posix is blocked", "Unsupported global: GLOBAL
#: argparse.Namespace was not an allowed global"). Only a Python name counts: random bytes can
#: spell a GLOBAL opcode with a garbage name, and that file is unreadable, not refused.
_UNSAFE_GLOBAL = re.compile(r"\bGLOBAL ([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)(?=\s|$)")
NOT_READABLE = "not a readable PyTorch checkpoint"


class CheckpointError(ValueError, RuntimeError):
    """A checkpoint file that cannot be used; the message names the file and the problem.

    Both a ValueError (a bad input file, what model loading has always raised) and a RuntimeError
    (what the training engine has always raised), so either caller's ``except`` keeps working.
    """

    def __init__(self, source: str | Path, problem: str):
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")

    @property
    def path(self) -> str:
        """The file (or description of the source) the problem is about."""
        return self.source


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint file does not exist (or is not a file)."""


def _first_line(text: str, default: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), default)


def read_checkpoint(path: str | Path, *, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with errors that name the file (see the module doc)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(path, "no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(path, f"{NOT_READABLE} (the file is empty: an interrupted copy?)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        unsafe = _UNSAFE_GLOBAL.search(text)
        if unsafe:
            raise CheckpointError(path, f"refused: unpickling it would import {unsafe[1]} (only tensors and plain "
                                        "types are loaded, weights_only=True)") from None
        detail = next((line.strip() for line in text.splitlines() if line.strip().startswith("Unsupported")),
                      _first_line(text, type(e).__name__))
        raise CheckpointError(path, f"{NOT_READABLE} (weights-only unpickler: {detail})") from None
    except Exception as e:  # noqa: BLE001 - arbitrary bytes provoke arbitrary exception types
        raise CheckpointError(path, f"{NOT_READABLE} ({type(e).__name__}: {_first_line(str(e), 'no detail')})") from None


def checkpoint_bytes(obj: Any) -> bytes:
    """``torch.save`` into memory. Saved to a named file, torch calls the archive's inner folder after
    the file, and atomic writes go through randomly named temporaries: in memory the folder is always
    ``archive``, so the same state always gives the same bytes (reproducible artifacts)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


__all__ = ["NOT_READABLE", "CheckpointError", "CheckpointNotFoundError", "checkpoint_bytes", "read_checkpoint"]
