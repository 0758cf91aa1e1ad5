import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from posebh.engine.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


class Payload:
    """Unpickling this would create ``marker``: the code a checkpoint must never run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def state(v: float) -> dict:
    return {"model": {"w": torch.full((3, 3), v)}, "epoch": 2, "name": "s", "lrs": [0.1, 0.01], "none": None}


def test_roundtrip(tmp_path):
    p = save_checkpoint(tmp_path / "c.pt", state(1.0))
    got = load_checkpoint(p)
    assert torch.equal(got["model"]["w"], torch.ones(3, 3)) and got["lrs"] == [0.1, 0.01] and got["none"] is None
    assert latest_checkpoint(tmp_path) is None  # only checkpoint.pt counts
    save_checkpoint(tmp_path / "checkpoint.pt", state(1.0))
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint.pt"


def test_failing_write_leaves_the_previous_checkpoint(tmp_path):
    p = tmp_path / "checkpoint.pt"
    save_checkpoint(p, state(1.0))
    before = p.read_bytes()

    def dies_half_way(obj, f):
        f.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(p, state(2.0), writer=dies_half_way)
    assert p.read_bytes() == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["checkpoint.pt"]  # no temp file left
    assert torch.equal(load_checkpoint(p)["model"]["w"], torch.ones(3, 3))


@pytest.mark.parametrize("dump", ["pickle", "torch"])
def test_code_carrying_pickle_is_refused(tmp_path, dump):
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.pt"
    obj = {"model": Payload(marker)}
    if dump == "pickle":
        p.write_bytes(pickle.dumps(obj, protocol=2))
    else:
        torch.save(obj, p)
    assert not marker.exists()
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(p)
    assert str(p) in str(e.value) and "refused" in str(e.value)
    assert not marker.exists()
    # the same bytes do run code through a plain unpickler: the test payload is real
    pickle.loads(pickle.dumps(obj))
    assert marker.exists()


def test_missing_empty_truncated(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file") as e:
        load_checkpoint(tmp_path / "nope.pt")
    assert "nope.pt" in str(e.value)
    assert isinstance(e.value, FileNotFoundError)  # what model loading and the CLI catch
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pt: not a readable PyTorch checkpoint .*empty"):
        load_checkpoint(tmp_path / "empty.pt")
    good = save_checkpoint(tmp_path / "good.pt", state(1.0))
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cut.pt: not a readable PyTorch checkpoint") as e:
        load_checkpoint(cut)
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="list.pt: expected a dict at the top level, found list"):
        load_checkpoint(tmp_path / "list.pt")


def test_engine_and_models_share_one_reader_and_one_error(tmp_path):
    """One CheckpointError for both packages: a ValueError (model loading) and a RuntimeError (training)."""
    from posebh.models import checkpoint_io
    from posebh.models import checkpoints as model_checkpoints

    assert CheckpointError is checkpoint_io.CheckpointError is model_checkpoints.CheckpointError
    assert model_checkpoints.read_checkpoint is checkpoint_io.read_checkpoint
    assert issubclass(CheckpointError, ValueError) and issubclass(CheckpointError, RuntimeError)
    rng = np.random.default_rng(0)
    junk = tmp_path / "junk.pt"
    for size in (1, 3, 40, 700) * 10:  # random bytes: whatever torch's unpickler raises becomes one error
        junk.write_bytes(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
        with pytest.raises(CheckpointError, match="junk.pt: not a readable PyTorch checkpoint"):
            load_checkpoint(junk)
    # every global torch refuses is named, whichever of its two messages it uses
    evil = tmp_path / "evil.pt"
    for obj, name in ((exec, "exec"), (np.array([None], dtype=object), "numpy"), (random.Random, "random.Random")):
        torch.save({"x": obj}, evil)
        with pytest.raises(CheckpointError, match=rf"evil.pt: refused: unpickling it would import {name}"):
            model_checkpoints.read_checkpoint(evil)


def test_non_plain_state_is_refused_before_writing(tmp_path):
    with pytest.raises(TypeError, match=r"state\['objective'\]\['cfg'\].*set"):
        save_checkpoint(tmp_path / "c.pt", {"objective": {"cfg": {1, 2}}})
    with pytest.raises(TypeError, match="Linear"):
        save_checkpoint(tmp_path / "c.pt", {"model": torch.nn.Linear(1, 1)})
    assert not any(tmp_path.iterdir())


def test_rng_state_roundtrip_through_a_checkpoint(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    np.random.randn()  # leave a cached gaussian in numpy's state
    save_checkpoint(tmp_path / "c.pt", {"rng": rng_state()})
    first = (random.random(), np.random.randn(3), torch.rand(3))
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    again = (random.random(), np.random.randn(3), torch.rand(3))
    assert first[0] == again[0] and np.array_equal(first[1], again[1]) and torch.equal(first[2], again[2])
