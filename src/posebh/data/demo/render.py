"""A small painter's-algorithm renderer (numpy + OpenCV) with an instance/part id buffer.

Every primitive of every figure is projected to a 2D polygon (capsules: the hull of two discs;
ellipsoids: the projected ellipse), sorted far to near and filled into an RGB image *and* an id
buffer holding ``(figure + 1) * PART_STRIDE + part code``. Keypoint visibility is then read from
the buffer, never guessed: a keypoint is visible (2) when the pixel under it shows its own figure
on one of the parts it lies on (and, for surface points such as eyes, when the surface faces the
camera), labelled-but-covered (1) when it is inside the image but something else is on top, and
outside (0) when it falls off the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from posebh.data.demo.bodies import FACING_COS, QUADRUPED_PARTS, Figure, Primitive
from posebh.data.demo.geometry import Camera

#: id = (figure index + 1) * PART_STRIDE + part code; 0 is the background.
PART_STRIDE = 64
_BIPED_PARTS = ("head", "neck", "torso") + tuple(
    f"{s}_{p}" for p in ("upper_arm", "forearm", "hand", "thigh", "shin", "foot") for s in ("l", "r")
)
_HAND_PARTS = ("palm", "thumb", "index", "middle", "ring", "pinky")
PART_CODES: dict[str, int] = {
    name: i + 1 for i, name in enumerate(dict.fromkeys(_BIPED_PARTS + QUADRUPED_PARTS + _HAND_PARTS))
}
if len(PART_CODES) >= PART_STRIDE:  # pragma: no cover - a table edit would have to break this
    raise RuntimeError("too many part codes for PART_STRIDE")
#: Nearest depth (camera units) a primitive may have and still be drawn.
NEAR = 1e-3
_SHIFT = 4  # fixed-point bits for sub-pixel polygon filling
_CIRCLE = 14  # points per disc of a capsule outline
_ELLIPSE = 28  # points per ellipse outline
#: Capsule/ellipse edge darkening (cheap shading that shows the 3D shape).
_SHADE = 0.35


@dataclass
class Shape:
    """A projected primitive ready to fill."""

    depth: float
    figure: int
    code: int
    poly: np.ndarray  # (N, 2) float pixel outline
    material: str
    prim: Primitive
    axis: tuple  # ("capsule", p0, p1, r0, r1) or ("ellipse", centre, inverse covariance)
    deco2d: np.ndarray | None = None
    deco_facing: np.ndarray | None = None


@dataclass
class Rendered:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    ids: np.ndarray  # (H, W) int16
    amodal: np.ndarray  # (F, 4) x0, y0, x1, y1 of each figure's full silhouette (unclipped)


def facing(points: np.ndarray, normals: np.ndarray, camera: Camera, threshold=FACING_COS) -> np.ndarray:
    """Which points face the camera (cos(normal, view) > threshold); a zero normal always does."""
    view = camera.center - points
    view /= np.maximum(np.linalg.norm(view, axis=-1, keepdims=True), 1e-12)
    n = np.linalg.norm(normals, axis=-1)
    cos = np.einsum("...i,...i->...", normals, view) / np.maximum(n, 1e-12)
    return (n == 0) | (cos > threshold)


_RING = np.stack([np.cos(np.linspace(0, 2 * np.pi, _CIRCLE, endpoint=False)), np.sin(np.linspace(0, 2 * np.pi, _CIRCLE, endpoint=False))], axis=1)
_UNIT = np.stack([np.cos(np.linspace(0, 2 * np.pi, _ELLIPSE, endpoint=False)), np.sin(np.linspace(0, 2 * np.pi, _ELLIPSE, endpoint=False))], axis=1)


def _capsule_outline(p0, p1, r0, r1) -> np.ndarray:
    import cv2

    pts = np.concatenate([p0 + r0 * _RING, p1 + r1 * _RING])

    hull = cv2.convexHull(pts.astype(np.float32))
    return hull.reshape(-1, 2).astype(np.float64)


def project_primitive(prim: Primitive, camera: Camera) -> tuple[float, np.ndarray, tuple] | None:
    """(depth, outline, axis description) of a primitive, or None when behind the camera."""
    f = 0.5 * (camera.fx + camera.fy)
    if prim.kind == "capsule":
        uv, z = camera.project(np.stack([prim.a, prim.b]))
        if (z <= NEAR).any():
            return None
        r0, r1 = f * prim.r0 / z[0], f * prim.r1 / z[1]
        return float(0.5 * (z[0] + z[1])), _capsule_outline(uv[0], uv[1], r0, r1), ("capsule", uv[0], uv[1], r0, r1)
    Xc = camera.to_camera(prim.a)
    if Xc[2] <= NEAR:
        return None
    x, y, z = Xc
    J = np.array([[camera.fx / z, 0.0, -camera.fx * x / z**2], [0.0, camera.fy / z, -camera.fy * y / z**2]])
    A = J @ camera.R @ prim.b
    cov = A @ A.T
    vals, vecs = np.linalg.eigh(cov)
    vals = np.maximum(vals, 1e-6)
    centre = np.array([camera.fx * x / z + camera.cx, camera.fy * y / z + camera.cy])
    outline = centre + (_UNIT * np.sqrt(vals)) @ vecs.T
    return float(z), outline, ("ellipse", centre, np.linalg.inv(cov))


def _texture(spec: dict, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """Colour of a material at pixel coordinates: plain, stripes, spots or patches."""
    base = np.asarray(spec["rgb"], np.float32)
    out = np.broadcast_to(base, xx.shape + (3,)).copy()
    pattern = spec.get("pattern")
    if not pattern:
        return out
    kind = pattern["kind"]
    other = np.asarray(pattern["rgb"], np.float32)
    period = pattern["period"]
    if kind == "stripes":
        a = pattern["angle"]
        phase = (xx * np.cos(a) + yy * np.sin(a)) / period + pattern.get("offset", 0.0)
        m = (phase - np.floor(phase)) < pattern.get("duty", 0.5)
    elif kind == "spots":
        cx, cy = np.floor(xx / period), np.floor(yy / period)
        fx, fy = xx / period - cx - 0.5, yy / period - cy - 0.5
        m = fx**2 + fy**2 < pattern.get("radius", 0.16)
    else:  # patches: a fixed smooth field thresholded
        s = pattern.get("seed", 0.0)
        field = np.sin(xx / period + s) * np.cos(yy / (1.3 * period) - s) + np.sin((xx + yy) / (0.7 * period) + 2 * s)
        m = field > 0.6
    out[m] = other
    return out


def _shading(axis: tuple, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """1 on the primitive's axis, darker toward its outline."""
    if axis[0] == "capsule":
        _, p0, p1, r0, r1 = axis
        d = p1 - p0
        length2 = max(float(d @ d), 1e-9)
        t = np.clip(((xx - p0[0]) * d[0] + (yy - p0[1]) * d[1]) / length2, 0.0, 1.0)
        px, py = p0[0] + t * d[0], p0[1] + t * d[1]
        r = r0 + t * (r1 - r0)
        q = ((xx - px) ** 2 + (yy - py) ** 2) / np.maximum(r, 1e-3) ** 2
    else:
        _, c, inv = axis
        dx, dy = xx - c[0], yy - c[1]
        q = inv[0, 0] * dx * dx + 2 * inv[0, 1] * dx * dy + inv[1, 1] * dy * dy
    return 1.0 - _SHADE * np.clip(q, 0.0, 1.0)


def _fixed(pts: np.ndarray) -> np.ndarray:
    return np.round(pts * (1 << _SHIFT)).astype(np.int32)


def render(camera: Camera, figures: list[Figure], background: np.ndarray) -> Rendered:
    """Draw the figures over a copy of ``background`` (H, W, 3 uint8 RGB) in depth order."""
    import cv2

    H, W = background.shape[:2]
    image = background.astype(np.float32)
    ids = np.zeros((H, W), np.int16)
    shapes: list[Shape] = []
    amodal = np.full((len(figures), 4), np.nan)
    for fi, fig in enumerate(figures):
        lo, hi = np.full(2, np.inf), np.full(2, -np.inf)
        for prim in fig.primitives:
            proj = project_primitive(prim, camera)
            if proj is None:
                continue
            depth, outline, axis = proj
            lo, hi = np.minimum(lo, outline.min(axis=0)), np.maximum(hi, outline.max(axis=0))
            deco2d = deco_facing = None
            if prim.deco is not None:
                deco2d, _ = camera.project(prim.deco_points)
                deco_facing = facing(prim.deco_points, prim.deco_normals, camera)
            shapes.append(Shape(depth, fi, PART_CODES[prim.part], outline, prim.material, prim, axis, deco2d, deco_facing))
        if np.isfinite(lo).all():
            amodal[fi] = [lo[0], lo[1], hi[0], hi[1]]
    shapes.sort(key=lambda s: -s.depth)
    for s in shapes:
        x0, y0 = np.floor(s.poly.min(axis=0)).astype(int) - 1
        x1, y1 = np.ceil(s.poly.max(axis=0)).astype(int) + 2
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
        if x1 <= x0 or y1 <= y0:
            continue
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(mask, [_fixed(s.poly - (x0, y0))], 1, cv2.LINE_8, _SHIFT)
        ys, xs = np.nonzero(mask)
        if not len(ys):
            continue
        ys += y0
        xs += x0
        xf, yf = xs.astype(np.float32), ys.astype(np.float32)
        spec = figures[s.figure].palette.get(s.material, {"rgb": (128, 128, 128)})
        image[ys, xs] = _texture(spec, xf, yf) * _shading(s.axis, xf, yf)[:, None]
        ids[ys, xs] = (s.figure + 1) * PART_STRIDE + s.code
        if s.deco2d is not None:
            _decorate(image, s, figures[s.figure].palette)
    return Rendered(np.clip(image, 0, 255).astype(np.uint8), ids, amodal)


def _decorate(image: np.ndarray, s: Shape, palette: dict) -> None:
    """Paint facial details (eyes, brows, nose, mouth) where they face the camera."""
    import cv2

    dark = tuple(float(c) for c in palette.get("features", (40, 30, 30)))
    pts, ok = s.deco2d, s.deco_facing
    f = _fixed
    if s.prim.deco == "face":
        groups = [(range(36, 42), True), (range(42, 48), True), (range(17, 22), False), (range(22, 27), False),
                  (range(27, 31), False), (range(31, 36), False), (range(48, 60), True)]  # fmt: skip
        for idx, closed in groups:
            idx = list(idx)
            if ok[idx].mean() < 0.75:
                continue
            if closed:
                cv2.fillPoly(image, [f(pts[idx])], dark, cv2.LINE_AA, _SHIFT)
            else:
                cv2.polylines(image, [f(pts[idx])], False, dark, 1, cv2.LINE_AA, _SHIFT)
    else:  # animal face: eyes and nose tip
        for k in range(len(pts)):
            if ok[k]:
                cv2.circle(image, tuple(int(v) for v in f(pts[k])), 2 << _SHIFT, dark, -1, cv2.LINE_AA, _SHIFT)


def visibility(rendered: Rendered, figure: int, uv: np.ndarray, parts: tuple[frozenset[str], ...], faces: np.ndarray) -> np.ndarray:
    """Honest flags per keypoint: 2 visible, 1 inside the image but covered, 0 outside.

    The pixel under the keypoint decides. A background pixel right at a silhouette edge counts
    as the figure's when an adjacent pixel shows one of the keypoint's own parts; a pixel of
    another figure never does.
    """
    H, W = rendered.ids.shape
    finite = np.isfinite(uv).all(axis=1)
    xy = np.where(finite[:, None], np.round(np.where(finite[:, None], uv, -1)), -1).astype(np.int64)
    inside = finite & (xy[:, 0] >= 0) & (xy[:, 0] < W) & (xy[:, 1] >= 0) & (xy[:, 1] < H)
    flags = inside.astype(np.int64)
    own = (figure + 1) * PART_STRIDE
    for k in np.flatnonzero(inside & faces):
        codes = {own + PART_CODES[p] for p in parts[k]}
        x, y = xy[k]
        pid = int(rendered.ids[y, x])
        if pid in codes:
            flags[k] = 2
        elif pid == 0:
            patch = rendered.ids[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2]
            if any(int(v) in codes for v in np.unique(patch)):
                flags[k] = 2
    return flags


def figure_mask(rendered: Rendered, figure: int) -> np.ndarray:
    """The visible pixels of one figure."""
    return (rendered.ids // PART_STRIDE) == figure + 1
