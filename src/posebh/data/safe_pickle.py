"""A restricted unpickler for pickles from outside (3DPW sequence files).

``pickle.load`` runs whatever callable a file names, so a downloaded pickle is code. The 3DPW
sequence files only need numpy arrays, numpy scalars and plain containers; every other global
is refused before it is imported, so a hostile ``__reduce__`` never runs.

Both numpy spellings are admitted: ``numpy.core`` (pickles written by numpy 1.x and by the
Python 2 tooling that wrote 3DPW) and ``numpy._core`` (numpy 2.x). Python 2 module names
(``__builtin__``) are admitted as aliases of ``builtins``. The old ``numpy.core`` names are
resolved to ``numpy._core`` directly, which also avoids numpy 2's deprecation shim.
"""

from __future__ import annotations

import builtins
import importlib
import pickle
from pathlib import Path
from typing import IO, Any

from posebh.data.errors import DataFileError

_NUMPY_GLOBALS: dict[str, frozenset[str]] = {
    "numpy": frozenset({"ndarray", "dtype"}),
    "numpy._core.multiarray": frozenset({"_reconstruct", "scalar"}),
    "numpy._core.numeric": frozenset({"_frombuffer"}),
}
_BUILTIN_GLOBALS = frozenset({
    "list", "dict", "tuple", "set", "frozenset", "bytes", "bytearray", "str", "int", "float",
    "complex", "bool", "slice", "range",
})  # fmt: skip
_OTHER_GLOBALS: dict[str, frozenset[str]] = {
    "collections": frozenset({"OrderedDict"}),
    # protocol-2 pickles written by Python 3 carry bytes as _codecs.encode(text, "latin1")
    "_codecs": frozenset({"encode"}),
}
_MODULE_ALIASES = {"__builtin__": "builtins", "numpy.core": "numpy._core"}


def _canonical_module(module: str) -> str:
    for old, new in _MODULE_ALIASES.items():
        if module == old or module.startswith(old + "."):
            return new + module[len(old) :]
    return module


def allowed(module: str, name: str) -> bool:
    """Whether the global ``module.name`` may be referenced by a pickle."""
    mod = _canonical_module(module)
    if mod == "builtins":
        return name in _BUILTIN_GLOBALS
    names = _NUMPY_GLOBALS.get(mod) or _OTHER_GLOBALS.get(mod)
    return names is not None and name in names


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], *, source: str, encoding: str):
        super().__init__(file, encoding=encoding)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        if not allowed(module, name):
            raise DataFileError(self._source, f"pickle references forbidden global {module}.{name}")
        mod = _canonical_module(module)
        if mod == "builtins":
            return getattr(builtins, name)
        return getattr(importlib.import_module(mod), name)

    def persistent_load(self, pid: Any) -> Any:
        raise DataFileError(self._source, "pickle uses persistent ids, which are not supported")


def safe_load(path_or_file: str | Path | IO[bytes], *, encoding: str = "latin1") -> Any:
    """Unpickle numpy arrays and plain containers only; anything else raises DataFileError.

    ``encoding="latin1"`` is what Python 2 pickles of numpy arrays need (their byte strings
    arrive as ``str``); it does not affect pickles written by Python 3.
    """
    if isinstance(path_or_file, (str, Path)):
        p = Path(path_or_file)
        if not p.is_file():
            raise DataFileError(p, "file not found" if not p.exists() else "not a regular file")
        try:
            with p.open("rb") as f:
                return _load(f, str(p), encoding)
        except OSError as e:
            raise DataFileError(p, f"cannot read: {e.strerror or e}") from e
    return _load(path_or_file, str(getattr(path_or_file, "name", "<pickle stream>")), encoding)


def _load(file: IO[bytes], source: str, encoding: str) -> Any:
    try:
        return _RestrictedUnpickler(file, source=source, encoding=encoding).load()
    except DataFileError:
        raise
    except (pickle.UnpicklingError, EOFError) as e:
        raise DataFileError(source, f"not a readable pickle: {e or 'truncated'}") from e
    except (TypeError, ValueError, AttributeError, IndexError, KeyError, UnicodeDecodeError) as e:
        raise DataFileError(source, f"pickle could not be rebuilt: {type(e).__name__}: {e}") from e
