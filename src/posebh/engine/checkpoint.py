"""Checkpoints that are written atomically and can never execute code when read.

Writing goes to a temporary file in the target folder, is fsynced and renamed over the target
(``os.replace`` is atomic on POSIX), then the folder is fsynced: a save killed at any moment
leaves the previous checkpoint intact. Reading uses ``torch.load(weights_only=True)``
(:func:`posebh.models.checkpoint_io.read_checkpoint`, the reader model loading uses too), which
only rebuilds tensors and plain containers, so a tampered file is refused instead of run. To keep every
checkpoint loadable that way, :func:`save_checkpoint` first checks that the state holds only
tensors, numbers, strings, None, lists/tuples and dicts; RNG states are stored as tensors
(:func:`rng_state`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from posebh.atomic import atomic_file
from posebh.models.checkpoint_io import CheckpointError, checkpoint_bytes, read_checkpoint

#: the rolling checkpoint a stage resumes from
CHECKPOINT_NAME = "checkpoint.pt"
_PLAIN_SCALARS = (bool, int, float, str, bytes, type(None), torch.dtype, torch.Size, torch.device)


def check_plain(obj: Any, where: str = "state") -> None:
    """Raise TypeError naming the first value that ``weights_only`` loading would refuse."""
    if isinstance(obj, torch.Tensor):
        if type(obj) is not torch.Tensor and not isinstance(obj, torch.nn.Parameter):
            raise TypeError(f"{where}: tensor subclass {type(obj).__name__} cannot be stored; use a plain tensor")
        return
    if isinstance(obj, _PLAIN_SCALARS):
        return
    if isinstance(obj, (list, tuple)):
        if isinstance(obj, tuple) and type(obj) is not tuple:
            raise TypeError(f"{where}: {type(obj).__name__} (a named tuple) cannot be stored; use a dict or a list")
        for i, v in enumerate(obj):
            check_plain(v, f"{where}[{i}]")
        return
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where}: key {k!r} of type {type(k).__name__} cannot be stored; use str or int keys")
            check_plain(v, f"{where}[{k!r}]")
        return
    raise TypeError(
        f"{where}: a {type(obj).__module__}.{type(obj).__qualname__} cannot be stored in a checkpoint "
        "(only tensors, numbers, strings, None, lists and dicts load with weights_only=True)"
    )


def save_checkpoint(path: str | Path, state: Mapping[str, Any], *, writer: Callable[[Any, IO], None] | None = None) -> Path:
    """Check ``state`` is plain (see :func:`check_plain`) and write it atomically; returns the path."""
    check_plain(state)
    path = Path(path)
    write = writer or (lambda obj, f: f.write(checkpoint_bytes(obj)))
    with atomic_file(path, "wb") as f:
        write(dict(state), f)
    return path


def load_checkpoint(path: str | Path, *, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a training checkpoint (a dict) with ``weights_only=True``.

    :class:`CheckpointError` names the file and why (see
    :func:`posebh.models.checkpoint_io.read_checkpoint`; a missing file raises its
    ``CheckpointNotFoundError``, also a FileNotFoundError).
    """
    state = read_checkpoint(path, map_location=map_location)
    if not isinstance(state, dict):
        raise CheckpointError(path, f"expected a dict at the top level, found {type(state).__name__}")
    return state


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The resumable checkpoint of a stage folder, or None when there is none yet.

    Only the rolling :data:`CHECKPOINT_NAME` counts; leftover temporary files of an interrupted
    save (``.checkpoint.pt.*.tmp``) are ignored.
    """
    p = Path(directory) / CHECKPOINT_NAME
    return p if p.is_file() and p.stat().st_size > 0 else None


# ---------------------------------------------------------------------------------------------
# RNG states as tensors and numbers (weights_only-loadable)
# ---------------------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """Python, numpy (legacy global) and torch CPU/CUDA generator states of this process."""
    py_version, py_internal, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": {"version": py_version, "internal": torch.tensor(py_internal, dtype=torch.int64), "gauss_next": py_gauss},
        "numpy": {"name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_gauss)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(x) for x in py["internal"].tolist()), py["gauss_next"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), int(n["pos"]), int(n["has_gauss"]), float(n["cached_gaussian"])))
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
