"""MPII PCKh on the real 2958-person ground truth, and PCK/AUC/EPE on tiny hand-worked arrays."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
from conftest import sample

from posebh import skeletons
from posebh.data.readers.mpii import load_mpii_gt
from posebh.evaluation.pck import mean_pixel_error, mpii_pckh, pck_auc_epe

# MPII joint ids (the release's numbering, written out here independently of the registry)
R_WRIST, L_WRIST, R_ELBOW, PELVIS, THORAX = 10, 15, 11, 6, 7


@pytest.fixture(scope="module")
def mat_path(samples):
    return sample(samples, "mpii", "detections_our_format.mat")


@pytest.fixture(scope="module")
def gt(mat_path):
    return load_mpii_gt(mat_path)


def test_registry_ids_match_the_release(gt):
    skel = skeletons.get("mpii")
    assert [skel.index(n) for n in ("right_wrist", "left_wrist", "right_elbow", "pelvis", "thorax")] == [
        R_WRIST, L_WRIST, R_ELBOW, PELVIS, THORAX,
    ]  # fmt: skip
    assert gt.num_persons == 2958


def test_ground_truth_as_prediction_is_100(gt):
    out = mpii_pckh(gt.positions.copy(), gt)
    for name, value in out.items():
        assert value == pytest.approx(100.0), name


def test_shifted_joints_hand_calculation(gt, mat_path):
    """Right wrist off by 0.4 head sizes, left wrist by 0.6, right elbow by 0.05."""
    missing = scipy.io.loadmat(str(mat_path))["jnt_missing"].T.astype(bool)  # (P, 16)
    n = (~missing).sum(axis=0).astype(float)
    pred = gt.positions.copy()
    for joint, frac in ((R_WRIST, 0.4), (L_WRIST, 0.6), (R_ELBOW, 0.05)):
        pred[:, joint, 0] += frac * gt.head_sizes
    total = n.sum() - n[PELVIS] - n[THORAX]
    out = mpii_pckh(pred, gt)
    # at 0.5 only the left wrist fails; at 0.1 both wrists fail, the elbow still passes
    assert out["PCKh@0.5"] == pytest.approx(100.0 * (1 - n[L_WRIST] / total))
    assert out["PCKh@0.1"] == pytest.approx(100.0 * (1 - (n[L_WRIST] + n[R_WRIST]) / total))
    assert out["Wrist"] == pytest.approx(50.0)
    assert out["Elbow"] == pytest.approx(100.0)
    assert out["Head"] == pytest.approx(100.0)


def test_pelvis_and_thorax_do_not_count(gt):
    pred = gt.positions.copy()
    pred[:, [PELVIS, THORAX], :] += 1000.0
    assert mpii_pckh(pred, gt)["PCKh@0.5"] == pytest.approx(100.0)


def test_stored_predictions_against_a_direct_computation(gt, mat_path):
    """pos_pred_src of the .mat, scored by a plain transcription of the protocol on its raw layout."""
    m = scipy.io.loadmat(str(mat_path))
    pred, pos, boxes = m["pos_pred_src"], m["pos_gt_src"], m["headboxes_src"]  # 1-based, joints first
    visible = 1 - m["jnt_missing"]
    head = 0.6 * np.linalg.norm(boxes[1] - boxes[0], axis=0)
    err = np.linalg.norm(pred - pos, axis=1) / head
    weights = visible.sum(axis=1).astype(float)
    weights[[PELVIS, THORAX]] = 0
    expected = {}
    for thr in (0.5, 0.1):
        per_joint = 100.0 * ((err <= thr) * visible).sum(axis=1) / visible.sum(axis=1)
        expected[thr] = (per_joint * weights).sum() / weights.sum()
        if thr == 0.5:
            expected["Shoulder"] = (per_joint[12] + per_joint[13]) / 2
            expected["Ankle"] = (per_joint[0] + per_joint[5]) / 2
    out = mpii_pckh(pred.transpose(2, 0, 1) - 1.0, gt)
    assert out["PCKh@0.5"] == pytest.approx(expected[0.5])
    assert out["PCKh@0.1"] == pytest.approx(expected[0.1])
    assert out["Shoulder"] == pytest.approx(expected["Shoulder"])
    assert out["Ankle"] == pytest.approx(expected["Ankle"])
    assert 50.0 < out["PCKh@0.5"] < 100.0 and out["PCKh@0.1"] < out["PCKh@0.5"]


# ----------------------------------------------------------------------------------------------
# PCK / AUC / EPE
# ----------------------------------------------------------------------------------------------

# two instances, three joints; ground truth at the origin, errors 5, 10, (masked) / 1, 50, 0 px
PRED = np.array([[[3.0, 4.0], [0.0, 10.0], [6.0, 8.0]], [[0.0, 1.0], [30.0, 40.0], [0.0, 0.0]]])
GT = np.zeros_like(PRED)
MASK = np.array([[True, True, False], [True, True, True]])
BOX_WH = np.array([[40.0, 20.0], [100.0, 50.0]])


def test_pck_auc_epe_hand_calculation():
    out = pck_auc_epe(PRED, GT, MASK, BOX_WH)
    # normalised by 40 and 100: joint 0 -> 0.125, 0.01 (both < 0.2); joint 1 -> 0.25, 0.5 (none);
    # joint 2 -> 0 (one valid sample, 0 < 0.2)
    assert out["PCK@0.2"] == pytest.approx(2 / 3)
    # thresholds i * 1.5 px, i = 0..19, strict: joint 0 scores 0, 0.5 x3, 1 x16 (sum 17.5);
    # joint 1 scores 0.5 from i = 7 (sum 6.5); joint 2 scores 1 from i = 1 (sum 19)
    assert out["AUC"] == pytest.approx((17.5 + 6.5 + 19) / 3 / 20)
    assert out["EPE"] == pytest.approx((5 + 10 + 1 + 50 + 0) / 5)


def test_perfect_auc_is_below_one_by_the_zero_threshold():
    out = pck_auc_epe(GT, GT, MASK, BOX_WH)
    assert out["PCK@0.2"] == pytest.approx(1.0)
    assert out["AUC"] == pytest.approx(19 / 20)
    assert out["EPE"] == 0.0


def test_degenerate_box_drops_the_instance_from_pck_only():
    wh = BOX_WH.copy()
    wh[1] = 0.0
    out = pck_auc_epe(PRED, GT, MASK, wh)
    # only instance 0 is left: joint 0 passes (0.125), joint 1 fails (0.25), joint 2 has no sample
    assert out["PCK@0.2"] == pytest.approx(0.5)
    assert out["EPE"] == pytest.approx(13.2)


def test_mean_pixel_error():
    assert mean_pixel_error(PRED, GT, MASK) == pytest.approx(13.2)
    assert np.isnan(mean_pixel_error(PRED, GT, np.zeros_like(MASK)))
