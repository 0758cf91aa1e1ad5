"""Drawing: what is drawn changes pixels, what is hidden does not, inputs stay untouched."""

from __future__ import annotations

import numpy as np
import pytest

from posebh.skeletons import get
from posebh.visualization import SIDE_COLORS, contact_sheet, draw_pose

H, W = 120, 160


def _blank():
    return np.zeros((H, W, 3), dtype=np.uint8)


def _coco_pose():
    """COCO instance with only left_shoulder (5) at (40, 40) and left_elbow (7) at (100, 40) visible."""
    kp = np.zeros((17, 3))
    kp[5] = (40, 40, 2)
    kp[7] = (100, 40, 2)
    return kp


def test_visible_keypoint_and_link_are_drawn_in_the_side_colour():
    out = draw_pose(_blank(), _coco_pose(), "coco", radius=4, thickness=2)
    assert tuple(out[40, 40]) == SIDE_COLORS["left"]
    assert tuple(out[40, 100]) == SIDE_COLORS["left"]
    assert tuple(out[40, 70]) == SIDE_COLORS["left"]  # on the (5, 7) link, away from both points
    assert out[80:, :].sum() == 0 and out[:, :20].sum() == 0


def test_right_and_centre_colours_follow_names():
    kp = np.zeros((17, 3))
    kp[0] = (30, 60, 2)  # nose
    kp[6] = (120, 60, 2)  # right_shoulder
    out = draw_pose(_blank(), kp, get("coco"), radius=3)
    assert tuple(out[60, 30]) == SIDE_COLORS["center"]
    assert tuple(out[60, 120]) == SIDE_COLORS["right"]
    assert out[60, 75].sum() == 0  # nose and right_shoulder are not linked


def test_invisible_and_low_score_keypoints_are_not_drawn():
    kp = _coco_pose()
    kp[7, 2] = 0
    out = draw_pose(_blank(), kp, "coco", radius=4, thickness=2)
    assert out[40, 100].sum() == 0 and out[40, 70].sum() == 0
    assert out[40, 40].sum() > 0

    scored = _coco_pose()
    scored[:, 2] = np.where(scored[:, 2] > 0, 0.3, 0.0)
    assert draw_pose(_blank(), scored, "coco", min_score=0.3).sum() == 0
    assert draw_pose(_blank(), scored, "coco", min_score=0.2).sum() > 0


def test_nan_coordinates_are_skipped():
    kp = _coco_pose()
    kp[7, :2] = np.nan
    out = draw_pose(_blank(), kp, "coco", radius=4)
    assert out[40, 100].sum() == 0 and out[40, 40].sum() > 0


def test_input_is_not_modified_and_output_is_a_new_uint8_rgb_array():
    image = np.full((H, W, 3), 7, dtype=np.uint8)
    before = image.copy()
    out = draw_pose(image, _coco_pose(), "coco", boxes=[[10, 10, 100, 60]], scores=[0.9], labels=["person"])
    assert np.array_equal(image, before)
    assert out is not image and out.dtype == np.uint8 and out.shape == (H, W, 3)
    assert not np.array_equal(out, before)


def test_batches_flat_rows_and_grayscale():
    kp = _coco_pose()
    one = draw_pose(_blank(), kp, "coco")
    assert np.array_equal(draw_pose(_blank(), kp[None], "coco"), one)
    assert np.array_equal(draw_pose(_blank(), kp.reshape(-1), "coco"), one)
    second = kp.copy()
    second[:, 1] += 50
    two = draw_pose(_blank(), np.stack([kp, second]), "coco")
    assert two[90, 40].sum() > 0 and two[40, 40].sum() > 0
    gray = draw_pose(np.zeros((H, W), dtype=np.uint8), kp, "coco")
    assert gray.shape == (H, W, 3)


def test_box_is_drawn():
    out = draw_pose(_blank(), np.zeros((1, 17, 3)), "coco", boxes=[[20, 20, 80, 50]], thickness=1)
    assert out[20, 60].sum() > 0 and out[70, 60].sum() > 0 and out[45, 60].sum() == 0


def test_wrong_keypoint_count_names_the_skeleton():
    with pytest.raises(ValueError, match="interhand"):
        draw_pose(_blank(), np.zeros((17, 3)), "interhand")
    with pytest.raises(ValueError, match="instances"):
        draw_pose(_blank(), np.zeros((2, 17, 3)), "coco", boxes=[[0, 0, 1, 1]])
    with pytest.raises(ValueError, match="uint8"):
        draw_pose(np.zeros((H, W, 3)), np.zeros((17, 3)), "coco")


@pytest.mark.parametrize("name", ["coco_wholebody", "interhand", "3dpw", "ap10k", "mpii"])
def test_every_skeleton_draws(name):
    s = get(name)
    rng = np.random.default_rng(0)
    kp = np.concatenate([rng.uniform(5, 115, (s.num_keypoints, 2)), np.full((s.num_keypoints, 1), 2.0)], axis=1)
    assert draw_pose(_blank(), kp, s).sum() > 0


def test_radius_scales_with_image_size():
    small = draw_pose(np.zeros((100, 100, 3), np.uint8), [[50, 50, 2]] + [[0, 0, 0]] * 16, "coco")
    big = draw_pose(np.zeros((1000, 1000, 3), np.uint8), [[500, 500, 2]] + [[0, 0, 0]] * 16, "coco")
    assert (big.any(axis=2)).sum() > 4 * (small.any(axis=2)).sum()


def test_contact_sheet_shape_arithmetic():
    ims = [np.full((30, 40, 3), 10 * i, np.uint8) for i in range(5)]
    sheet = contact_sheet(ims, ncols=3, pad=4)
    assert sheet.shape == (2 * 30 + 3 * 4, 3 * 40 + 4 * 4, 3)
    assert tuple(sheet[4 + 30 + 4, 4 + 40 + 4]) == (40, 40, 40)  # image 4: row 1, col 1
    assert tuple(sheet[0, 0]) == (255, 255, 255)

    titled = contact_sheet(ims, ncols=2, pad=2, titles=[f"img {i}" for i in range(5)], title_height=12)
    assert titled.shape == (3 * (30 + 12) + 4 * 2, 2 * 40 + 3 * 2, 3)
    strip = titled[2 : 2 + 12, 2 : 2 + 40]
    assert (strip < 255).any()  # the title was written

    mixed = contact_sheet([np.zeros((10, 50, 3), np.uint8), np.zeros((20, 15), np.uint8)], ncols=5, pad=0)
    assert mixed.shape == (20, 100, 3)


def test_contact_sheet_rejects_bad_input():
    with pytest.raises(ValueError):
        contact_sheet([], ncols=2)
    with pytest.raises(ValueError):
        contact_sheet([np.zeros((4, 4, 3), np.uint8)], ncols=1, titles=["a", "b"])


def test_face_and_hand_points_are_smaller_than_body_points():
    kp = np.zeros((133, 3))
    kp[0] = (40, 60, 2)  # nose (body)
    kp[23] = (120, 60, 2)  # face-0
    out = draw_pose(_blank(), kp, "coco_wholebody", radius=6).any(axis=2)
    assert out[:, :80].sum() > 2 * out[:, 80:].sum() > 0
