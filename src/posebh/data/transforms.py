"""Top-down geometry and augmentation: box -> (centre, scale) -> one affine warp into the crop.

Conventions (the reference's section 6 is the source of every distribution here):

* Pixel coordinates put pixel i's centre at the integer i (OpenCV's convention), so mirroring an
  image of width W maps x to ``W - 1 - x`` and ``cv2.warpAffine`` samples ``src(M^-1 p)``.
* ``scale`` is the crop's source extent (w, h) in PIXELS. mmpose 0.x stores it divided by
  :data:`PIXEL_STD`; :func:`to_mmpose_scale` / :func:`from_mmpose_scale` convert at the boundary.
* ``rotation_deg > 0`` turns the image content counter-clockwise on screen (the sense of mmpose's
  standard ``get_affine_transform`` and ``cv2.getRotationMatrix2D``). mmpose's UDP
  ``get_warp_matrix`` turns the other way; the training distribution is symmetric, so one sense
  for both variants changes nothing but keeps the API single-valued.
* Standard affine (mmpose ``get_affine_transform``): the box centre goes to (W/2, H/2) and the
  box width to the output width; isotropic, the scale height is implied by the aspect ratio.
* UDP affine (Huang et al., CVPR 2020; mmpose ``get_warp_matrix(r, 2c, size - 1, scale)``):
  the continuous box [c - s/2, c + s/2] goes to the pixel-centre span [0, size - 1] per axis, so
  the centre lands on ((W-1)/2, (H-1)/2) and the maps scale by (size - 1)/s per axis.

Augmentation draws come from a caller-owned ``numpy.random.Generator`` so a dataset can make
every sample a pure function of (seed, epoch, index).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import cv2
import numpy as np

from posebh.skeletons import Skeleton

#: mmpose's scale unit: ``scale_mmpose = scale_pixels / PIXEL_STD``. Only for interop.
PIXEL_STD = 200.0
#: Box padding applied by mmpose's ``_xywh2cs`` (test and train).
BOX_PADDING = 1.25


def fix_aspect(wh: np.ndarray, aspect_ratio: float) -> np.ndarray:
    """Grow (..., 2) widths/heights to the aspect ratio w/h without shrinking either side."""
    wh = np.asarray(wh, dtype=np.float64)
    w, h = wh[..., 0], wh[..., 1]
    wider = w > aspect_ratio * h
    return np.stack([np.where(wider, w, h * aspect_ratio), np.where(wider, w / aspect_ratio, h)], axis=-1)


def box_to_center_scale(
    bbox_xywh: np.ndarray, aspect_ratio: float, padding: float = BOX_PADDING
) -> tuple[np.ndarray, np.ndarray]:
    """Centre (..., 2) and pixel scale (..., 2) of (..., 4) xywh boxes, as mmpose's ``_xywh2cs``."""
    b = np.asarray(bbox_xywh, dtype=np.float64)
    center = b[..., :2] + 0.5 * b[..., 2:4]
    return center, fix_aspect(b[..., 2:4], aspect_ratio) * padding


def to_mmpose_scale(scale_px: np.ndarray) -> np.ndarray:
    return np.asarray(scale_px, dtype=np.float64) / PIXEL_STD


def from_mmpose_scale(scale: np.ndarray) -> np.ndarray:
    return np.asarray(scale, dtype=np.float64) * PIXEL_STD


def affine_matrix(
    center: np.ndarray,
    scale_wh: np.ndarray,
    rotation_deg: float | np.ndarray,
    output_size_wh: tuple[int, int],
    *,
    udp: bool,
    inverse: bool = False,
) -> np.ndarray:
    """2x3 float64 map from image pixels to crop pixels (or back with ``inverse``).

    Broadcasts over leading dimensions of ``center``/``scale_wh``/``rotation_deg``, returning
    (..., 2, 3). See the module docstring for the standard and UDP conventions.
    """
    c = np.asarray(center, dtype=np.float64)
    s = np.asarray(scale_wh, dtype=np.float64)
    theta = np.deg2rad(np.asarray(rotation_deg, dtype=np.float64))
    c, s = np.broadcast_arrays(c, s)
    batch = np.broadcast_shapes(c.shape[:-1], theta.shape)
    c, s = np.broadcast_to(c, (*batch, 2)), np.broadcast_to(s, (*batch, 2))
    cos, sin = np.broadcast_to(np.cos(theta), batch), np.broadcast_to(np.sin(theta), batch)
    out_w, out_h = float(output_size_wh[0]), float(output_size_wh[1])
    if udp:
        kx, ky = (out_w - 1.0) / s[..., 0], (out_h - 1.0) / s[..., 1]
        dst = ((out_w - 1.0) / 2.0, (out_h - 1.0) / 2.0)
    else:
        kx = ky = out_w / s[..., 0]
        dst = (out_w / 2.0, out_h / 2.0)
    m = np.empty((*batch, 2, 3))
    m[..., 0, 0], m[..., 0, 1] = kx * cos, kx * sin
    m[..., 1, 0], m[..., 1, 1] = -ky * sin, ky * cos
    m[..., 0, 2] = dst[0] - m[..., 0, 0] * c[..., 0] - m[..., 0, 1] * c[..., 1]
    m[..., 1, 2] = dst[1] - m[..., 1, 0] * c[..., 0] - m[..., 1, 1] * c[..., 1]
    return invert_affine(m) if inverse else m


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of (..., 2, 3) affine maps."""
    m = np.asarray(matrix, dtype=np.float64)
    a, b, c, d = m[..., 0, 0], m[..., 0, 1], m[..., 1, 0], m[..., 1, 1]
    det = a * d - b * c
    inv = np.empty_like(m)
    inv[..., 0, 0], inv[..., 0, 1] = d / det, -b / det
    inv[..., 1, 0], inv[..., 1, 1] = -c / det, a / det
    inv[..., 0, 2] = -(inv[..., 0, 0] * m[..., 0, 2] + inv[..., 0, 1] * m[..., 1, 2])
    inv[..., 1, 2] = -(inv[..., 1, 0] * m[..., 0, 2] + inv[..., 1, 1] * m[..., 1, 2])
    return inv


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2x3 map ``outer(inner(p))``."""
    o, i = np.asarray(outer, dtype=np.float64), np.asarray(inner, dtype=np.float64)
    m = np.empty(np.broadcast_shapes(o.shape, i.shape))
    m[..., :, :2] = o[..., :, :2] @ i[..., :, :2]
    m[..., :, 2] = (o[..., :, :2] @ i[..., :, 2:3])[..., 0] + o[..., :, 2]
    return m


def flip_matrix(image_width: int | float) -> np.ndarray:
    """Horizontal mirror of an image of the given width, pixel-centre convention (x -> W-1-x)."""
    return np.array([[-1.0, 0.0, float(image_width) - 1.0], [0.0, 1.0, 0.0]])


def crop_matrix(
    center: np.ndarray,
    scale_wh: np.ndarray,
    rotation_deg: float,
    output_size_wh: tuple[int, int],
    *,
    udp: bool,
    flip_width: int | None = None,
    inverse: bool = False,
) -> np.ndarray:
    """Original image -> crop map, with the mirror folded in when the sample was flipped.

    ``center`` is then the mirrored centre (as :class:`TopDownAugment` returns it) and
    ``flip_width`` the original image width; warping the unflipped image with this matrix equals
    flipping the array first, so the image is resampled exactly once.
    """
    m = affine_matrix(center, scale_wh, rotation_deg, output_size_wh, udp=udp)
    if flip_width is not None:
        m = compose_affine(m, flip_matrix(flip_width))
    return invert_affine(m) if inverse else m


def warp(image: np.ndarray, matrix: np.ndarray, output_size_wh: tuple[int, int]) -> np.ndarray:
    """Bilinear affine warp with a constant (zero) border."""
    return cv2.warpAffine(
        image,
        np.asarray(matrix, dtype=np.float64),
        (int(output_size_wh[0]), int(output_size_wh[1])),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) map to (..., 2) points, or (N, 2, 3) maps to (N, ..., 2) points."""
    p = np.asarray(points, dtype=np.float64)
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim == 2:
        return p @ m[:, :2].T + m[:, 2]
    flat = p.reshape(m.shape[0], -1, 2)
    return (flat @ m[:, :, :2].transpose(0, 2, 1) + m[:, None, :, 2]).reshape(p.shape)


def flip_keypoints(keypoints: np.ndarray, flip_index: list[int] | np.ndarray, image_width: int | float) -> np.ndarray:
    """Mirror (K, >=2) keypoints about an image of the given width and swap left/right channels."""
    out = np.array(keypoints, dtype=np.float64)[np.asarray(flip_index)]
    out[:, 0] = float(image_width) - 1.0 - out[:, 0]
    return out


def flip_center(center: np.ndarray, image_width: int | float) -> np.ndarray:
    c = np.array(center, dtype=np.float64)
    c[..., 0] = float(image_width) - 1.0 - c[..., 0]
    return c


# ----------------------------------------------------------------------------------------------
# Random augmentation
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CropParams:
    """Everything the single warp needs; ``center``/``keypoints`` are in the (flipped) image frame."""

    center: np.ndarray
    scale: np.ndarray
    rotation: float
    flipped: bool
    keypoints: np.ndarray  # (K, 3) float64: x, y, v; channels permuted when flipped
    half_body: Literal["upper", "lower"] | None = None


@dataclass(frozen=True)
class TopDownAugment:
    """mmpose 0.x top-down training augmentation, in the reference's order and distributions.

    flip (``flip_prob``) -> half-body (if more than ``half_body_min_joints`` joints are visible,
    with ``half_body_prob``) -> random scale (always) and rotation (with ``rotation_prob``).
    mmpose applies the scale factor on every sample and only the rotation with probability 0.6
    (``TopDownGetRandomScaleRotation``); that is reproduced here.
    The centre jitter of ``_xywh2cs`` is :meth:`jitter_center`, called at box -> cs time.
    """

    flip_prob: float = 0.5
    half_body: bool = True
    half_body_prob: float = 0.3
    half_body_min_joints: int = 8
    #: upper body when a STANDARD NORMAL draw is below this (mmpose quirk: P = Phi(0.5) ~ 0.69)
    half_body_upper_threshold: float = 0.5
    half_body_padding: float = 1.5
    scale_factor: float = 0.5
    rotation_factor: float = 40.0
    rotation_prob: float = 0.6
    center_jitter_prob: float = 0.3
    center_jitter_factor: float = 0.2

    def jitter_center(self, center: np.ndarray, box_wh: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Shift the centre by U(-f, f) x box (w, h) with probability p (before the aspect fix)."""
        c = np.array(center, dtype=np.float64)
        if rng.random() < self.center_jitter_prob:
            c = c + 2.0 * self.center_jitter_factor * (rng.random(2) - 0.5) * np.asarray(box_wh, dtype=np.float64)
        return c

    def __call__(
        self,
        image: np.ndarray | int,
        keypoints: np.ndarray,
        center: np.ndarray,
        scale: np.ndarray,
        rng: np.random.Generator,
        skeleton: Skeleton,
    ) -> CropParams:
        """Draw one augmentation for (K, 3) keypoints.

        ``image`` is only read for its width (an int width is accepted), so the caller warps once
        with :func:`crop_matrix`. The aspect ratio is that of ``scale``, which
        :func:`box_to_center_scale` already fixed to the input aspect.
        """
        kp = np.array(keypoints, dtype=np.float64)
        c = np.array(center, dtype=np.float64)
        s = np.array(scale, dtype=np.float64)
        aspect = float(s[0] / s[1])
        width = image if isinstance(image, (int, np.integer)) else image.shape[1]

        flipped = bool(rng.random() < self.flip_prob)
        if flipped:
            kp = flip_keypoints(kp, skeleton.flip_index(), width)
            c = flip_center(c, width)

        part = None
        visible = kp[:, 2] > 0
        if self.half_body and visible.sum() > self.half_body_min_joints and rng.random() < self.half_body_prob:
            chosen = self._half_body(kp[:, :2], visible, skeleton, rng)
            if chosen is not None:
                part, pts = chosen
                c = pts.mean(axis=0)
                s = fix_aspect(pts.max(axis=0) - pts.min(axis=0), aspect) * self.half_body_padding

        sf, rf = self.scale_factor, self.rotation_factor
        s = s * np.clip(1.0 + sf * rng.standard_normal(), 1.0 - sf, 1.0 + sf)
        r = float(np.clip(rf * rng.standard_normal(), -2.0 * rf, 2.0 * rf))
        if not rng.random() < self.rotation_prob:
            r = 0.0
        return CropParams(center=c, scale=s, rotation=r, flipped=flipped, keypoints=kp, half_body=part)

    def _half_body(self, xy: np.ndarray, visible: np.ndarray, skeleton: Skeleton, rng: np.random.Generator):
        """mmpose's selection rule on the registry's upper/lower sets.

        mmpose puts every non-upper joint in "lower"; for COCO-WholeBody that drags face and hands
        into the lower-body box. The registry's lower set (legs and feet) is the intended one.
        """
        upper = np.zeros(len(xy), bool)
        upper[list(skeleton.upper_body)] = True
        lower = np.zeros(len(xy), bool)
        lower[list(skeleton.lower_body)] = True
        up, low = xy[visible & upper], xy[visible & lower]
        if rng.standard_normal() < self.half_body_upper_threshold and len(up) > 2:
            part, pts = "upper", up
        elif len(low) > 2:
            part, pts = "lower", low
        else:
            part, pts = "upper", up
        if len(pts) < 2:
            return None
        return part, pts


#: Per-dataset departures from the default augmentation (reference sections 5.2, 6.1).
REFERENCE_AUGMENT_OVERRIDES: dict[str, dict] = {
    "mpii": {"half_body": False},
    "interhand": {"half_body": False, "rotation_factor": 90.0, "scale_factor": 0.3},
}


def reference_augment(dataset: str, base: TopDownAugment | None = None) -> TopDownAugment:
    """The reference's augmentation for one dataset (MPII: no half-body; InterHand: 90 deg / 0.3)."""
    return replace(base or TopDownAugment(), **REFERENCE_AUGMENT_OVERRIDES.get(dataset, {}))
