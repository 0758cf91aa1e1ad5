"""Pose drawing for demo figures, reports and ``posebh predict``.

Everything works on RGB ``uint8`` arrays and returns a new array, so a caller's image (often a
cached dataset image) is never modified. Colours say which side of the body a keypoint is on,
read from the skeleton's keypoint names, so any registered skeleton draws without a colour table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from posebh.skeletons import Skeleton, get

#: RGB colour of keypoints and links per body side (mmpose's convention: left green, right orange).
SIDE_COLORS: dict[str, tuple[int, int, int]] = {
    "left": (0, 255, 0),
    "right": (255, 128, 0),
    "center": (51, 153, 255),
}
BOX_COLOR = (255, 255, 0)
TEXT_COLOR = (0, 0, 0)

#: Parts drawn with half-size points, so 68 face points do not merge into a blob.
_FINE_PARTS = frozenset({"face", "left_hand", "right_hand"})

#: Fixed-point bits for sub-pixel drawing with cv2 (coordinates are multiplied by 2**_SHIFT).
_SHIFT = 4


def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 3:
        return np.ascontiguousarray(image).copy()
    raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {image.shape}")


def _instances(keypoints, skeleton: Skeleton) -> np.ndarray:
    """(N, K, 3) float array from (K, 3), (N, K, 3), or flat rows of the instance table ((3K,), (N, 3K))."""
    kp = np.asarray(keypoints, dtype=np.float64)
    k = skeleton.num_keypoints
    if kp.ndim in (1, 2) and kp.shape[-1] == 3 * k and not (kp.ndim == 2 and kp.shape == (k, 3)):
        kp = kp.reshape(-1, k, 3)
    elif kp.ndim == 2:
        kp = kp[None]
    if kp.ndim != 3 or kp.shape[2] != 3:
        raise ValueError(f"keypoints must be (K, 3) or (N, K, 3), got shape {np.shape(keypoints)}")
    if kp.shape[1] != k:
        raise ValueError(f"skeleton {skeleton.name!r} has {k} keypoints, got {kp.shape[1]}")
    return kp


def _fixed(x: float, y: float) -> tuple[int, int]:
    return round(x * (1 << _SHIFT)), round(y * (1 << _SHIFT))


def draw_pose(
    image: np.ndarray,
    keypoints,
    skeleton: Skeleton | str,
    *,
    boxes=None,
    scores=None,
    min_score: float = 0.0,
    radius: int | None = None,
    thickness: int | None = None,
    labels: Sequence[str] | None = None,
) -> np.ndarray:
    """Draw instances' keypoints and links on a copy of an RGB image.

    A keypoint is drawn when its third value (visibility or confidence) is above ``min_score``
    (so v = 0 is never drawn) and its coordinates are finite; a link when both ends are drawn.
    ``boxes`` are (N, 4) x, y, w, h; ``scores`` and ``labels`` are per instance and written above
    the box (or above the first drawn keypoint when there are no boxes).
    """
    import cv2

    skeleton = get(skeleton) if isinstance(skeleton, str) else skeleton
    out = _as_rgb(image)
    kps = _instances(keypoints, skeleton)
    n = len(kps)
    h, w = out.shape[:2]
    if radius is None:
        radius = max(2, round(0.005 * max(h, w)))
    if thickness is None:
        thickness = max(1, round(radius / 2))
    boxes = None if boxes is None else np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    for name, seq in (("boxes", boxes), ("scores", scores), ("labels", labels)):
        if seq is not None and len(seq) != n:
            raise ValueError(f"{len(seq)} {name} for {n} instances")

    sides = [skeleton.side(i) for i in range(skeleton.num_keypoints)]
    radii = np.full(skeleton.num_keypoints, radius)
    for part, (lo, hi) in skeleton.parts.items():
        if part in _FINE_PARTS:
            radii[lo:hi] = max(1, radius // 2)
    font_scale = max(0.35, 0.4 * radius / 3)
    for j, kp in enumerate(kps):
        shown = (kp[:, 2] > min_score) & np.isfinite(kp[:, :2]).all(axis=1)
        if boxes is not None:
            x, y, bw, bh = boxes[j]
            cv2.rectangle(out, _fixed(x, y), _fixed(x + bw, y + bh), BOX_COLOR, thickness, cv2.LINE_AA, _SHIFT)
        for a, b in skeleton.links:
            if shown[a] and shown[b]:
                side = sides[a] if sides[a] == sides[b] else "center"
                pa, pb = _fixed(*kp[a, :2]), _fixed(*kp[b, :2])
                cv2.line(out, pa, pb, SIDE_COLORS[side], thickness, cv2.LINE_AA, _SHIFT)
        for i in np.flatnonzero(shown):
            center = _fixed(*kp[i, :2])
            cv2.circle(out, center, int(radii[i]) << _SHIFT, SIDE_COLORS[sides[i]], cv2.FILLED, cv2.LINE_AA, _SHIFT)
        text = " ".join(
            t for t in (labels[j] if labels is not None else "", f"{scores[j]:.2f}" if scores is not None else "") if t
        )
        if text:
            if boxes is not None:
                anchor = boxes[j, :2]
            elif shown.any():
                anchor = kp[shown, :2].min(axis=0)
            else:
                continue
            org = (int(anchor[0]), max(int(anchor[1]) - 3, 10))
            cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, font_scale, BOX_COLOR, 1, cv2.LINE_AA)
    return out


def _fit(text: str, width: int, font_scale: float) -> str:
    """Longest prefix of ``text`` that fits ``width`` pixels, so a title never spills into the next cell."""
    import cv2

    while text and cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)[0][0] > width:
        text = text[:-1]
    return text


def contact_sheet(
    images: Sequence[np.ndarray],
    ncols: int,
    pad: int = 4,
    titles: Sequence[str] | None = None,
    *,
    title_height: int = 16,
    background: int = 255,
) -> np.ndarray:
    """Grid of images on a plain background, each in a cell the size of the largest image.

    With ``titles`` each cell gets a ``title_height`` strip above its image. The sheet has
    ``min(ncols, len(images))`` columns; its size is
    ``rows * (cell_h + title_h) + (rows + 1) * pad`` by ``cols * cell_w + (cols + 1) * pad``.
    """
    import cv2

    if not images:
        raise ValueError("contact_sheet needs at least one image")
    if ncols < 1:
        raise ValueError(f"ncols must be at least 1, got {ncols}")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"{len(titles)} titles for {len(images)} images")
    rgb = [_as_rgb(im) for im in images]
    cell_h = max(im.shape[0] for im in rgb)
    cell_w = max(im.shape[1] for im in rgb)
    th = title_height if titles is not None else 0
    cols = min(ncols, len(rgb))
    rows = math.ceil(len(rgb) / cols)
    sheet = np.full(
        (rows * (cell_h + th) + (rows + 1) * pad, cols * cell_w + (cols + 1) * pad, 3), background, dtype=np.uint8
    )
    font_scale = th / 32
    for idx, im in enumerate(rgb):
        r, c = divmod(idx, cols)
        y0 = pad + r * (cell_h + th + pad)
        x0 = pad + c * (cell_w + pad)
        sheet[y0 + th : y0 + th + im.shape[0], x0 : x0 + im.shape[1]] = im
        if th and titles[idx]:
            text = _fit(str(titles[idx]), cell_w - 2, font_scale)
            org = (x0 + 1, y0 + th - max(2, th // 4))
            cv2.putText(sheet, text, org, cv2.FONT_HERSHEY_SIMPLEX, font_scale, TEXT_COLOR, 1, cv2.LINE_AA)
    return sheet
