import math

import numpy as np
import pytest

from posebh.data.projection import (
    camera_from_center,
    intrinsics_from_K,
    project_K,
    project_pinhole,
    tight_boxes,
    unproject_pinhole,
    world_to_camera,
)

# a quarter turn about the camera's z axis: x -> y, y -> -x
RZ90 = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


def _rot_y(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def test_world_to_camera_hand_values():
    X = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 5.0]])
    got = world_to_camera(X, RZ90, [1.0, 2.0, 3.0])
    np.testing.assert_allclose(got, [[1.0, 3.0, 3.0], [-1.0, 2.0, 8.0]])


def test_camera_from_center_subtracts_before_rotating():
    got = camera_from_center([2.0, 3.0, 4.0], RZ90, [1.0, 1.0, 1.0])
    # X - C = (1, 2, 3); rotated: (-2, 1, 3)
    np.testing.assert_allclose(got, [-2.0, 1.0, 3.0])
    # the same camera in R X + t form has t = -R C
    t = -RZ90 @ np.array([1.0, 1.0, 1.0])
    np.testing.assert_allclose(world_to_camera([2.0, 3.0, 4.0], RZ90, t), got)


def test_project_pinhole_hand_values():
    uv, z = project_pinhole(np.array([0.5, -0.25, 2.0]), 1000.0, 900.0, 320.0, 240.0)
    np.testing.assert_allclose(uv, [1000 * 0.25 + 320, 900 * -0.125 + 240])
    assert z == 2.0
    K = np.array([[1000.0, 0, 320.0], [0, 900.0, 240.0], [0, 0, 1]])
    uv_k, z_k = project_K(np.array([0.5, -0.25, 2.0]), K)
    np.testing.assert_allclose(uv_k, uv)
    assert intrinsics_from_K(K) == (1000.0, 900.0, 320.0, 240.0)


def test_zero_depth_is_not_finite():
    uv, z = project_pinhole(np.array([1.0, 1.0, 0.0]), 100, 100, 0, 0)
    assert z == 0 and not np.isfinite(uv).all()


def test_vectorised_per_frame_cameras_match_a_loop():
    rng = np.random.default_rng(0)
    n, j = 4, 7
    X = rng.normal(size=(n, j, 3))
    R = np.stack([_rot_y(a) for a in rng.uniform(-1, 1, n)])
    t = rng.normal(size=(n, 3)) + [0, 0, 6]
    f = rng.uniform(500, 1500, size=(n, 2))
    c = rng.uniform(100, 900, size=(n, 2))
    Xc = world_to_camera(X, R[:, None], t[:, None])
    uv, z = project_pinhole(Xc, f[:, 0, None], f[:, 1, None], c[:, 0, None], c[:, 1, None])
    for a in range(n):
        for b in range(j):
            x, y, zz = R[a] @ X[a, b] + t[a]
            assert Xc[a, b] == pytest.approx([x, y, zz])
            assert uv[a, b, 0] == pytest.approx(f[a, 0] * x / zz + c[a, 0])
            assert uv[a, b, 1] == pytest.approx(f[a, 1] * y / zz + c[a, 1])
            assert z[a, b] == pytest.approx(zz)


def test_unproject_round_trip():
    rng = np.random.default_rng(1)
    Xc = rng.normal(size=(10, 3)) + [0, 0, 5]
    uv, z = project_pinhole(Xc, 1200.0, 1100.0, 640.0, 360.0)
    np.testing.assert_allclose(unproject_pinhole(uv, z, 1200.0, 1100.0, 640.0, 360.0), Xc, rtol=1e-12, atol=1e-12)


def test_oks_area_rules():
    from posebh.skeletons import oks_area as box_area

    box = np.array([[0.0, 0.0, 10.0, 20.0]])
    np.testing.assert_allclose(box_area(box, "0.53wh"), [0.53 * 200])
    np.testing.assert_allclose(box_area(box, "wh"), [200.0])
    np.testing.assert_allclose(box_area(box, "annotation"), [200.0])


def test_tight_boxes():
    xy = np.array([[[1.0, 5.0], [4.0, 2.0], [100.0, 100.0]], [[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]])
    mask = np.array([[True, True, False], [False, False, False]])
    np.testing.assert_allclose(tight_boxes(xy, mask), [[1.0, 2.0, 3.0, 3.0], [0, 0, 0, 0]])
