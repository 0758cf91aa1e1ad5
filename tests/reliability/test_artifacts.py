"""Atomic artifacts: every catalog dataset and every ``posebh.atomic`` writer leaves the previous file
whole when a write fails half-way (an exception, a full disk, a kernel write error, a kill), leaves
no temporary file behind after an exception, and names the path in the error it raises."""

from __future__ import annotations

import errno
import inspect
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from kedro.io import AbstractDataset, DatasetError

from posebh import atomic
from posebh.pipelines import io as catalog_io

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _table(v: int) -> pd.DataFrame:
    return pd.DataFrame({"a": np.arange(50) * v, "b": [f"row {i} v{v}" for i in range(50)]})


#: one artifact per catalog dataset class, in two versions
SAMPLES = {
    "ParquetDataset": ("t.parquet", _table),
    "CSVDataset": ("t.csv", _table),
    "JSONDataset": ("r.json", lambda v: {"version": v, "rows": list(range(100 * v))}),
    "TextDataset": ("r.md", lambda v: f"# report v{v}\n" + "line\n" * 100 * v),
    "BytesDataset": ("f.png", lambda v: bytes([v]) * 4096),
    "TorchDataset": ("m.pt", lambda v: {"config": {"v": v}, "state_dict": {"w": torch.full((64, 64), float(v))}}),
}
FILE_CLASSES = sorted(SAMPLES)


def _catalog_classes() -> list[str]:
    return sorted(
        name for name, obj in vars(catalog_io).items()
        if inspect.isclass(obj) and issubclass(obj, AbstractDataset) and obj.__module__ == catalog_io.__name__
        and not name.startswith("_")
    )  # fmt: skip


def test_every_catalog_dataset_class_is_covered():
    assert set(_catalog_classes()) == set(SAMPLES) | {"SplitModelsDataset"}


def _equal(a, b) -> bool:
    if isinstance(a, pd.DataFrame):
        return a.equals(b)
    if isinstance(a, dict) and "state_dict" in a:
        return a["config"] == b["config"] and torch.equal(a["state_dict"]["w"], b["state_dict"]["w"])
    return a == b


def _dataset(tmp_path: Path, name: str):
    filename, make = SAMPLES[name]
    ds = getattr(catalog_io, name)(filepath=str(tmp_path / "out" / filename))
    ds.save(make(1))
    path = tmp_path / "out" / filename
    return ds, path, path.read_bytes(), make


def _assert_previous_intact(ds, path: Path, before: bytes, make) -> None:
    assert path.read_bytes() == before
    assert _equal(ds.load(), make(1))
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name], "a temporary file was left behind"


def _half_then(exc: BaseException):
    """A ``_write`` that writes the real artifact, cuts it in half, then fails."""

    def wrap(original):
        def _write(self, data, path):
            original(self, data, path)
            raw = Path(path).read_bytes()
            Path(path).write_bytes(raw[: len(raw) // 2])
            raise exc

        return _write

    return wrap


@pytest.mark.parametrize("failure", ["exception", "enospc_in_write", "keyboard_interrupt"])
@pytest.mark.parametrize("name", FILE_CLASSES)
def test_failed_save_keeps_the_previous_file(tmp_path, monkeypatch, name, failure):
    ds, path, before, make = _dataset(tmp_path, name)
    cls = type(ds)
    exc = {"exception": RuntimeError("simulated crash mid-write"), "enospc_in_write": ENOSPC,
           "keyboard_interrupt": KeyboardInterrupt()}[failure]  # fmt: skip
    monkeypatch.setattr(cls, "_write", _half_then(exc)(cls._write))
    expected = KeyboardInterrupt if failure == "keyboard_interrupt" else DatasetError
    with pytest.raises(expected) as e:
        ds.save(make(2))
    if expected is DatasetError:
        assert str(path) in str(e.value)
        if failure == "enospc_in_write":
            assert "No space left on device" in str(e.value)
    monkeypatch.undo()
    _assert_previous_intact(ds, path, before, make)
    ds.save(make(2))  # and the next save works
    assert _equal(ds.load(), make(2))


@pytest.mark.parametrize("name", FILE_CLASSES)
def test_disk_full_at_flush(tmp_path, monkeypatch, name):
    """The real writer runs; the disk fills up when the data is flushed to it (fsync)."""
    ds, path, before, make = _dataset(tmp_path, name)

    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(DatasetError) as e:
        ds.save(make(2))
    assert str(path) in str(e.value) and "No space left on device" in str(e.value)
    monkeypatch.undo()
    _assert_previous_intact(ds, path, before, make)


class _FileSizeLimit:
    """The kernel refuses writes past ``limit`` bytes (EFBIG): a real failure inside any writer."""

    def __init__(self, limit: int):
        self.limit = limit

    def __enter__(self):
        self.saved = resource.getrlimit(resource.RLIMIT_FSIZE)
        self.handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.limit, self.saved[1]))

    def __exit__(self, *exc):
        resource.setrlimit(resource.RLIMIT_FSIZE, self.saved)
        signal.signal(signal.SIGXFSZ, self.handler)


@pytest.mark.parametrize("name", FILE_CLASSES)
def test_kernel_write_error_mid_file(tmp_path, name):
    ds, path, before, make = _dataset(tmp_path, name)
    with pytest.raises(DatasetError) as e, _FileSizeLimit(256):
        ds.save(make(2))
    assert str(path) in str(e.value)
    _assert_previous_intact(ds, path, before, make)


def _unwritable(folder: Path, monkeypatch) -> None:
    """Make ``folder`` refuse new files: chmod, or (as root, which chmod does not stop) the error
    the kernel would give."""
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):
        folder.chmod(0o755)

        def mkstemp(*args, dir=None, **kwargs):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(Path(dir) / ".tmp"))

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


@pytest.mark.parametrize("name", FILE_CLASSES)
def test_unwritable_output_folder(tmp_path, monkeypatch, name):
    ds, path, before, make = _dataset(tmp_path, name)
    _unwritable(path.parent, monkeypatch)
    try:
        with pytest.raises(DatasetError) as e:
            ds.save(make(2))
    finally:
        path.parent.chmod(0o755)
    assert str(path) in str(e.value) and "Permission denied" in str(e.value)
    monkeypatch.undo()
    _assert_previous_intact(ds, path, before, make)


@pytest.mark.parametrize("name", FILE_CLASSES)
def test_output_folder_is_a_file(tmp_path, name):
    filename, make = SAMPLES[name]
    (tmp_path / "out").write_text("not a folder")
    path = tmp_path / "out" / filename
    ds = getattr(catalog_io, name)(filepath=str(path))
    with pytest.raises(DatasetError) as e:
        ds.save(make(1))
    assert str(path) in str(e.value)
    assert (tmp_path / "out").read_text() == "not a folder"


def test_sigkill_during_a_catalog_save(tmp_path):
    """A run killed while writing a table: the previous table is intact and still loads."""
    ds, path, before, make = _dataset(tmp_path, "ParquetDataset")
    code = textwrap.dedent(f"""
        import os, signal
        import numpy as np, pandas as pd
        from posebh.pipelines.io import ParquetDataset

        def killed(self, data, path):
            data.to_parquet(path, index=False)
            raw = open(path, "rb").read()
            open(path, "wb").write(raw[: len(raw) // 2])
            os.kill(os.getpid(), signal.SIGKILL)

        ParquetDataset._write = killed
        ParquetDataset(filepath={str(path)!r}).save(pd.DataFrame({{"a": np.arange(10**5)}}))
    """)
    import posebh

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(posebh.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120, env=env)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    assert path.read_bytes() == before and _equal(ds.load(), make(1))
    stale = [p.name for p in path.parent.iterdir() if p != path]
    assert stale and all(n.startswith(f".{path.name}.") and n.endswith(".tmp") for n in stale)  # never the target


# ----------------------------------------------------------------------------------------------
# The split-models folder: one atomic file per dataset
# ----------------------------------------------------------------------------------------------


def test_split_models_folder_keeps_every_file_whole(tmp_path, monkeypatch):
    from posebh.models.export import load_prototype_query, load_split
    from posebh.models.posebh import ModelConfig, build_model

    folder = tmp_path / "split"
    ds = catalog_io.SplitModelsDataset(path=str(folder))
    torch.manual_seed(0)
    ds.save(build_model(ModelConfig(size="tiny", datasets=("coco", "aic"))))
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert sorted(before) == ["aic.pt", "coco.pt", "prototypes.pt"]

    real_save, calls = torch.save, []

    def save(obj, f, *args, **kwargs):  # the second file hits a full disk half-way
        calls.append(1)
        if len(calls) == 2:
            f.write(b"PK\x03\x04 partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    torch.manual_seed(1)
    with pytest.raises(DatasetError) as e:
        ds.save(build_model(ModelConfig(size="tiny", datasets=("coco", "aic"))))
    monkeypatch.undo()
    assert str(folder) in str(e.value) and "No space left on device" in str(e.value)
    after = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert sorted(after) == sorted(before), "a temporary file was left behind"
    changed = {n for n in after if after[n] != before[n]}
    assert len(changed) == 1  # the first file was replaced whole; the failing one and the rest are the old ones
    for n in ("aic.pt", "coco.pt"):
        load_split(folder / n)
    load_prototype_query(folder / "prototypes.pt")


# ----------------------------------------------------------------------------------------------
# posebh.atomic and the writers built on it
# ----------------------------------------------------------------------------------------------


def _write_csv(path, v):
    from posebh.engine.trainer import write_csv

    write_csv(path, [{"stage": "s", "epoch": 0, "step": i, "lr": 0.1, "loss": float(v)} for i in range(50)])


def _save_checkpoint(path, v):
    from posebh.engine.checkpoint import save_checkpoint

    save_checkpoint(path, {"model": {"w": torch.full((32, 32), float(v))}, "epoch": v})


def _atomic_save(path, v):
    from posebh.models.checkpoints import atomic_save

    atomic_save({"state_dict": {"w": torch.full((32, 32), float(v))}}, path)


def _atomic_file(path, v):
    with atomic.atomic_file(path, "w") as f:
        for i in range(100):
            f.write(f"line {i} version {v}\n")


ATOMIC_WRITERS = {
    "write_bytes": lambda p, v: atomic.write_bytes(p, bytes([v]) * 5000),
    "write_text": lambda p, v: atomic.write_text(p, f"version {v}\n" * 500),
    "atomic_file": _atomic_file,
    "trainer.write_csv": _write_csv,
    "engine.save_checkpoint": _save_checkpoint,
    "models.atomic_save": _atomic_save,
}


class _FullDiskFile:
    """A file whose writes stop half-way with ENOSPC, as on a full disk."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        self._f.write(data[: max(1, len(data) // 2)])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


@pytest.mark.parametrize("writer", list(ATOMIC_WRITERS))
@pytest.mark.parametrize("failure", ["enospc_in_write", "enospc_at_fsync", "file_size_limit", "unwritable_folder"])
def test_atomic_writers(tmp_path, monkeypatch, writer, failure):
    write = ATOMIC_WRITERS[writer]
    path = tmp_path / "out" / "artifact"
    write(path, 1)
    before = path.read_bytes()
    if failure == "enospc_in_write":
        monkeypatch.setattr(atomic, "open", lambda *a, **k: _FullDiskFile(open(*a, **k)), raising=False)
    elif failure == "enospc_at_fsync":
        def fsync(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(os, "fsync", fsync)
    elif failure == "unwritable_folder":
        _unwritable(path.parent, monkeypatch)
    try:
        with pytest.raises((OSError, RuntimeError)) as e:
            if failure == "file_size_limit":
                with _FileSizeLimit(256):
                    write(path, 2)
            else:
                write(path, 2)
    finally:
        path.parent.chmod(0o755)
    monkeypatch.undo()
    assert str(path) in str(e.value), f"the error does not name the file: {e.value!r}"
    phrase = {"enospc_in_write": "No space left on device", "enospc_at_fsync": "No space left on device",
              "file_size_limit": "", "unwritable_folder": "Permission denied"}[failure]  # fmt: skip
    assert phrase in str(e.value)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["artifact"], "a temporary file was left behind"


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()], ids=["exception", "keyboard_interrupt"])
def test_atomic_path_interrupted_by_the_caller(tmp_path, exc):
    path = atomic.write_text(tmp_path / "a.json", json.dumps({"v": 1}))
    with pytest.raises(type(exc)):
        with atomic.atomic_path(path) as tmp:
            tmp.write_text('{"v": 2, "trunc')
            raise exc
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_errors_about_other_files_keep_their_name(tmp_path):
    """Only errors about the artifact itself are re-labelled with its path."""
    with pytest.raises(FileNotFoundError) as e:
        with atomic.atomic_file(tmp_path / "out.txt", "w") as f:
            f.write("partial")
            open(tmp_path / "missing_input.txt")
    assert "missing_input.txt" in str(e.value)
    assert not any(tmp_path.iterdir())


# ----------------------------------------------------------------------------------------------
# Stale temporaries: what a writer killed by SIGKILL leaves, and who removes it
# ----------------------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    import posebh

    src = str(Path(posebh.__file__).parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}


class _Writer:
    """A real process half-way through ``atomic_file(path)``: it has written part of the new
    version to its temporary file and waits there until it is killed."""

    def __init__(self, path: Path):
        code = textwrap.dedent(f"""
            import time
            from posebh import atomic

            with atomic.atomic_file({str(path)!r}, "w") as f:
                f.write("half of version 2\\n" * 1000)
                f.flush()
                print("writing", flush=True)
                time.sleep(300)
        """)
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=_env())  # fmt: skip
        line = self.proc.stdout.readline()
        if line.strip() != b"writing":
            self.proc.kill()
            raise AssertionError(f"the writer did not start: {line!r} {self.proc.communicate()[1].decode()}")

    def temporaries(self, folder: Path) -> list[Path]:
        return sorted(p for p in folder.iterdir() if f".{self.proc.pid}." in p.name)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.communicate(timeout=60)
        assert self.proc.returncode == -signal.SIGKILL


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_sigkill_mid_write_leaves_a_temporary_the_next_write_removes(tmp_path, caplog):
    path = atomic.write_text(tmp_path / "out" / "report.json", "version 1\n")
    folder = path.parent
    writer = _Writer(path)
    try:
        (live,) = writer.temporaries(folder)
        assert live.name.startswith(f".report.json.{writer.proc.pid}.") and live.name.endswith(".tmp")
        atomic.write_text(path, "version 2 from another writer\n")
        assert live.exists(), "a live writer's temporary was removed"
        assert atomic.stale_temporaries(path) == []
    finally:
        writer.kill()
    assert path.read_text() == "version 2 from another writer\n"
    (stale,) = writer.temporaries(folder)
    assert stale == live and stale.read_text().startswith("half of version 2")
    assert atomic.stale_temporaries(path) == [stale]

    # what must survive: another target's stale temporary, a file that only looks like one, a
    # temporary of a live process, and a dead writer's temporary newer than the write
    dead = writer.proc.pid
    keep = [f".other.json.{dead}.abcd1234.tmp", f".report.json.{dead}.tmp", f".report.json.x{dead}.abcd1234.tmp",
            f".report.json.{os.getpid()}.abcd1234.tmp", f"report.json.{dead}.abcd1234.tmp"]  # fmt: skip
    for name in keep:
        (folder / name).write_text("not stale")
    newer = folder / f".report.json.{dead}.zzzz9999.tmp"
    newer.write_text("written after this write began")
    future = time.time_ns() + 3600 * 10**9
    os.utime(newer, ns=(future, future))

    with caplog.at_level("WARNING", logger="posebh.atomic"):
        atomic.write_text(path, "version 3\n")
    assert path.read_text() == "version 3\n"
    assert not stale.exists()
    assert _names(folder) == sorted(["report.json", newer.name, *keep])
    assert stale.name in caplog.text and str(dead) in caplog.text


def test_failed_write_leaves_stale_temporaries_alone(tmp_path):
    """Only a successful write cleans up: a failing one must not change the folder further."""
    path = atomic.write_text(tmp_path / "a.txt", "v1")
    writer = _Writer(path)
    writer.kill()
    (stale,) = writer.temporaries(tmp_path)
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(path) as tmp:
            tmp.write_text("v2")
            raise RuntimeError("boom")
    assert stale.exists() and path.read_text() == "v1"
    atomic.write_text(path, "v3")
    assert _names(tmp_path) == ["a.txt"]


def test_next_catalog_save_removes_what_a_killed_save_left(tmp_path):
    ds, path, before, make = _dataset(tmp_path, "JSONDataset")
    writer = _Writer(path)
    writer.kill()
    assert len(writer.temporaries(path.parent)) == 1 and path.read_bytes() == before
    ds.save(make(2))
    assert _names(path.parent) == [path.name] and _equal(ds.load(), make(2))
