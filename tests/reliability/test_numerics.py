"""Numerical faults and reproducibility through the real model, objective and loader on CPU.

A NaN in a batch's images or an infinite loss term skips the step (counted, logged, weights
untouched); ``max_nonfinite`` in a row stop the run with a clear message; an fp16 overflow is the
scaler's business (CPU autocast stands in for CUDA, as in ``tests/engine``). Two runs of a tiny
stage from scratch give bit-identical weights and the same metrics files (wall-clock columns
aside). One known gap (a skipped step still updates buffers) is pinned as a strict xfail.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from posebh import skeletons
from posebh.data.schema import make_table
from posebh.data.topdown import TopDownDataset
from posebh.data.transforms import reference_augment
from posebh.engine import trainer
from posebh.engine.objective import ObjectiveConfig, PoseBHObjective
from posebh.engine.trainer import EPOCHS_FILE, METRICS_FILE, NonFiniteLossError, train_stage
from posebh.models.posebh import ModelConfig, PoseBH

DATASETS = ("coco", "aic")
IMAGE_WH = (160, 200)
IMG_HW = (64, 48)  # a small input keeps a step of the tiny model well under a second
#: wall-clock columns of the metrics files; everything else must repeat exactly
TIMING = {"images_per_s", "step_seconds", "seconds"}


@pytest.fixture(autouse=True)
def _no_fsync(monkeypatch):
    """Checkpoints are written as usual, without waiting for the disk (durability is not under test here)."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: the tiny model gains nothing from more, and spinning threads on a
    shared machine made these steps many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def instances(tmp_path_factory):
    """Two instances per dataset on noise images (4 samples: 2 steps of batch 2 per epoch)."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    rows = []
    for name in DATASETS:
        k = skeletons.get(name).num_keypoints
        for i in range(2):
            fname = f"{name}/{i}.png"
            (root / name).mkdir(exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (IMAGE_WH[1], IMAGE_WH[0], 3), dtype=np.uint8)).save(root / fname)
            kp = np.stack([rng.uniform(40, 120, k), rng.uniform(40, 160, k), np.full(k, 2.0)], 1)
            rows.append(dict(dataset=name, file_name=fname, keypoints=kp.reshape(-1), num_keypoints=k,
                             image_id=i, instance_id=i))  # fmt: skip
    n = len(rows)
    table = make_table(
        {
            **{key: [r[key] for r in rows] for key in rows[0]},
            "split": "train", "width": IMAGE_WH[0], "height": IMAGE_WH[1], "bbox": np.tile([30.0, 30.0, 100.0, 140.0], (n, 1)),
            "area": 1000.0, "iscrowd": 0, "category_id": 1, "category": "person",
        },
        n,
    )  # fmt: skip
    return table, root


def stage(**over) -> dict:
    d = {
        "name": "tiny",
        "epochs": 2,
        "batch_size": 2,
        "optimizer": {"type": "adamw", "lr": 1e-3, "weight_decay": 0.05},
        "layer_decay": 0.8,
        "grad_clip": 1.0,
        "trainable": ["backbone", "heads", "embedding"],
        "losses": {"heatmap": True, "prototypes": True, "phm": True, "css": True},
        "amp": "off",
        "seed": 3,
        "log_every": 1,
    }
    d.update(over)
    return d


class Faulty(PoseBHObjective):
    """The real objective; at ``nan_steps`` (or from ``nan_from``) one pixel of the batch is NaN.
    Records the model state after every step."""

    def __init__(self, *args, nan_steps=(), nan_from=None, scale_steps=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.nan_steps, self.nan_from, self.scale_steps = set(nan_steps), nan_from, set(scale_steps)
        self.snapshots: list[dict[str, torch.Tensor]] = []
        self.initial: dict[str, torch.Tensor] = {}

    def start_stage(self, model, stage, epoch):
        super().start_stage(model, stage, epoch)
        self.initial = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def __call__(self, model, batch, *, epoch, step):
        if step in self.nan_steps or (self.nan_from is not None and step >= self.nan_from):
            image = batch["image"].clone()
            image[0, 0, 5, 5] = float("nan")
            batch = {**batch, "image": image}
        out = super().__call__(model, batch, epoch=epoch, step=step)
        if step in self.scale_steps:  # gradients far beyond fp16's range
            out = {**out, "loss": out["loss"] * 1e30}
        return out

    def after_step(self, model):
        super().after_step(model)
        self.snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})


def build(instances, spec: dict, seed: int = 0, **faults):
    table, root = instances
    torch.manual_seed(seed)
    config = ModelConfig(size="tiny", datasets=DATASETS, img_size=IMG_HW)
    model = PoseBH(config)
    obj_cfg = ObjectiveConfig()
    data = TopDownDataset(table, image_roots={d: root for d in DATASETS}, datasets=DATASETS, input_size=config.input_wh,
                          udp=set(obj_cfg.udp_datasets), augment={d: reference_augment(d) for d in DATASETS}, train=True,
                          seed=spec["seed"])  # fmt: skip
    obj = Faulty(obj_cfg, datasets=DATASETS, input_wh=config.input_wh, heatmap_wh=config.heatmap_wh, **faults)
    return model, obj, data


def run(instances, out: Path, spec: dict, **faults):
    model, obj, data = build(instances, spec, **faults)
    res = train_stage(model, obj, data, spec, out_dir=out, progress=False)
    return model, obj, res


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _params(state: dict) -> dict:
    """The weights only: BatchNorm statistics legitimately move on a step whose forward was finite."""
    return {k: v for k, v in state.items() if "running_" not in k and "num_batches_tracked" not in k}


def _finite(state: dict) -> bool:
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def _rows(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, [{k: v for k, v in r.items() if k not in TIMING} for r in reader]


# ----------------------------------------------------------------------------------------------
# Non-finite losses
# ----------------------------------------------------------------------------------------------


def test_nan_in_the_images_skips_the_step(tmp_path, instances, caplog):
    spec = stage(epochs=2, max_nonfinite=2, losses={"heatmap": True})
    with caplog.at_level(logging.WARNING, logger="posebh.engine.trainer"):
        model, obj, res = run(instances, tmp_path, spec, nan_steps={1, 3})  # not in a row: the run goes on
    assert res.global_step == 4 and res.nonfinite_skipped == 2
    snaps = [_params(s) for s in obj.snapshots]
    assert _same(snaps[0], snaps[1]) and _same(snaps[2], snaps[3])  # the skipped steps changed no weight
    assert not _same(snaps[1], snaps[2])  # the next step trains
    assert _finite(_params(model.state_dict()))
    assert [r["skipped"] for r in res.history] == [0, 1, 0, 1]
    assert math.isnan(res.history[1]["loss"]) and math.isfinite(res.history[2]["loss"])
    assert [r["skipped"] for r in res.epochs] == [1, 1]
    assert all(math.isfinite(r["loss"]) for r in res.epochs)  # epoch means leave the skipped steps out
    warned = [r.getMessage() for r in caplog.records if "non-finite" in r.getMessage()]
    assert len(warned) == 2 and all("step skipped (1 in a row)" in w for w in warned)
    _, rows = _rows(tmp_path / METRICS_FILE)
    assert [r["skipped"] for r in rows] == ["0", "1", "0", "1"]


def test_a_skipped_step_leaves_buffers_and_prototypes_untouched(tmp_path, instances):
    spec = stage(epochs=1, max_nonfinite=2, losses={"heatmap": True, "prototypes": True, "phm": True})
    model, obj, res = run(instances, tmp_path, spec, nan_steps={0})
    assert res.nonfinite_skipped == 1
    assert _same(obj.initial, obj.snapshots[0]), [k for k in obj.initial if not torch.equal(obj.initial[k], obj.snapshots[0][k])]
    assert _finite(dict(model.state_dict()))


def test_a_nan_streak_stops_the_run_with_a_clear_message(tmp_path, instances):
    with pytest.raises(NonFiniteLossError) as e:
        run(instances, tmp_path, stage(epochs=3, max_nonfinite=2, losses={"heatmap": True}), nan_from=1)
    msg = str(e.value)
    assert "'tiny'" in msg and "2 consecutive non-finite losses or gradients" in msg and "(max_nonfinite=2)" in msg
    assert "step 3" in msg and str(tmp_path / "checkpoint.pt") in msg
    _, rows = _rows(tmp_path / METRICS_FILE)
    assert [r["skipped"] for r in rows] == ["0", "1", "1"]


def test_an_infinite_loss_term_is_named_when_the_run_stops(tmp_path, instances, monkeypatch):
    from posebh import losses

    real = losses.heatmap_mse
    monkeypatch.setattr(losses, "heatmap_mse", lambda *a, **k: real(*a, **k) * float("inf"))
    with pytest.raises(NonFiniteLossError) as e:
        run(instances, tmp_path, stage(max_nonfinite=3, losses={"heatmap": True}))
    assert "3 consecutive" in str(e.value) and "'heatmap': inf" in str(e.value)


def test_fp16_overflow_is_handled_by_the_scaler(tmp_path, instances, monkeypatch):
    """fp16 autocast with a GradScaler, on CPU: an overflowing step is skipped by the scaler, which
    halves its scale; it is not a non-finite loss, and training goes on."""
    monkeypatch.setattr(trainer, "amp_dtype", lambda mode, device: torch.float16)
    spec = stage(amp="fp16", losses={"heatmap": True}, max_nonfinite=1)
    model, obj, res = run(instances, tmp_path, spec, scale_steps={1})
    scales = [r["loss_scale"] for r in res.history]
    assert scales == [trainer.FP16_INIT_SCALE] + [trainer.FP16_INIT_SCALE / 2] * 3
    assert math.isnan(res.history[1]["grad_norm"]) and math.isfinite(res.history[2]["grad_norm"])
    assert res.nonfinite_skipped == 0 and res.global_step == 4
    snaps = [_params(s) for s in obj.snapshots]
    assert _same(snaps[0], snaps[1]) and not _same(snaps[1], snaps[2])  # the scaler skipped the update
    assert _finite(dict(model.state_dict()))


# ----------------------------------------------------------------------------------------------
# Reproducibility
# ----------------------------------------------------------------------------------------------


def test_two_runs_from_scratch_are_identical(tmp_path, instances):
    a_model, _, a = run(instances, tmp_path / "a", stage())
    torch.rand(100), np.random.rand(10)  # whatever ran before must not matter
    b_model, _, b = run(instances, tmp_path / "b", stage())
    assert _same(dict(a_model.state_dict()), dict(b_model.state_dict()))
    assert a.global_step == b.global_step == 4
    for name in (METRICS_FILE, EPOCHS_FILE):
        cols_a, rows_a = _rows(tmp_path / "a" / name)
        cols_b, rows_b = _rows(tmp_path / "b" / name)
        assert cols_a == cols_b and rows_a == rows_b
        assert {"loss", "heatmap", "prototypes", "phm", "css", "grad_norm"} <= set(cols_a)


def test_run_stage_from_scratch_is_reproducible(tmp_path, instances):
    """The Kedro node's entry point, twice from scratch in one process: same weights, same log."""
    from posebh.engine.run import run_stage

    table, root = instances
    kw = dict(
        model={"size": "tiny", "datasets": list(DATASETS), "img_size": list(IMG_HW)},
        objective={},
        data={"split": "train", "augment": True, "progress": False},
        instances=table,
        sources={d: [{"format": "coco", "split": "train", "image_root": str(root)}] for d in DATASETS},
        init=None,
        device="cpu",
    )
    spec = stage(epochs=1, losses={"heatmap": True})
    state_a, hist_a, _ = run_stage(spec, checkpoint_root=tmp_path / "a", **kw)
    torch.rand(100)  # another node used the global RNG in between
    state_b, hist_b, _ = run_stage(spec, checkpoint_root=tmp_path / "b", **kw)
    assert _same(state_a["state_dict"], state_b["state_dict"])
    drop = [c for c in hist_a.columns if c in TIMING]
    assert hist_a.drop(columns=drop).equals(hist_b.drop(columns=drop))
