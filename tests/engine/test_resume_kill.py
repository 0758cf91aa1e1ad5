"""A hard kill (SIGKILL, no cleanup) at a random step or in the middle of a save, then a resume."""

import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from posebh.engine.checkpoint import latest_checkpoint, load_checkpoint

from .toys import ToyDataset, ToyObjective, assert_identical, make_model, stage_dict, weights

pytestmark = pytest.mark.slow  # fresh processes: ~10 s each on 2 cores

WORKER = Path(__file__).with_name("resume_worker.py")
TOTAL_STEPS = 12
CHECKPOINT_STEPS = stage_dict()["checkpoint_steps"]


def worker(out: Path, result: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(WORKER), str(out), str(result), *extra], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    from posebh.engine.trainer import train_stage

    model = make_model(dropout=0.1)
    train_stage(model, ToyObjective(), ToyDataset(), stage_dict(), out_dir=tmp_path_factory.mktemp("ref"), progress=False)
    return weights(model)


def test_sigkill_at_a_random_step_then_resume(tmp_path, uninterrupted):
    kill_at = random.Random().randrange(CHECKPOINT_STEPS, TOTAL_STEPS)  # after at least one checkpoint
    first = worker(tmp_path / "run", tmp_path / "r.pt", "--kill-at", str(kill_at))
    assert first.returncode == -signal.SIGKILL, f"kill_at={kill_at}: {first.stderr[-2000:]}"
    assert not (tmp_path / "r.pt").exists()
    saved = load_checkpoint(latest_checkpoint(tmp_path / "run"))
    assert 0 < saved["global_step"] <= kill_at and not saved["finished"]

    second = worker(tmp_path / "run", tmp_path / "r.pt")
    assert second.returncode == 0, second.stderr[-2000:]
    result = torch.load(tmp_path / "r.pt", weights_only=True)
    assert result["resumed_from"] is not None and result["steps"] == TOTAL_STEPS
    assert_identical(result["weights"], uninterrupted), f"kill_at={kill_at}"


def test_sigkill_inside_a_checkpoint_save(tmp_path, uninterrupted):
    first = worker(tmp_path / "run", tmp_path / "r.pt", "--kill-in-save", "3")
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
    leftovers = [p.name for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]
    assert leftovers, "the kill should have happened between write and rename"
    saved = load_checkpoint(latest_checkpoint(tmp_path / "run"))  # the previous (2nd) checkpoint is intact
    assert saved["global_step"] == 4  # saves: step 3 (mid-epoch), step 4 (epoch end), [step 6 killed]

    second = worker(tmp_path / "run", tmp_path / "r.pt")
    assert second.returncode == 0, second.stderr[-2000:]
    assert_identical(torch.load(tmp_path / "r.pt", weights_only=True)["weights"], uninterrupted)
    assert not [p.name for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]  # cleaned on resume
