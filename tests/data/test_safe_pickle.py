import collections
import io
import os
import pickle
import struct
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest

from posebh.data.errors import DataFileError
from posebh.data.safe_pickle import allowed, safe_load


def _payload():
    return {
        "sequence": "courtyard_basketball_00",
        "jointPositions": [np.arange(12.0).reshape(2, 6), np.ones((2, 6), np.float32)],
        "cam_intrinsics": np.eye(3),
        "campose_valid": [np.array([True, False])],
        "genders": ["m", "f"],
        "ints": np.arange(5, dtype=np.int16),
        "strings": np.array(["a", "bc"]),
        "objects": np.array([1, "x", None], dtype=object),
        "scalar_f": np.float64(2.5),
        "scalar_i": np.int32(-3),
        "ordered": collections.OrderedDict([("b", 1), ("a", 2)]),
        "set": {1, 2},
        "bytes": b"\x00\xff",
        "complex": 1 + 2j,
        "tuple": (1, 2.0, "three"),
    }


def _assert_same(a, b):
    assert type(a) is type(b)
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    else:
        assert a == b


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_and_containers_round_trip(tmp_path, protocol):
    path = tmp_path / "seq.pkl"
    path.write_bytes(pickle.dumps(_payload(), protocol=protocol))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = safe_load(path)
    _assert_same(got, _payload())


def test_accepts_file_objects():
    got = safe_load(io.BytesIO(pickle.dumps([np.arange(3)], protocol=5)))
    np.testing.assert_array_equal(got[0], [0, 1, 2])


def _short_str(s: bytes) -> bytes:
    return b"U" + bytes([len(s)]) + s  # SHORT_BINSTRING: a Python 2 str


#: dtype('<f8') as numpy 1.x pickled it
_PY2_F8 = b"cnumpy\ndtype\n" + _short_str(b"f8") + b"K\x00K\x01\x87R" + (
    b"(K\x03" + _short_str(b"<") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
)


def _py2_array(values: np.ndarray) -> bytes:
    """A float64 array as Python 2 + numpy 1.x pickled it (protocol 2, module numpy.core)."""
    raw = values.astype("<f8").tobytes()
    return (
        b"cnumpy.core.multiarray\n_reconstruct\n"
        b"cnumpy\nndarray\n" + b"K\x00\x85" + _short_str(b"b") + b"\x87R"
        + b"(K\x01" + b"K" + bytes([len(values)]) + b"\x85"
        + _PY2_F8
        + b"\x89" + b"T" + struct.pack("<I", len(raw)) + raw + b"tb"
    )  # fmt: skip


def test_python2_latin1_pickle(tmp_path):
    values = np.array([1.5, -2.25, 3e10])  # their bytes include non-ASCII values
    body = (
        b"\x80\x02}("
        + _short_str(b"sequence") + _short_str(b"caf\xe9_00")
        + _short_str(b"joints") + _py2_array(values)
        + _short_str(b"ids") + b"c__builtin__\nset\n" + b"]K\x07a\x85R"
        + _short_str(b"fps") + b"cnumpy.core.multiarray\nscalar\n"
        + _PY2_F8 + _short_str(struct.pack("<d", 29.97)) + b"\x86R"
        + b"u."
    )  # fmt: skip
    path = tmp_path / "py2.pkl"
    path.write_bytes(body)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy.core must not go through numpy 2's deprecation shim
        got = safe_load(path)
    assert got["sequence"] == "caf\xe9_00"
    np.testing.assert_array_equal(got["joints"], values)
    assert got["ids"] == {7}
    assert type(got["fps"]) is np.float64 and got["fps"] == 29.97
    with pytest.raises(DataFileError):
        safe_load(path, encoding="ascii")


class _Reduce:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _marker_payloads(marker: Path):
    return {
        "os.system": _Reduce(os.system, (f"touch {marker}",)),
        "builtins.eval": _Reduce(eval, (f"open({str(marker)!r}, 'w')",)),
        "subprocess.Popen": _Reduce(subprocess.Popen, (["touch", str(marker)],)),
        "builtins.open": _Reduce(open, (str(marker), "w")),
        "pathlib.Path": _Reduce(Path, (str(marker),)),
    }


@pytest.mark.parametrize("name", ["os.system", "builtins.eval", "subprocess.Popen", "builtins.open", "pathlib.Path"])
def test_hostile_reduce_is_refused_before_running(tmp_path, name):
    marker = tmp_path / "pwned"
    payload = {"ok": np.arange(3), "nested": [1, {"deep": _marker_payloads(marker)[name]}]}
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(DataFileError) as err:
        safe_load(path)
    assert "forbidden global" in str(err.value)
    assert str(path) in str(err.value)
    assert not marker.exists()


def test_the_hostile_payload_would_run_without_the_restriction(tmp_path):
    """Control: the payload is live, so the refusal above is what protects the file system."""
    marker = tmp_path / "pwned"
    data = pickle.dumps(_marker_payloads(marker)["builtins.open"], protocol=2)
    pickle.loads(data).close()
    assert marker.exists()


@pytest.mark.parametrize(
    "module, name, ok",
    [
        ("numpy._core.multiarray", "_reconstruct", True),
        ("numpy.core.multiarray", "_reconstruct", True),
        ("numpy.core.multiarray", "scalar", True),
        ("numpy._core.numeric", "_frombuffer", True),
        ("numpy", "dtype", True),
        ("__builtin__", "set", True),
        ("builtins", "getattr", False),
        ("builtins", "__import__", False),
        ("numpy", "load", False),
        ("numpy.core.multiarray", "fromfile", False),
        ("posix", "system", False),
        ("collections", "OrderedDict", True),
        ("collections", "namedtuple", False),
    ],
)
def test_allow_list(module, name, ok):
    assert allowed(module, name) is ok


def test_truncated_and_missing_files(tmp_path):
    path = tmp_path / "cut.pkl"
    path.write_bytes(pickle.dumps({"a": np.arange(100)}, protocol=5)[:40])
    with pytest.raises(DataFileError, match="cut.pkl"):
        safe_load(path)
    with pytest.raises(DataFileError, match="not found"):
        safe_load(tmp_path / "absent.pkl")
