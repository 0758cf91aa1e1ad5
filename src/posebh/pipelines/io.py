"""Catalog datasets that write atomically: a file appears whole or not at all.

Each save goes to a temporary file in the target folder, is flushed to disk, and then renamed
over the target (``os.replace`` is atomic on POSIX), so an interrupted run leaves the previous
artifact intact. Kedro's own datasets write in place, hence these small local-file versions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from posebh.atomic import atomic_path


class _LocalFileDataset(AbstractDataset):
    def __init__(self, filepath: str, metadata: dict | None = None):
        self._filepath = Path(filepath)
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def load(self) -> Any:
        if not self._filepath.is_file():
            raise DatasetError(f"{self._filepath}: not found (run the pipeline that produces it first)")
        return self._read(self._filepath)

    def save(self, data: Any) -> None:
        try:
            with atomic_path(self._filepath) as tmp:
                self._write(data, tmp)
        except OSError as e:
            raise DatasetError(f"{self._filepath}: cannot write ({e.strerror or e})") from e

    def _read(self, path: Path) -> Any:
        raise NotImplementedError

    def _write(self, data: Any, path: Path) -> None:
        raise NotImplementedError


class ParquetDataset(_LocalFileDataset):
    """A pandas table as parquet (pyarrow)."""

    def _read(self, path):
        import pandas as pd

        return pd.read_parquet(path)

    def _write(self, data, path):
        data.to_parquet(path, index=False)


class JSONDataset(_LocalFileDataset):
    """A JSON document, written with sorted keys so identical content gives identical bytes."""

    def _read(self, path):
        return json.loads(path.read_text(encoding="utf-8"))

    def _write(self, data, path):
        path.write_text(json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n", encoding="utf-8")


class TextDataset(_LocalFileDataset):
    """A text document (Markdown, HTML)."""

    def _read(self, path):
        return path.read_text(encoding="utf-8")

    def _write(self, data, path):
        path.write_text(data, encoding="utf-8")


class BytesDataset(_LocalFileDataset):
    """Raw bytes (images, archives)."""

    def _read(self, path):
        return path.read_bytes()

    def _write(self, data, path):
        path.write_bytes(data)


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


class TorchDataset(_LocalFileDataset):
    """A model checkpoint ({"config": ..., "state_dict": ...}), loaded with ``weights_only=True``
    so a file from elsewhere can never execute code."""

    def _read(self, path):
        from posebh.models.checkpoint_io import CheckpointError, read_checkpoint

        try:
            return read_checkpoint(path)
        except CheckpointError as e:
            raise DatasetError(str(e)) from None

    def _write(self, data, path):
        from posebh.models.checkpoint_io import checkpoint_bytes

        Path(path).write_bytes(checkpoint_bytes(data))


class CSVDataset(_LocalFileDataset):
    """A pandas table as CSV (training logs that ``dvc plots`` draws)."""

    def _read(self, path):
        import pandas as pd

        return pd.read_csv(path)

    def _write(self, data, path):
        data.to_csv(path, index=False)


class SplitModelsDataset(AbstractDataset):
    """A folder of per-dataset split models (``posebh.models.export.save_split``): saving takes a
    PoseBH model, loading gives ``{dataset: PerDatasetModel}``. Each file is written atomically."""

    def __init__(self, path: str, metadata: dict | None = None):
        self._path = Path(path)
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}

    def _exists(self) -> bool:
        return self._path.is_dir() and any(self._path.glob("*.pt"))

    def load(self):
        from posebh.models.export import load_split_dir

        if not self._exists():
            raise DatasetError(f"{self._path}: no split models (run the split pipeline first)")
        return load_split_dir(self._path)

    def save(self, data) -> None:
        from posebh.models.export import save_split

        try:
            save_split(self._path, data)
        except OSError as e:
            raise DatasetError(f"{self._path}: cannot write ({e.strerror or e})") from e
