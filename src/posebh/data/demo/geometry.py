"""Small rigid-body helpers for the demo world: rotations, axis-angle, cameras and projection.

Conventions: world and body frames are right-handed with +y up; a body's own frame has +x on its
left and +z in its facing direction. Cameras follow OpenCV (x right, y down, z forward) and map
world to camera as ``X_c = R X_w + t`` (3DPW's form; InterHand's ``campos`` is ``-R^T t``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def euler(x: float = 0.0, y: float = 0.0, z: float = 0.0) -> np.ndarray:
    """Twist about y, then flexion about x, then abduction about z (in the joint's frame)."""
    return rot_z(z) @ rot_x(x) @ rot_y(y)


def rotvec_to_matrix(v: np.ndarray) -> np.ndarray:
    """Rodrigues: axis-angle (..., 3) to rotation matrices (..., 3, 3)."""
    v = np.asarray(v, np.float64)
    theta = np.linalg.norm(v, axis=-1, keepdims=True)
    k = np.where(theta > 1e-12, v / np.maximum(theta, 1e-12), 0.0)
    kx, ky, kz = k[..., 0], k[..., 1], k[..., 2]
    zero = np.zeros_like(kx)
    K = np.stack([zero, -kz, ky, kz, zero, -kx, -ky, kx, zero], axis=-1).reshape(*v.shape[:-1], 3, 3)
    t = theta[..., None]
    eye = np.broadcast_to(np.eye(3), K.shape)
    return eye + np.sin(t) * K + (1 - np.cos(t)) * (K @ K)


def matrix_to_rotvec(R: np.ndarray) -> np.ndarray:
    """Inverse Rodrigues for (..., 3, 3) rotations (stable near 0 and near pi)."""
    from scipy.spatial.transform import Rotation

    R = np.asarray(R, np.float64)
    flat = Rotation.from_matrix(R.reshape(-1, 3, 3)).as_rotvec()
    return flat.reshape(*R.shape[:-2], 3)


def look_at(position: np.ndarray, target: np.ndarray, up=(0.0, 1.0, 0.0), roll: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """World->camera (R, t) of a camera at ``position`` looking at ``target``, rolled about its axis."""
    position = np.asarray(position, np.float64)
    forward = np.asarray(target, np.float64) - position
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, np.asarray(up, np.float64))
    if np.linalg.norm(right) < 1e-9:  # looking straight up or down: any right vector will do
        right = np.cross(forward, np.array([0.0, 0.0, 1.0]))
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    R = np.stack([right, down, forward])
    R = rot_z(roll) @ R
    return R, -R @ position


@dataclass(frozen=True)
class Camera:
    """Pinhole camera: ``X_c = R X_w + t``; pixels ``u = fx X/Z + cx``, ``v = fy Y/Z + cy``."""

    R: np.ndarray
    t: np.ndarray
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @property
    def center(self) -> np.ndarray:
        """Camera centre in world coordinates (InterHand's ``campos``)."""
        return -self.R.T @ self.t

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def extrinsic(self) -> np.ndarray:
        """4x4 world->camera matrix (3DPW's ``cam_poses`` entry)."""
        E = np.eye(4)
        E[:3, :3], E[:3, 3] = self.R, self.t
        return E

    def to_camera(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, np.float64) @ self.R.T + self.t

    def project(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixels (..., 2) and depth (...) of world points (..., 3)."""
        Xc = self.to_camera(X)
        z = Xc[..., 2]
        safe = np.where(np.abs(z) > 1e-9, z, 1e-9)
        uv = np.stack([self.fx * Xc[..., 0] / safe + self.cx, self.fy * Xc[..., 1] / safe + self.cy], axis=-1)
        return uv, z

    def backproject(self, u: float, v: float, depth: float) -> np.ndarray:
        """World point seen at pixel (u, v) at the given camera depth."""
        Xc = np.array([(u - self.cx) * depth / self.fx, (v - self.cy) * depth / self.fy, depth])
        return self.R.T @ (Xc - self.t)
