"""Camera geometry shared by the readers that start from 3D joints (InterHand2.6M, 3DPW).

Everything works on arrays shaped (..., 3) so one call projects every joint of every instance.
Rotations may be a single (3, 3) matrix or a stack (..., 3, 3) that broadcasts against the
points' leading axes (give a per-frame rotation for (N, J, 3) points as ``R[:, None]``); the
intrinsics broadcast against ``X[..., 0]`` the same way.
"""

from __future__ import annotations

import numpy as np



def _rotate(R: np.ndarray, X: np.ndarray) -> np.ndarray:
    return np.matmul(np.asarray(R, np.float64), np.asarray(X, np.float64)[..., None])[..., 0]


def world_to_camera(X: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Extrinsics in the ``X_c = R X + t`` form (3DPW's world->camera ``cam_poses``)."""
    return _rotate(R, X) + np.asarray(t, np.float64)


def camera_from_center(X: np.ndarray, R: np.ndarray, campos: np.ndarray) -> np.ndarray:
    """Extrinsics in the ``X_c = R (X - C)`` form, C the camera centre in world coordinates.

    InterHand2.6M gives ``campos`` (the centre) rather than a translation, so the subtraction
    comes before the rotation.
    """
    return _rotate(R, np.asarray(X, np.float64) - np.asarray(campos, np.float64))


def project_pinhole(X_c: np.ndarray, fx, fy, cx, cy) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (..., 2) and depth (...) of camera-frame points; u = fx X/Z + cx, v = fy Y/Z + cy.

    Points at zero depth give non-finite pixels; callers decide visibility from the depth.
    """
    X_c = np.asarray(X_c, np.float64)
    z = X_c[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.asarray(fx, np.float64) * X_c[..., 0] / z + np.asarray(cx, np.float64)
        v = np.asarray(fy, np.float64) * X_c[..., 1] / z + np.asarray(cy, np.float64)
    return np.stack([u, v], axis=-1), z


def intrinsics_from_K(K: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(fx, fy, cx, cy) of a (..., 3, 3) calibration matrix (skew is not used by any release here)."""
    K = np.asarray(K, np.float64)
    if K.shape[-2:] != (3, 3):
        raise ValueError(f"K must have shape (..., 3, 3), got {K.shape}")
    return K[..., 0, 0], K[..., 1, 1], K[..., 0, 2], K[..., 1, 2]


def project_K(X_c: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`project_pinhole` with the intrinsics given as a calibration matrix."""
    return project_pinhole(X_c, *intrinsics_from_K(K))


def unproject_pinhole(uv: np.ndarray, depth: np.ndarray, fx, fy, cx, cy) -> np.ndarray:
    """Camera-frame points from pixels and depth: the inverse of :func:`project_pinhole`."""
    uv = np.asarray(uv, np.float64)
    z = np.asarray(depth, np.float64)
    x = (uv[..., 0] - np.asarray(cx, np.float64)) * z / np.asarray(fx, np.float64)
    y = (uv[..., 1] - np.asarray(cy, np.float64)) * z / np.asarray(fy, np.float64)
    return np.stack([x, y, z], axis=-1)


def tight_boxes(xy: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(N, 4) xywh boxes around the masked points of each (N, K, 2) row; zero where none is."""
    xy = np.asarray(xy, np.float64)
    mask = np.asarray(mask, bool)
    any_pt = mask.any(axis=-1)
    lo = np.where(mask[..., None], xy, np.inf).min(axis=-2)
    hi = np.where(mask[..., None], xy, -np.inf).max(axis=-2)
    box = np.concatenate([lo, hi - lo], axis=-1)
    return np.where(any_pt[..., None], box, 0.0)
