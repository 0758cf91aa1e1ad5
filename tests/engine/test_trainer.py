import csv
import math

import pytest
import torch

from posebh.engine.checkpoint import load_checkpoint
from posebh.engine.stages import StageSpec
from posebh.engine.trainer import EPOCHS_FILE, METRICS_FILE, NonFiniteLossError, train_stage

from .toys import Crash, ToyDataset, ToyObjective, assert_identical, make_model, stage_dict, weights

STEPS_PER_EPOCH = 4  # 16 samples, batch 4
TOTAL_STEPS = 3 * STEPS_PER_EPOCH


def run(out, *, stage=None, objective=None, model=None, **kw):
    model = model if model is not None else make_model(dropout=0.1)
    objective = objective if objective is not None else ToyObjective()
    res = train_stage(model, objective, ToyDataset(), stage or stage_dict(), out_dir=out, progress=False, **kw)
    return model, objective, res


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run: final weights, objective state and history."""
    model, obj, res = run(tmp_path_factory.mktemp("ref"))
    return weights(model), obj.state_dict(), res


def test_uninterrupted_run_is_reproducible(tmp_path, reference):
    model, obj, res = run(tmp_path)
    assert_identical(weights(model), reference[0])
    assert res.global_step == TOTAL_STEPS and obj.calls == TOTAL_STEPS
    assert not torch.equal(weights(make_model(dropout=0.1))["heads.0.weight"], reference[0]["heads.0.weight"])


# crash points: first step (no checkpoint yet), right after a mid-epoch checkpoint (3), the first
# step of an epoch (4: resumes from the epoch-end checkpoint), mid-epoch, the last step
@pytest.mark.parametrize("crash_at", [0, 3, 4, 7, 10, 11])
def test_crash_and_resume_is_bit_identical(tmp_path, reference, crash_at):
    with pytest.raises(Crash):
        run(tmp_path, objective=ToyObjective(crash_at=crash_at))
    model, obj, res = run(tmp_path)  # a new process would start like this: fresh model, fresh objective
    assert_identical(weights(model), reference[0])
    assert torch.equal(obj.state_dict()["gen"], reference[1]["gen"])
    assert res.global_step == TOTAL_STEPS
    if crash_at >= 3:
        assert res.resumed_from is not None and res.resumed_from["epoch"] * STEPS_PER_EPOCH + res.resumed_from["batches_done"] <= crash_at
    ref_rows = reference[2].history
    assert [r["step"] for r in res.history] == [r["step"] for r in ref_rows]
    assert [r["loss"] for r in res.history] == [r["loss"] for r in ref_rows]
    assert [r["loss"] for r in res.epochs] == [r["loss"] for r in reference[2].epochs]


def test_finished_checkpoint_makes_a_rerun_a_no_op(tmp_path, reference):
    run(tmp_path)
    model, obj, res = run(tmp_path, model=make_model(seed=5, dropout=0.1))
    assert obj.calls == TOTAL_STEPS and obj.stage_starts == []  # restored, not trained again
    assert_identical(weights(model), reference[0])
    assert res.metrics == reference[2].metrics | {"images_per_s": res.metrics["images_per_s"], "seconds": res.metrics["seconds"]}


def test_resume_refuses_a_different_stage_config(tmp_path):
    with pytest.raises(Crash):
        run(tmp_path, objective=ToyObjective(crash_at=6))
    with pytest.raises(ValueError, match=r"differs in \['optimizer'\].*resume=False"):
        run(tmp_path, stage=stage_dict(optimizer={"type": "adamw", "lr": 0.1, "weight_decay": 0.05}))
    run(tmp_path, stage=stage_dict(log_every=2))  # bookkeeping keys may change
    _, _, res = run(tmp_path, stage=stage_dict(optimizer={"type": "adam", "lr": 0.01}), resume=False)
    assert res.resumed_from is None


def test_workers_give_the_same_run(tmp_path, reference):
    model, _, _ = run(tmp_path, num_workers=2)
    assert_identical(weights(model), reference[0])


def test_freeze_events_change_exactly_the_trainable_parameters(tmp_path):
    stage = stage_dict(
        epochs=4, trainable=["embedding"], checkpoint_steps=None, layer_decay=None, grad_clip=None,
        events=[{"epoch": 1, "thaw": ["heads"]}, {"epoch": 2, "freeze": ["embedding"], "thaw": ["backbone"]},
                {"epoch": 3, "freeze": ["backbone"]}],
    )
    obj = ToyObjective(record=True)
    model, _, _ = run(tmp_path, stage=stage, objective=obj)
    snaps = [obj.epoch_snapshots[e] for e in range(4)] + [weights(model)]
    spec = StageSpec.from_dict(stage)
    for epoch in range(4):
        changed = {k for k in snaps[epoch] if not torch.equal(snaps[epoch][k], snaps[epoch + 1][k])}
        prefixes = spec.trainable_at(epoch)
        expected = {k for k in snaps[epoch] if any(k.startswith(p + ".") for p in prefixes)}
        assert changed == expected, f"epoch {epoch}: trainable {sorted(prefixes)}"


def test_nonfinite_steps_are_skipped_and_counted(tmp_path):
    # step 2: NaN loss; step 3: finite loss but infinite gradients; step 5: NaN loss
    obj = ToyObjective(nan_steps={2, 5}, inf_grad_steps={3}, record=True)
    model, _, res = run(tmp_path, objective=obj, stage=stage_dict(max_nonfinite=3))
    assert res.nonfinite_skipped == 3 and res.global_step == TOTAL_STEPS
    snaps = obj.step_snapshots
    assert_identical(snaps[1], snaps[2])
    assert_identical(snaps[1], snaps[3])  # steps 2 and 3 changed nothing
    assert_identical(snaps[4], snaps[5])
    assert not all(torch.equal(snaps[3][k], snaps[4][k]) for k in snaps[3])  # step 4 trained
    skipped = [r["step"] for r in res.history if r["skipped"]]
    assert skipped == [3, 4, 6]  # 1-based step counters of 0-based iterations 2, 3, 5
    assert math.isnan(res.history[2]["loss"]) and math.isfinite(res.history[3]["loss"])
    assert [r["skipped"] for r in res.epochs] == [2, 1, 0]
    assert all(math.isfinite(r["loss"]) for r in res.epochs)
    assert all(torch.isfinite(v).all() for v in weights(model).values())


def test_too_many_nonfinite_losses_stop_the_run(tmp_path):
    with pytest.raises(NonFiniteLossError) as e:
        run(tmp_path, objective=ToyObjective(nan_from=5), stage=stage_dict(max_nonfinite=3))
    msg = str(e.value)
    assert "'toy'" in msg and "3 consecutive non-finite" in msg and "step 8" in msg and "checkpoint.pt" in msg
    rows = list(csv.DictReader(open(tmp_path / METRICS_FILE)))
    assert [r["skipped"] for r in rows] == ["0"] * 5 + ["1"] * 3
    # the checkpoint holds a state from before the non-finite streak
    assert load_checkpoint(tmp_path / "checkpoint.pt")["global_step"] <= 6


def test_metrics_csv_columns_and_rows(tmp_path):
    _, _, res = run(tmp_path, stage=stage_dict(log_every=5, epochs=4))
    with open(tmp_path / METRICS_FILE) as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == ["stage", "epoch", "step", "lr", "loss", "mse", "reg", "grad_norm", "skipped",
                                 "images_per_s", "step_seconds", "seconds"]
    assert [int(r["step"]) for r in rows] == [5, 10, 15]  # 16 steps, one row per logged step
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert all(float(r["images_per_s"]) > 0 for r in rows) and len(res.history) == 3
    with open(tmp_path / EPOCHS_FILE) as f:
        reader = csv.DictReader(f)
        erows = list(reader)
    assert reader.fieldnames == ["stage", "epoch", "step", "lr", "loss", "mse", "reg", "grad_norm", "skipped",
                                 "images_per_s", "seconds"]
    assert [int(r["epoch"]) for r in erows] == [0, 1, 2, 3] and [int(r["step"]) for r in erows] == [4, 8, 12, 16]
    # lr column follows the schedule: after warm-up 0.05, x0.1 from epoch 2
    assert float(erows[1]["lr"]) == pytest.approx(0.05) and float(erows[3]["lr"]) == pytest.approx(0.005)


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="exceeds"):
        run(tmp_path, stage=stage_dict(batch_size=32))
    with pytest.raises(ValueError, match="sum to 15"):
        run(tmp_path, dataset_sizes=[10, 5])

    class Bad(ToyObjective):
        def __call__(self, model, batch, *, epoch, step):
            return {"mse": torch.zeros(())}

    with pytest.raises(TypeError, match="'loss'"):
        run(tmp_path / "b", objective=Bad())

    class Unsafe(ToyObjective):
        def state_dict(self):
            return {"config": object()}

    with pytest.raises(TypeError, match="objective.state_dict"):
        run(tmp_path / "c", objective=Unsafe())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_amp_paths_resume_exactly(tmp_path, monkeypatch, dtype):
    """The CUDA AMP code path (autocast + GradScaler for fp16), forced onto CPU autocast."""
    from posebh.engine import trainer

    monkeypatch.setattr(trainer, "amp_dtype", lambda mode, device: dtype)
    stage = stage_dict(amp="fp16" if dtype == torch.float16 else "bf16")
    bad = {"nan_steps": {5}, "inf_grad_steps": {3}}
    ref_model, _, ref = run(tmp_path / "ref", stage=stage, objective=ToyObjective(**bad))
    if dtype == torch.float16:
        # infinite gradients are the scaler's business: it skips the step and halves the scale
        assert ref.nonfinite_skipped == 1 and ref.history[-1]["loss_scale"] == trainer.FP16_INIT_SCALE / 2
    else:
        assert ref.nonfinite_skipped == 2 and "loss_scale" not in ref.history[0]
    with pytest.raises(Crash):
        run(tmp_path / "b", stage=stage, objective=ToyObjective(**bad, crash_at=8))
    model, _, res = run(tmp_path / "b", stage=stage, objective=ToyObjective(**bad))
    assert_identical(weights(model), weights(ref_model))
    assert res.history[-1].get("loss_scale") == ref.history[-1].get("loss_scale")


def test_amp_is_off_on_cpu():
    from posebh.engine.trainer import amp_dtype

    assert {amp_dtype(m, torch.device("cpu")) for m in ("bf16", "fp16", "off")} == {None}
