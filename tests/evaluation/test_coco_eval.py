"""OKS AP through pycocotools: GT conversion, area rules, WholeBody parts, CrowdPose levels,
OCHuman's occluded-joint variant and the result files. Expectations come from the raw JSON
files read directly by pycocotools, or from OKS computed by hand in the test."""

from __future__ import annotations

import contextlib
import io
import json
import zipfile

import numpy as np
import pandas as pd
import pytest
from conftest import sample

from posebh import data, skeletons
from posebh.data.schema import make_table
from posebh.evaluation import coco_eval
from posebh.evaluation.coco_eval import (
    STAT_NAMES,
    crowdpose_ap,
    occluded_keypoint_ap,
    oks_ap,
    to_coco_results,
    wholebody_ap,
    write_results_json,
    write_submission_zip,
)

OKS_THRESHOLDS = np.linspace(0.5, 0.95, 10)


def predictions_from(gt: pd.DataFrame, keypoints=None, score=1.0) -> pd.DataFrame:
    """GT-box predictions: GT joints with score 1 where labelled and 0 elsewhere (a "perfect" model)."""
    if keypoints is None:
        kps = np.stack(gt["keypoints"].to_numpy()).astype(np.float64).reshape(len(gt), -1, 3)
        kps[..., 2] = kps[..., 2] > 0
        keypoints = list(kps.reshape(len(gt), -1))
    return pd.DataFrame(
        {
            "dataset": gt["dataset"].to_numpy(),
            "split": gt["split"].to_numpy(),
            "image_id": gt["image_id"].to_numpy(),
            "instance_id": gt["instance_id"].to_numpy(),
            "keypoints": keypoints,
            "score": score,
            "box_score": 1.0,
            "bbox": list(gt["bbox"]),
        }
    )


def noisy(gt: pd.DataFrame, sigma_px: float, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    pred = predictions_from(gt)
    kps = np.stack(pred["keypoints"].to_numpy()).reshape(len(pred), -1, 3)
    kps[..., :2] += rng.normal(0.0, sigma_px, kps[..., :2].shape)
    pred["keypoints"] = list(kps.reshape(len(pred), -1))
    return pred


def constructed_gt(dataset: str, rows: list[dict]) -> pd.DataFrame:
    """A unified table from a few hand-made rows (keypoints given as (K, 3))."""
    n = len(rows)
    return make_table(
        {
            "dataset": dataset,
            "split": "val",
            "image_id": [r["image_id"] for r in rows],
            "file_name": [f"{r['image_id']}.jpg" for r in rows],
            "width": 1000,
            "height": 1000,
            "instance_id": np.arange(1, n + 1),
            "bbox": np.asarray([r["bbox"] for r in rows], np.float64),
            "area": [r.get("area", r["bbox"][2] * r["bbox"][3]) for r in rows],
            "iscrowd": 0,
            "keypoints": np.stack([np.asarray(r["keypoints"], np.float32).reshape(-1) for r in rows]),
            "num_keypoints": [int((np.asarray(r["keypoints"])[:, 2] > 0).sum()) for r in rows],
            "category_id": [r.get("category_id", 1) for r in rows],
            "category": skeletons.get(dataset).category,
            "extra": [r.get("extra", {}) for r in rows],
        },
        n,
    )


@pytest.fixture(scope="module")
def coco_gt(samples):
    return data.read("coco", annotations=sample(samples, "coco", "test_coco.json"), split="val", dataset="coco")


# ----------------------------------------------------------------------------------------------
# COCO: perfect, noisy, and agreement with pycocotools on the raw file
# ----------------------------------------------------------------------------------------------


def test_perfect_predictions_give_ap_1(coco_gt):
    out = oks_ap(coco_gt, predictions_from(coco_gt), dataset="coco")
    assert out["AP"] == pytest.approx(1.0)
    assert out["AR"] == pytest.approx(1.0)
    # the sample has 14 persons, two with no labelled joint (ignored)
    assert (out["num_gt"], out["num_gt_ignored"]) == (12, 2)
    # their all-zero-score predictions are dropped, as xtcocotools does
    assert out["num_predictions"] == 12


def test_noise_lowers_ap_monotonically(coco_gt):
    aps = [oks_ap(coco_gt, noisy(coco_gt, s), dataset="coco")["AP"] for s in (0.0, 2.0, 5.0, 10.0)]
    assert aps[0] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(aps, aps[1:])), aps
    assert aps[-1] < 0.6


def test_same_stats_as_pycocotools_on_the_raw_file(samples, coco_gt):
    """Results built straight from the raw JSON give identical stats through oks_ap."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    path = sample(samples, "coco", "test_coco.json")
    raw = json.loads(path.read_text())
    rng = np.random.default_rng(7)
    results = []
    for ann in raw["annotations"]:
        if ann["num_keypoints"] == 0:
            continue
        kp = np.asarray(ann["keypoints"], np.float64).reshape(-1, 3)
        kp[:, :2] += rng.normal(0, 4.0, (len(kp), 2))
        kp[:, 2] = rng.uniform(0.3, 1.0, len(kp))
        score = round(float(rng.uniform(0.5, 1)), 4)
        kp_list = np.round(kp, 2).ravel().tolist()
        results.append({"image_id": ann["image_id"], "category_id": 1, "keypoints": kp_list, "score": score})
    # two spurious detections, ranked above some true ones
    for iid in (785, 197388):
        kp = np.column_stack([rng.uniform(0, 400, 17), rng.uniform(0, 400, 17), np.full(17, 0.9)])
        results.append({"image_id": iid, "category_id": 1, "keypoints": np.round(kp, 2).ravel().tolist(), "score": 0.8})

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(path))
        ev = COCOeval(gt, gt.loadRes([dict(r) for r in results]), iouType="keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    expected = dict(zip(STAT_NAMES, ev.stats))

    pred = pd.DataFrame(
        {
            "dataset": "coco",
            "split": "val",
            "image_id": [r["image_id"] for r in results],
            "instance_id": np.arange(len(results)),
            "keypoints": [np.asarray(r["keypoints"]) for r in results],
            "score": [r["score"] for r in results],
            "box_score": 1.0,
            "bbox": [np.zeros(4)] * len(results),
        }
    )
    got = oks_ap(coco_gt, pred, dataset="coco")
    assert 0.2 < expected["AP"] < 0.95  # a non-trivial case
    for name in STAT_NAMES:
        assert got[name] == pytest.approx(expected[name], abs=1e-12), name


def test_images_without_gt_count_their_detections(coco_gt):
    """A detection on an image of the split that has no person is a false positive."""
    pred = predictions_from(coco_gt)
    extra = pred.iloc[[0]].copy()
    extra["image_id"] = 999_999
    extra["score"] = 2.0  # ranked first
    out = oks_ap(coco_gt, pd.concat([pred, extra], ignore_index=True), dataset="coco")
    assert out["num_images"] == 5
    assert out["AP"] < 1.0


# ----------------------------------------------------------------------------------------------
# Area rule: 0.53 * w * h
# ----------------------------------------------------------------------------------------------


def _expected_ap(oks: float) -> float:
    """One GT, one detection: AP at threshold t is 1 if OKS >= t else 0."""
    return float(np.mean(OKS_THRESHOLDS <= oks))


@pytest.mark.parametrize("dataset", ["aic", "crowdpose", "3dpw"])
def test_box_area_rule(dataset):
    skel = skeletons.get(dataset)
    assert skel.area_rule == "0.53wh"
    k = skel.num_keypoints
    w, h = 120.0, 240.0
    var = (2 * np.asarray(skel.sigmas)) ** 2
    box_area = skeletons.OKS_BOX_AREA_FACTOR * w * h

    def oks(d2, area):
        return float(np.mean(np.exp(-d2 / var / area / 2)))

    # the squared shift (same on every joint) that puts the 0.53wh OKS at 0.72, between thresholds
    lo, hi = 0.0, 1e4
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if oks(mid, box_area) > 0.72 else (lo, mid)
    d = np.sqrt(lo / 2)
    gt_kps = np.column_stack([np.linspace(100, 200, k), np.linspace(100, 300, k), np.full(k, 2.0)])
    gt = constructed_gt(dataset, [{"image_id": 1, "bbox": [90.0, 90.0, w, h], "area": w * h, "keypoints": gt_kps}])
    pred_kps = gt_kps.copy()
    pred_kps[:, :2] += d
    pred_kps[:, 2] = 1.0
    pred = predictions_from(gt, keypoints=[pred_kps.ravel()])

    d2 = 2 * np.round(d, coco_eval.COORD_DECIMALS) ** 2
    box_oks, wh_oks = oks(d2, box_area), oks(d2, w * h)
    assert _expected_ap(box_oks) < _expected_ap(wh_oks)  # the constructed case separates the rules
    assert oks_ap(gt, pred, dataset=dataset)["AP"] == pytest.approx(_expected_ap(box_oks))
    assert oks_ap(gt, pred, dataset=dataset, use_area=False)["AP"] == pytest.approx(_expected_ap(box_oks))
    assert oks_ap(gt, pred, dataset=dataset, use_area=True)["AP"] == pytest.approx(_expected_ap(wh_oks))


def test_annotation_area_rule_uses_the_release_area():
    """COCO-family: the release's (segment) area is the scale, not the box."""
    skel = skeletons.get("coco")
    gt_kps = np.column_stack([np.linspace(10, 90, 17), np.linspace(10, 190, 17), np.full(17, 2.0)])
    area = 4000.0
    gt = constructed_gt("coco", [{"image_id": 1, "bbox": [0.0, 0.0, 100.0, 200.0], "area": area, "keypoints": gt_kps}])
    pred_kps = gt_kps.copy()
    pred_kps[:, 0] += 3.0
    pred_kps[:, 2] = 1.0
    out = oks_ap(gt, predictions_from(gt, keypoints=[pred_kps.ravel()]), dataset="coco")
    oks = float(np.mean(np.exp(-9.0 / (2 * np.asarray(skel.sigmas)) ** 2 / area / 2)))
    assert out["AP"] == pytest.approx(_expected_ap(oks))


def test_sigmas_and_keypoint_slice():
    """A slice evaluates only those joints, with the matching sigmas."""
    gt_kps = np.column_stack([np.linspace(10, 90, 17), np.linspace(10, 190, 17), np.full(17, 2.0)])
    gt = constructed_gt("coco", [{"image_id": 1, "bbox": [0.0, 0.0, 100.0, 200.0], "keypoints": gt_kps}])
    pred_kps = gt_kps.copy()
    pred_kps[5:, 0] += 40.0  # only the face (0-4) is right
    pred_kps[:, 2] = 1.0
    pred = predictions_from(gt, keypoints=[pred_kps.ravel()])
    assert oks_ap(gt, pred, dataset="coco")["AP"] == pytest.approx(0.0)
    assert oks_ap(gt, pred, dataset="coco", keypoint_slice=slice(0, 5))["AP"] == pytest.approx(1.0)


# ----------------------------------------------------------------------------------------------
# Species categories (AP-10K)
# ----------------------------------------------------------------------------------------------


def test_ap10k_ap_is_the_mean_over_species(samples):
    gt = data.read("coco", annotations=sample(samples, "ap10k", "test_ap10k.json"), split="val", dataset="ap10k")
    assert gt["category_id"].nunique() == 2
    pred = noisy(gt, 6.0, seed=3)
    pred.loc[0, "keypoints"] = predictions_from(gt.iloc[[0]])["keypoints"].iloc[0]  # species A perfect
    both = oks_ap(gt, pred, dataset="ap10k")["AP"]
    per_species = [
        oks_ap(gt[gt.category_id == c], pred[(gt.category_id == c).to_numpy()], dataset="ap10k")["AP"]
        for c in gt["category_id"].unique()
    ]
    assert min(per_species) < 1.0
    assert both == pytest.approx(np.mean(per_species))


# ----------------------------------------------------------------------------------------------
# COCO-WholeBody
# ----------------------------------------------------------------------------------------------


def wholebody_sample(samples) -> pd.DataFrame:
    path = sample(samples, "coco_wholebody", "test_coco_wholebody.json")
    return data.read("coco_wholebody", annotations=path, split="val")


def test_wholebody_perfect_predictions(samples):
    gt = wholebody_sample(samples)
    out = wholebody_ap(gt, predictions_from(gt))
    for part in [*skeletons.get("coco_wholebody").parts, "wholebody"]:
        assert out[f"{part}_AP"] == pytest.approx(1.0), part
        assert out[f"{part}_AR"] == pytest.approx(1.0), part


def test_wholebody_parts_are_evaluated_separately(samples):
    """Ruining the face leaves body, foot and hands at 1 and drops face and whole body."""
    gt = wholebody_sample(samples)
    pred = predictions_from(gt)
    face = skeletons.get("coco_wholebody").part_slice("face")
    kps = np.stack(pred["keypoints"].to_numpy()).reshape(len(pred), -1, 3)
    kps[:, face, :2] += 25.0
    pred["keypoints"] = list(kps.reshape(len(pred), -1))
    out = wholebody_ap(gt, pred)
    assert out["face_AP"] < 0.5
    assert out["wholebody_AP"] < 1.0
    for part in ("body", "foot", "left_hand", "right_hand"):
        assert out[f"{part}_AP"] == pytest.approx(1.0), part


# ----------------------------------------------------------------------------------------------
# CrowdPose
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def crowd_gt(samples):
    path = sample(samples, "crowdpose", "test_crowdpose.json")
    return data.read("coco", annotations=path, split="test", dataset="crowdpose")


def test_crowdpose_perfect(crowd_gt):
    out = crowdpose_ap(crowd_gt, predictions_from(crowd_gt))
    for name in ("AP", "AP50", "AP75", "AR", "AR50", "AR75"):
        assert out[name] == pytest.approx(1.0), name
    # both sample images have crowdIndex 0.33 / 0.39: medium only
    assert out["AP_medium"] == pytest.approx(1.0)
    assert np.isnan(out["AP_easy"]) and np.isnan(out["AP_hard"])


def _with_crowd_index(gt: pd.DataFrame, index: dict[int, float]) -> pd.DataFrame:
    gt = gt.copy()
    extras = [json.loads(e) for e in gt["extra"]]
    for e, iid in zip(extras, gt["image_id"]):
        e["crowdIndex"] = index[int(iid)]
    gt["extra"] = pd.array([json.dumps(e) for e in extras], dtype="string")
    return gt


def test_crowdpose_levels_are_image_subsets(crowd_gt):
    gt = _with_crowd_index(crowd_gt, {103319: 0.1, 106848: 0.8})  # 0.8 is already "hard"
    pred = noisy(gt, 25.0, seed=1)
    easy = (gt["image_id"] == 103319).to_numpy()
    pred.loc[easy, "keypoints"] = predictions_from(gt[easy])["keypoints"].to_numpy()
    out = crowdpose_ap(gt, pred)
    hard_alone = oks_ap(gt, pred, dataset="crowdpose", image_ids=[106848])["AP"]
    assert out["AP_easy"] == pytest.approx(1.0)
    assert np.isnan(out["AP_medium"])
    assert out["AP_hard"] == pytest.approx(hard_alone)
    assert hard_alone < 1.0
    assert out["AP"] == pytest.approx(oks_ap(gt, pred, dataset="crowdpose")["AP"])


def test_crowdpose_ignores_by_stored_num_keypoints(crowd_gt):
    """A person with only head and neck labelled has stored num_keypoints 0: ignored officially."""
    gt = crowd_gt.copy()
    row = int(np.flatnonzero(gt["num_keypoints"].to_numpy() == 12)[0])
    kp = gt.loc[row, "keypoints"].reshape(-1, 3).copy()
    kp[:12] = 0.0
    assert (kp[12:, 2] > 0).all()
    gt.at[row, "keypoints"] = kp.reshape(-1)
    gt.loc[row, "num_keypoints"] = 0
    keep = np.arange(len(gt)) != row
    pred = predictions_from(gt[keep])  # nothing predicted for that person
    official = crowdpose_ap(gt, pred)
    assert official["AP"] == pytest.approx(1.0)
    assert official["num_gt_ignored"] == 2
    labelled = crowdpose_ap(gt, pred, ignore_by="labelled")
    assert labelled["num_gt_ignored"] == 1
    assert labelled["AR"] < 1.0


# ----------------------------------------------------------------------------------------------
# OCHuman occluded joints
# ----------------------------------------------------------------------------------------------


def test_occluded_keypoint_protocol():
    k = 17
    base = np.column_stack([np.linspace(100, 180, k), np.linspace(100, 300, k), np.full(k, 2.0)])
    a = base.copy()
    a[[5, 7, 9, 11], 2] = 1.0  # four occluded joints
    b = base.copy()
    b[:, 0] += 600.0  # far away, all visible
    gt = constructed_gt(
        "ochuman",
        [{"image_id": 1, "bbox": [90.0, 90.0, 100.0, 220.0], "keypoints": a},
         {"image_id": 1, "bbox": [690.0, 90.0, 100.0, 220.0], "keypoints": b}],
    )  # fmt: skip
    pa = a.copy()
    visible = a[:, 2] == 2
    pa[visible, :2] += 60.0  # wrong on every visible joint, exact on the occluded ones
    pa[:, 2] = 0.9
    pb = b.copy()
    pb[:, 2] = 0.9
    pred = predictions_from(gt, keypoints=[pa.ravel(), pb.ravel()])

    occ = occluded_keypoint_ap(gt, pred)
    assert (occ["num_gt"], occ["num_gt_ignored"]) == (1, 1)  # B has no occluded joint
    assert occ["AP"] == pytest.approx(1.0)
    assert occ["AR"] == pytest.approx(1.0)
    standard = oks_ap(gt, pred, dataset="ochuman")
    assert standard["num_gt"] == 2
    assert standard["AP"] < 0.6


def test_occluded_protocol_on_the_real_sample(samples):
    gt = data.read("coco", annotations=sample(samples, "ochuman", "test_ochuman.json"), split="val", dataset="ochuman")
    kps = np.stack(gt["keypoints"].to_numpy()).reshape(len(gt), -1, 3)
    with_occluded = int(((kps[..., 2] == 1).sum(axis=1) > 0).sum())
    out = occluded_keypoint_ap(gt, predictions_from(gt))
    assert out["num_gt"] == with_occluded
    assert out["num_gt_ignored"] == len(gt) - with_occluded
    assert out["AP"] == pytest.approx(1.0)


# ----------------------------------------------------------------------------------------------
# Result files
# ----------------------------------------------------------------------------------------------


def test_results_format_and_files(tmp_path, coco_gt):
    pred = noisy(coco_gt, 1.0)
    results = to_coco_results(pred, "coco")
    assert len(results) == len(pred)
    r = results[0]
    assert set(r) == {"image_id", "category_id", "keypoints", "score"}  # no bbox: see loadRes
    assert len(r["keypoints"]) == 3 * 17 and r["category_id"] == 1
    assert isinstance(r["image_id"], int) and isinstance(r["score"], float)

    path = write_results_json(results, tmp_path / "out" / "results.json")
    assert json.loads(path.read_text()) == results
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]  # no temporary left

    zpath = write_submission_zip(results, tmp_path / "submission.zip")
    with zipfile.ZipFile(zpath) as z:
        assert z.namelist() == [coco_eval.SUBMISSION_NAME]
        assert json.loads(z.read(coco_eval.SUBMISSION_NAME)) == results


def test_no_predictions_gives_zero(coco_gt):
    out = oks_ap(coco_gt, predictions_from(coco_gt).iloc[:0], dataset="coco")
    assert out["AP"] == 0.0 and out["num_predictions"] == 0


def test_wrong_keypoint_count_is_refused(coco_gt):
    pred = predictions_from(coco_gt)
    pred["keypoints"] = [k[:42] for k in pred["keypoints"]]
    with pytest.raises(ValueError, match="14 keypoints"):
        oks_ap(coco_gt, pred, dataset="coco")


def test_split_without_ground_truth_gives_nan_not_a_crash():
    """COCO test-dev has no annotations: nothing to score locally, the results go to the server."""
    from posebh.data.schema import empty_table

    pred = predictions_from(constructed_gt("coco", [{"image_id": 5, "bbox": [0.0, 0.0, 50.0, 90.0],
                                                     "keypoints": np.full((17, 3), 20.0)}]))  # fmt: skip
    out = oks_ap(empty_table(), pred, dataset="coco")
    assert np.isnan(out["AP"]) and out["num_gt"] == 0 and out["num_predictions"] == 1
