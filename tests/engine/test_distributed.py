"""Two gloo processes on CPU (spawn_local) against one process with the same global batch."""

from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from posebh.engine import distributed as D
from posebh.engine.trainer import train_stage

from .toys import ToyDataset, ToyObjective, make_model, stage_dict, weights

pytestmark = pytest.mark.slow  # fresh processes: ~10 s each on 2 cores

WORLD = 2
GLOBAL_BATCH = 4
NAN_STEP = 2


def ddp_stage(batch_size: int) -> dict:
    # heads alone first, then the backbone and embedding thaw: DDP must be re-wrapped at epoch 1,
    # or their gradients would never be averaged and the ranks would drift apart
    return stage_dict(batch_size=batch_size, trainable=["heads"],
                      events=[{"epoch": 1, "thaw": ["backbone", "embedding"]}], checkpoint_steps=None)


def _ddp_worker(info: D.DistInfo, out: str) -> None:
    assert (info.rank, info.world_size, D.world(), D.is_main()) == (D.rank(), WORLD, WORLD, info.rank == 0)
    assert info.backend == "gloo"
    assert [g["rank"] for g in D.all_gather_objects({"rank": info.rank})] == [0, 1]
    assert D.any_true(torch.tensor(info.rank == 1)) and not D.any_true(torch.tensor(False))
    model = make_model()
    # a non-finite loss on rank 1 only must make every rank skip that step
    objective = ToyObjective(noise=False, nan_steps={NAN_STEP} if info.rank == 1 else ())
    res = train_stage(model, objective, ToyDataset(), ddp_stage(GLOBAL_BATCH // WORLD),
                      out_dir=Path(out) / "run", progress=False)
    torch.save({"weights": weights(model), "steps": res.global_step, "skipped": res.nonfinite_skipped},
               Path(out) / f"rank{info.rank}.pt")


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no gloo backend")
def test_two_process_ddp_matches_one_process(tmp_path):
    D.spawn_local(_ddp_worker, WORLD, str(tmp_path))
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["steps"] == r1["steps"] == 12 and r0["skipped"] == r1["skipped"] == 1
    for k in r0["weights"]:
        assert torch.equal(r0["weights"][k], r1["weights"][k]), f"ranks disagree on {k}"
    # only rank 0 wrote the run's files
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoint.pt", "epochs.csv", "metrics.csv"]

    single = make_model()
    train_stage(single, ToyObjective(noise=False, nan_steps={NAN_STEP}), ToyDataset(), ddp_stage(GLOBAL_BATCH),
                out_dir=tmp_path / "single", progress=False)
    init = weights(make_model())
    for k, v in weights(single).items():
        assert not torch.equal(v, init[k]), f"{k} never trained"
        torch.testing.assert_close(r0["weights"][k], v, rtol=1e-5, atol=1e-6, msg=lambda m: f"{k}: {m}")


def test_single_process_fallbacks(monkeypatch):
    for k in D.ENV_KEYS:
        monkeypatch.delenv(k, raising=False)
    info = D.init_distributed()
    assert (info.rank, info.world_size, info.backend) == (0, 1, None) and not dist.is_initialized()
    m = torch.nn.Linear(2, 2)
    assert D.wrap_ddp(m) is m and D.unwrap(m) is m and D.is_main() and D.world() == 1
    D.barrier()
    assert D.all_gather_objects(3) == [3] and D.any_true(torch.tensor(True)) and not D.any_true(torch.tensor(False))
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="torchrun"):
        D.init_distributed()
