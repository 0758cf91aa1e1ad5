from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from scipy.stats import norm

from posebh import skeletons
from posebh.data.transforms import (
    PIXEL_STD,
    TopDownAugment,
    affine_matrix,
    box_to_center_scale,
    crop_matrix,
    fix_aspect,
    flip_center,
    flip_keypoints,
    from_mmpose_scale,
    invert_affine,
    reference_augment,
    to_mmpose_scale,
    transform_points,
    warp,
)

OUT = (192, 256)
ASPECT = OUT[0] / OUT[1]


def test_box_to_center_scale_known_values():
    # tall box: width grows to 0.75 * 100 = 75; wide box: height grows to 300 / 0.75 = 400
    c, s = box_to_center_scale(np.array([10.0, 20.0, 30.0, 100.0]), ASPECT)
    np.testing.assert_allclose(c, [25.0, 70.0])
    np.testing.assert_allclose(s, [75.0 * 1.25, 100.0 * 1.25])
    c, s = box_to_center_scale(np.array([0.0, 0.0, 300.0, 50.0]), ASPECT, padding=1.0)
    np.testing.assert_allclose(c, [150.0, 25.0])
    np.testing.assert_allclose(s, [300.0, 400.0])


def test_box_to_center_scale_vectorised_matches_rows():
    boxes = np.random.default_rng(0).uniform(1, 300, size=(50, 4))
    c, s = box_to_center_scale(boxes, ASPECT)
    for i, b in enumerate(boxes):
        ci, si = box_to_center_scale(b, ASPECT)
        np.testing.assert_allclose(c[i], ci)
        np.testing.assert_allclose(s[i], si)
    np.testing.assert_allclose(s[:, 0] / s[:, 1], ASPECT)
    assert (s >= boxes[:, 2:] * 1.25 - 1e-9).all()


def test_mmpose_scale_round_trip():
    s = np.array([150.0, 200.0])
    np.testing.assert_allclose(to_mmpose_scale(s), s / PIXEL_STD)
    np.testing.assert_allclose(from_mmpose_scale(to_mmpose_scale(s)), s)


@pytest.mark.parametrize("udp", [False, True])
@pytest.mark.parametrize("rotation", [0.0, 33.0, -80.0, 180.0])
def test_affine_round_trip(udp, rotation):
    rng = np.random.default_rng(1)
    c, s = np.array([321.7, 211.3]), np.array([150.0, 200.0])
    fwd = affine_matrix(c, s, rotation, OUT, udp=udp)
    inv = affine_matrix(c, s, rotation, OUT, udp=udp, inverse=True)
    pts = rng.uniform(-100, 700, size=(200, 2))
    assert np.abs(transform_points(transform_points(pts, fwd), inv) - pts).max() < 1e-6
    np.testing.assert_allclose(invert_affine(inv), fwd, atol=1e-12)


@pytest.mark.parametrize("rotation", [0.0, 25.0, -70.0])
def test_box_centre_maps_to_output_centre(rotation):
    c, s = np.array([100.0, 80.0]), np.array([96.0, 128.0])
    std = transform_points(c, affine_matrix(c, s, rotation, OUT, udp=False))
    udp = transform_points(c, affine_matrix(c, s, rotation, OUT, udp=True))
    np.testing.assert_allclose(std, [OUT[0] / 2, OUT[1] / 2], atol=1e-9)
    np.testing.assert_allclose(udp, [(OUT[0] - 1) / 2, (OUT[1] - 1) / 2], atol=1e-9)


def test_box_edges():
    c, s = np.array([100.0, 80.0]), np.array([96.0, 128.0])
    corners = np.array([c - s / 2, c + s / 2])
    udp = transform_points(corners, affine_matrix(c, s, 0, OUT, udp=True))
    std = transform_points(corners, affine_matrix(c, s, 0, OUT, udp=False))
    np.testing.assert_allclose(udp, [[0, 0], [OUT[0] - 1, OUT[1] - 1]], atol=1e-9)
    np.testing.assert_allclose(std, [[0, 0], OUT], atol=1e-9)


@pytest.mark.parametrize("rotation", [0.0, 30.0, -65.0])
def test_standard_affine_matches_three_point_construction(rotation):
    """mmpose's construction: centre, centre + rotated 'up' half-width, and its 90-degree turn."""
    c, s = np.array([250.0, 140.0]), np.array([120.0, 160.0])
    t = math.radians(rotation)
    up_src = np.array([0.5 * s[0] * math.sin(t), -0.5 * s[0] * math.cos(t)])
    up_dst = np.array([0.0, -0.5 * OUT[0]])
    dst_c = np.array(OUT, float) / 2
    turn = lambda v: np.array([-v[1], v[0]])  # noqa: E731
    src = np.float32([c, c + up_src, c + up_src + turn(-up_src)])
    dst = np.float32([dst_c, dst_c + up_dst, dst_c + up_dst + turn(-up_dst)])
    expected = cv2.getAffineTransform(src, dst)
    np.testing.assert_allclose(affine_matrix(c, s, rotation, OUT, udp=False), expected, atol=1e-3)


def test_udp_matches_closed_form():
    """UDP per axis: x' = (W-1)/s_w * (R (x - c))_x + (W-1)/2 with R the rotation of the crop."""
    c, s, r = np.array([250.0, 140.0]), np.array([120.0, 160.0]), 20.0
    t = math.radians(r)
    kx, ky = (OUT[0] - 1) / s[0], (OUT[1] - 1) / s[1]
    p = np.array([[300.0, 100.0], [10.0, 400.0]])
    d = p - c
    rx = math.cos(t) * d[:, 0] + math.sin(t) * d[:, 1]
    ry = -math.sin(t) * d[:, 0] + math.cos(t) * d[:, 1]
    expected = np.stack([kx * rx + (OUT[0] - 1) / 2, ky * ry + (OUT[1] - 1) / 2], 1)
    np.testing.assert_allclose(transform_points(p, affine_matrix(c, s, r, OUT, udp=True)), expected, atol=1e-9)


def test_positive_rotation_turns_content_counter_clockwise():
    c, s = np.array([100.0, 100.0]), np.array([96.0, 128.0])
    right_of_centre = transform_points(c + [10.0, 0.0], affine_matrix(c, s, 90.0, OUT, udp=False))
    np.testing.assert_allclose(right_of_centre, [OUT[0] / 2, OUT[1] / 2 - 10.0 * OUT[0] / s[0]], atol=1e-9)


def test_batched_affine_and_points_match_single():
    rng = np.random.default_rng(2)
    c, s, r = rng.uniform(50, 300, (5, 2)), rng.uniform(50, 200, (5, 2)), rng.uniform(-80, 80, 5)
    pts = rng.uniform(0, 400, (5, 7, 2))
    m = affine_matrix(c, s, r, OUT, udp=True)
    assert m.shape == (5, 2, 3)
    out = transform_points(pts, m)
    for i in range(5):
        np.testing.assert_allclose(out[i], transform_points(pts[i], affine_matrix(c[i], s[i], r[i], OUT, udp=True)))


def _blob_image(shape_hw, centre, sigma=2.5):
    h, w = shape_hw
    y, x = np.mgrid[0:h, 0:w]
    g = np.exp(-((x - centre[0]) ** 2 + (y - centre[1]) ** 2) / (2 * sigma**2))
    return (g * 255).astype(np.float32)


def _centroid(img):
    y, x = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    m = img.astype(np.float64)
    return np.array([(m * x).sum() / m.sum(), (m * y).sum() / m.sum()])


@pytest.mark.parametrize("udp", [False, True])
@pytest.mark.parametrize("rotation,scale_mult", [(0.0, 1.0), (37.0, 0.8), (-71.0, 1.3)])
def test_warped_dot_lands_where_transform_points_says(udp, rotation, scale_mult):
    dot = np.array([217.3, 151.8])
    img = _blob_image((300, 400), dot)
    c, s = np.array([205.0, 160.0]), np.array([150.0, 200.0]) * scale_mult
    m = affine_matrix(c, s, rotation, OUT, udp=udp)
    crop = warp(img, m, OUT)
    assert crop.shape == (OUT[1], OUT[0])
    assert np.linalg.norm(_centroid(crop) - transform_points(dot, m)) < 1.0


@pytest.mark.parametrize("udp", [False, True])
def test_flip_folded_into_matrix_equals_flipping_the_array(udp):
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, size=(120, 160, 3), dtype=np.uint8)
    c, s, r = np.array([70.0, 60.0]), np.array([90.0, 120.0]), 15.0
    mirrored_c = flip_center(c, img.shape[1])
    via_array = warp(np.ascontiguousarray(img[:, ::-1]), affine_matrix(mirrored_c, s, r, OUT, udp=udp), OUT)
    via_matrix = warp(img, crop_matrix(mirrored_c, s, r, OUT, udp=udp, flip_width=img.shape[1]), OUT)
    assert np.abs(via_array.astype(int) - via_matrix.astype(int)).max() <= 1
    back = crop_matrix(mirrored_c, s, r, OUT, udp=udp, flip_width=img.shape[1], inverse=True)
    p = np.array([[33.0, 44.0]])
    fwd = crop_matrix(mirrored_c, s, r, OUT, udp=udp, flip_width=img.shape[1])
    np.testing.assert_allclose(transform_points(transform_points(p, fwd), back), p, atol=1e-9)


def test_flip_twice_is_identity_and_swaps_left_right():
    sk = skeletons.get("coco")
    rng = np.random.default_rng(4)
    kp = np.concatenate([rng.uniform(0, 300, (17, 2)), rng.integers(0, 3, (17, 1))], 1)
    once = flip_keypoints(kp, sk.flip_index(), 320)
    np.testing.assert_allclose(flip_keypoints(once, sk.flip_index(), 320), kp)
    left_eye, right_eye = sk.index("left_eye"), sk.index("right_eye")
    np.testing.assert_allclose(once[right_eye], [319 - kp[left_eye, 0], kp[left_eye, 1], kp[left_eye, 2]])
    for i, name in enumerate(sk.keypoints):
        mirrored = name.replace("left_", "#").replace("right_", "left_").replace("#", "right_")
        assert sk.keypoints[sk.flip_index()[i]] == mirrored
    np.testing.assert_allclose(flip_center(flip_center([10.0, 5.0], 320), 320), [10.0, 5.0])


# ----------------------------------------------------------------------------------------------
# Augmentation
# ----------------------------------------------------------------------------------------------

NO_RANDOM = dict(flip_prob=0.0, scale_factor=0.0, rotation_prob=0.0)


def _person(rng, visible_upper=None, visible_lower=None, name="coco"):
    sk = skeletons.get(name)
    kp = np.zeros((sk.num_keypoints, 3))
    kp[:, :2] = rng.uniform(50, 350, (sk.num_keypoints, 2))
    kp[:, 2] = 2
    if visible_upper is not None:
        kp[[i for i in sk.upper_body][visible_upper:], 2] = 0
    if visible_lower is not None:
        kp[[i for i in sk.lower_body][visible_lower:], 2] = 0
    return sk, kp


def _half_box(pts):
    return pts.mean(0), fix_aspect(pts.max(0) - pts.min(0), ASPECT) * 1.5


def test_half_body_selects_only_upper_or_lower_joints():
    rng = np.random.default_rng(5)
    aug = TopDownAugment(half_body_prob=1.0, **NO_RANDOM)
    c0, s0 = np.array([200.0, 200.0]), np.array([150.0, 200.0])
    seen = set()
    for _ in range(60):
        sk, kp = _person(rng)
        out = aug(400, kp, c0, s0, rng, sk)
        ids = list(sk.upper_body if out.half_body == "upper" else sk.lower_body)
        c, s = _half_box(kp[ids, :2])
        np.testing.assert_allclose(out.center, c)
        np.testing.assert_allclose(out.scale, s)
        seen.add(out.half_body)
    assert seen == {"upper", "lower"}


def test_half_body_needs_enough_joints():
    rng = np.random.default_rng(6)
    aug = TopDownAugment(half_body_prob=1.0, **NO_RANDOM)
    c0, s0 = np.array([200.0, 200.0]), np.array([150.0, 200.0])
    for _ in range(30):  # 2 upper + 7 lower visible: upper never chosen
        sk, kp = _person(rng, visible_upper=2, name="mpii")
        assert aug(400, kp, c0, s0, rng, sk).half_body == "lower"
    for _ in range(30):  # 8 visible joints is not more than 8: never applied
        sk, kp = _person(rng, visible_upper=5, visible_lower=3)
        out = aug(400, kp, c0, s0, rng, sk)
        assert out.half_body is None
        np.testing.assert_allclose(out.center, c0)
    sk, kp = _person(rng)
    assert TopDownAugment(half_body=False, half_body_prob=1.0, **NO_RANDOM)(400, kp, c0, s0, rng, sk).half_body is None
    assert reference_augment("mpii").half_body is False


def _draws(aug, n, seed=7):
    rng = np.random.default_rng(seed)
    sk, kp = _person(rng)
    c0, s0 = np.array([200.0, 200.0]), np.array([150.0, 200.0])
    outs = [aug(400, kp, c0, s0, rng, sk) for _ in range(n)]
    return outs, s0


def _close(freq, p, n, z=4.5):
    return abs(freq - p) <= z * math.sqrt(p * (1 - p) / n)


def test_augmentation_statistics_match_reference():
    n = 20000
    outs, s0 = _draws(TopDownAugment(half_body=False), n)
    flips = np.array([o.flipped for o in outs])
    rot = np.array([o.rotation for o in outs])
    sf = np.array([o.scale[0] / s0[0] for o in outs])
    assert _close(flips.mean(), 0.5, n)
    rotated = rot != 0
    assert _close(rotated.mean(), 0.6, n)
    assert rot.min() >= -80 and rot.max() <= 80
    p_clip = 2 * norm.sf(2.0)  # |40 z| > 80
    assert _close((np.abs(rot[rotated]) == 80).mean(), p_clip, rotated.sum())
    assert abs(np.std(rot[rotated & (np.abs(rot) < 80)]) - 40 * math.sqrt(1 - 2 * 2 * norm.pdf(2) / (1 - p_clip))) < 1.5
    assert sf.min() >= 0.5 and sf.max() <= 1.5
    assert _close((sf == 1.5).mean(), norm.sf(1.0), n) and _close((sf == 0.5).mean(), norm.sf(1.0), n)
    np.testing.assert_allclose([o.scale[1] / s0[1] for o in outs], sf)  # scale always applied, isotropic


def test_half_body_statistics():
    n = 20000
    outs, _ = _draws(TopDownAugment(**NO_RANDOM), n)
    parts = np.array([o.half_body or "" for o in outs])
    applied = parts != ""
    assert _close(applied.mean(), 0.3, n)
    assert _close((parts[applied] == "upper").mean(), norm.cdf(0.5), applied.sum())


def test_center_jitter_statistics():
    aug = TopDownAugment()
    rng = np.random.default_rng(8)
    box_wh = np.array([100.0, 50.0])
    n = 20000
    shifts = np.array([aug.jitter_center([0.0, 0.0], box_wh, rng) for _ in range(n)]) / box_wh
    moved = (shifts != 0).any(1)
    assert _close(moved.mean(), 0.3, n)
    assert np.abs(shifts).max() <= 0.2
    assert np.abs(shifts[moved]).max() > 0.19
    assert abs(shifts[moved].std(0) - 0.4 / math.sqrt(12)).max() < 0.005


def test_interhand_ranges():
    outs, s0 = _draws(reference_augment("interhand"), 5000)
    rot = np.array([o.rotation for o in outs])
    sf = np.array([o.scale[0] / s0[0] for o in outs])
    assert rot.min() >= -180 and rot.max() <= 180 and np.abs(rot).max() > 100
    assert sf.min() >= 0.7 - 1e-12 and sf.max() <= 1.3 + 1e-12 and (sf == 1.3).any()
    assert all(o.half_body is None for o in outs)


def test_flip_in_augmentation_mirrors_keypoints_and_centre():
    rng = np.random.default_rng(9)
    sk, kp = _person(rng)
    out = TopDownAugment(flip_prob=1.0, half_body=False, scale_factor=0.0, rotation_prob=0.0)(
        400, kp, np.array([150.0, 90.0]), np.array([150.0, 200.0]), rng, sk
    )
    assert out.flipped
    np.testing.assert_allclose(out.center, [249.0, 90.0])
    np.testing.assert_allclose(out.keypoints, flip_keypoints(kp, sk.flip_index(), 400))
