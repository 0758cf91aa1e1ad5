"""Heatmap codecs: one object renders Gaussian targets and decodes predictions, batched in torch.

Both kinds follow mmpose 0.x (the reference's sections 4.1 and 6.2):

* ``msra``: heatmap coordinate u = x / stride with stride = input / heatmap; the Gaussian sits on
  the rounded location. Decoding defaults to argmax + a quarter-pixel step toward the higher
  neighbour (``refine="shift"``). Round trip bound: the rounding, |error| <= stride/2 per axis.
* ``udp``: stride = (input - 1) / (heatmap - 1) (pixel centres 0 and input-1 meet heatmap
  pixels 0 and heatmap-1); the Gaussian is centred at the sub-pixel location. Decoding defaults
  to argmax + DARK-UDP (``refine="dark"``): blur with the ``blur_kernel`` Gaussian
  (OpenCV's default sigma for that size, reflect-101 border), log, one Newton step.

Targets are unnormalised Gaussians (peak 1) of std ``sigma`` heatmap pixels, zero outside the
square window of radius floor(3 sigma) around the rounded centre. A joint gets weight 0 when
its window does not touch the map (mmpose's exclusive-bound test keeps weight 1, and an empty map,
for a window that ends one pixel left of / above the map; here every window that misses is 0).
Rounding is round-half-up (floor(u + 0.5)); mmpose's int() truncates toward zero, which differs
only for joints more than half a heatmap pixel left of / above the map.

The rendering (:func:`gaussian_heatmaps`) and DARK-UDP (:func:`dark_udp_step`,
:func:`dark_udp_refine`) also work on their own in heatmap pixels: the CSS pseudo-labels of
``posebh.losses`` use them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

Kind = Literal["msra", "udp"]
Refine = Literal["none", "shift", "dark"]

#: Reference decoding per encoding (section 4.1): non-UDP datasets use the quarter shift,
#: UDP datasets DARK-UDP.
DEFAULT_REFINE: dict[str, str] = {"msra": "shift", "udp": "dark"}
#: mmpose's ``modulate_kernel`` for DARK-UDP.
DEFAULT_BLUR_KERNEL = 11
#: Gaussian window half-width in sigmas (the 3-sigma rule).
WINDOW_SIGMAS = 3
#: Quarter-pixel step of the "default" post-processing.
SHIFT_STEP = 0.25
#: DARK-UDP clips the blurred map to this range before the log.
DARK_CLIP = (0.001, 50.0)
#: Hessian regulariser of DARK-UDP (float32 machine epsilon, as mmpose).
DARK_EPS = float(np.finfo(np.float32).eps)


def opencv_gaussian_sigma(kernel: int) -> float:
    """The sigma OpenCV derives for ``GaussianBlur(ksize, sigma=0)``."""
    return 0.3 * ((kernel - 1) * 0.5 - 1.0) + 0.8


def window_radius(sigma: float) -> int:
    """Half-width floor(3 sigma) of the square window a Gaussian target is cut to."""
    return int(math.floor(WINDOW_SIGMAS * float(sigma)))


# ----------------------------------------------------------------------------------------------
# Rendering and DARK-UDP in heatmap pixels (the codec below adds the input <-> heatmap stride)
# ----------------------------------------------------------------------------------------------


def gaussian_heatmaps(
    centres: torch.Tensor,
    visible: torch.Tensor,
    heatmap_size: tuple[int, int],
    sigma: float,
    *,
    subpixel: bool,
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets (N, K, h, w) float32 and weights (N, K) for centres (N, K, 2) in heatmap pixels.

    ``subpixel=True`` (UDP) puts the peak at the centre itself, ``False`` (MSRA) at the rounded
    centre; either way the map is cut to the window of radius floor(3 sigma) around the rounded
    centre. A map is rendered where ``visible > 0``; the weight is ``visible`` (any real value,
    e.g. a pseudo-label confidence) times "window touches the map" times "centre is finite".
    ``out`` (a float32 (N, K, h, w) tensor on the same device) is overwritten and returned.
    """
    w, h = int(heatmap_size[0]), int(heatmap_size[1])
    mu = centres.to(torch.float32)
    vis = visible.to(device=mu.device, dtype=torch.float32)
    finite = torch.isfinite(mu).all(-1)
    mu = torch.where(finite[..., None], mu, torch.zeros_like(mu)).clamp(-1e6, 1e6)
    centre = torch.floor(mu + 0.5)
    r = window_radius(sigma)
    cx, cy = centre[..., 0], centre[..., 1]
    touches = (cx + r >= 0) & (cx - r <= w - 1) & (cy + r >= 0) & (cy - r <= h - 1)
    ok = finite & touches
    weights = vis * ok
    peak = mu if subpixel else centre
    xs = torch.arange(w, device=mu.device, dtype=torch.float32)
    ys = torch.arange(h, device=mu.device, dtype=torch.float32)
    gx = _axis_profile(xs, peak[..., 0], centre[..., 0], float(sigma), r)
    gy = _axis_profile(ys, peak[..., 1], centre[..., 1], float(sigma), r)
    draw = (ok & (vis > 0)).to(torch.float32)
    heatmaps = torch.mul((gy * draw[..., None])[..., :, None], gx[..., None, :], out=out)
    return heatmaps, weights


def _axis_profile(grid: torch.Tensor, peak: torch.Tensor, centre: torch.Tensor, sigma: float, radius: int) -> torch.Tensor:
    """exp(-(t - peak)^2 / 2 sigma^2) on the grid, zero beyond the window around ``centre``.

    The 2-D Gaussian and the square window both factor over x and y, so the map is the
    outer product of two of these (N, K, L) profiles.
    """
    d = grid - peak[..., None]
    g = torch.exp(-(d * d) / (2.0 * sigma**2))
    return g * ((grid - centre[..., None]).abs() <= radius)


def _blur_taps(kernel: int, device: torch.device) -> torch.Tensor:
    t = torch.arange(kernel, device=device, dtype=torch.float32) - (kernel - 1) / 2
    g = torch.exp(-(t * t) / (2.0 * opencv_gaussian_sigma(kernel) ** 2))
    return g / g.sum()


def dark_udp_step(
    heatmaps: torch.Tensor, x: torch.Tensor, y: torch.Tensor, kernel: int = DEFAULT_BLUR_KERNEL
) -> torch.Tensor:
    """DARK-UDP's Newton step H^-1 g (N, K, 2) at integer pixels ``x``, ``y`` (N, K) of the maps.

    The refined location is (x, y) minus this step (mmpose's ``post_dark_udp``; not clamped;
    non-finite steps are 0). Equals blurring the whole map as ``cv2.GaussianBlur(hm, (k, k), 0)``
    (reflect-101 border, repeated on maps narrower than the kernel as OpenCV does), clipping,
    taking the log, padding it by replication and differencing around (x, y), but blurs only at
    the 3x3 pixels the differences read: O(k w) work per joint, not O(k h w).
    """
    if kernel % 2 != 1:
        raise ValueError("blur kernel must be odd")
    hm = heatmaps.detach().to(torch.float32)
    n, k, h, w = hm.shape
    x, y = x.to(hm.device).long(), y.to(hm.device).long()
    g = _blur_taps(kernel, hm.device)
    half = torch.arange(kernel, device=hm.device) - (kernel - 1) // 2
    step3 = torch.arange(-1, 2, device=hm.device)
    cy = (y[..., None] + step3).clamp(0, h - 1)
    cx = (x[..., None] + step3).clamp(0, w - 1)
    rows = _reflect101(cy[..., None] + half, h).reshape(n, k, 3 * kernel)
    cols = _reflect101(cx[..., None] + half, w).reshape(n, k, 3 * kernel)
    strips = hm.gather(2, rows[..., None].expand(n, k, 3 * kernel, w))
    vertical = (strips.view(n, k, 3, kernel, w) * g[:, None]).sum(3)
    points = vertical.gather(3, cols[:, :, None, :].expand(n, k, 3, 3 * kernel))
    logm = torch.log((points.view(n, k, 3, 3, kernel) * g).sum(-1).clamp(*DARK_CLIP))

    def at(dx: int, dy: int) -> torch.Tensor:
        return logm[..., 1 + dy, 1 + dx]

    f0, fx1, fx_1, fy1, fy_1, f11, f_1_1 = at(0, 0), at(1, 0), at(-1, 0), at(0, 1), at(0, -1), at(1, 1), at(-1, -1)
    gx, gy = 0.5 * (fx1 - fx_1), 0.5 * (fy1 - fy_1)
    hxx = fx1 - 2.0 * f0 + fx_1 + DARK_EPS
    hyy = fy1 - 2.0 * f0 + fy_1 + DARK_EPS
    # f(1,1) + f(-1,-1) - f(1,0) - f(-1,0) - f(0,1) - f(0,-1) + 2 f = 2 f_xy + O(h^4)
    hxy = 0.5 * (f11 + f_1_1 - fx1 - fx_1 - fy1 - fy_1 + 2.0 * f0)
    det = hxx * hyy - hxy * hxy
    step = torch.stack([(hyy * gx - hxy * gy) / det, (hxx * gy - hxy * gx) / det], dim=-1)
    return torch.where(torch.isfinite(step), step, torch.zeros_like(step))


def dark_udp_refine(
    heatmaps: torch.Tensor,
    locations: torch.Tensor,
    kernel: int = DEFAULT_BLUR_KERNEL,
    *,
    max_step: float | None = None,
) -> torch.Tensor:
    """``locations`` (N, K, 2) in heatmap pixels (x, y) moved by one DARK-UDP step (float32).

    The step (:func:`dark_udp_step`) is taken at the rounded location, clamped into the map.
    ``max_step`` clamps each component of the step (mmpose does not clamp, nor does
    :meth:`HeatmapCodec.decode`; a larger step means the quadratic model does not hold there).
    """
    n, k, h, w = heatmaps.shape
    x = locations[..., 0].round().long().clamp(0, w - 1)
    y = locations[..., 1].round().long().clamp(0, h - 1)
    step = dark_udp_step(heatmaps, x, y, kernel).to(locations.device)
    if max_step is not None:
        step = step.clamp(-max_step, max_step)
    return locations.detach().float() - step


class HeatmapCodec:
    """Encode keypoints (input pixels) to heatmaps and decode heatmaps back to input pixels."""

    def __init__(
        self,
        input_size: tuple[int, int] = (192, 256),
        heatmap_size: tuple[int, int] = (48, 64),
        sigma: float = 2.0,
        kind: Kind = "msra",
        refine: Refine | None = None,
        blur_kernel: int = DEFAULT_BLUR_KERNEL,
    ):
        if kind not in DEFAULT_REFINE:
            raise ValueError(f"unknown codec kind {kind!r}; expected one of {sorted(DEFAULT_REFINE)}")
        refine = refine or DEFAULT_REFINE[kind]
        if refine not in ("none", "shift", "dark"):
            raise ValueError(f"unknown refinement {refine!r}")
        if blur_kernel % 2 != 1:
            raise ValueError("blur_kernel must be odd")
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.heatmap_size = (int(heatmap_size[0]), int(heatmap_size[1]))
        self.sigma = float(sigma)
        self.kind: Kind = kind
        self.refine: Refine = refine
        self.blur_kernel = int(blur_kernel)
        self.radius = window_radius(self.sigma)
        (iw, ih), (hw, hh) = self.input_size, self.heatmap_size
        if kind == "udp":
            self.stride = ((iw - 1.0) / (hw - 1.0), (ih - 1.0) / (hh - 1.0))
        else:
            self.stride = (iw / hw, ih / hh)

    def __repr__(self) -> str:
        return (
            f"HeatmapCodec(input_size={self.input_size}, heatmap_size={self.heatmap_size}, "
            f"sigma={self.sigma}, kind={self.kind!r}, refine={self.refine!r})"
        )

    # --- coordinate maps -------------------------------------------------------------------

    def to_heatmap(self, points: torch.Tensor) -> torch.Tensor:
        """Input pixels -> heatmap pixels (..., 2)."""
        return torch.stack([points[..., 0] / self.stride[0], points[..., 1] / self.stride[1]], dim=-1)

    def to_input(self, points: torch.Tensor) -> torch.Tensor:
        """Heatmap pixels -> input pixels (..., 2)."""
        return torch.stack([points[..., 0] * self.stride[0], points[..., 1] * self.stride[1]], dim=-1)

    # --- encode ----------------------------------------------------------------------------

    def encode(
        self, keypoints: torch.Tensor, visible: torch.Tensor, *, out: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Targets (N, K, h, w) float32 and weights (N, K) for keypoints (N, K, 2) in input pixels.

        A map is rendered where ``visible > 0``; the weight is ``visible`` (any real value, e.g. a
        pseudo-label confidence) times "window touches the map" times "coordinates are finite".
        ``out`` (a float32 (N, K, h, w) tensor on the same device) is overwritten and returned: on
        a CPU, reusing it saves the page faults of a fresh allocation, most of the cost there.
        """
        mu = self.to_heatmap(keypoints.to(torch.float32))
        return gaussian_heatmaps(mu, visible, self.heatmap_size, self.sigma, subpixel=self.kind == "udp", out=out)

    # --- decode ----------------------------------------------------------------------------

    def decode(self, heatmaps: torch.Tensor, refine: Refine | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Keypoints (N, K, 2) in input pixels and scores (N, K) (the raw peak values).

        Joints whose peak is not positive get heatmap location -1 (mmpose) and no refinement.
        """
        refine = refine or self.refine
        hm = heatmaps.detach().to(torch.float32)
        n, k, h, w = hm.shape
        flat = hm.reshape(n, k, h * w)
        scores, idx = flat.max(dim=-1)
        x, y = idx % w, torch.div(idx, w, rounding_mode="floor")
        coords = torch.stack([x, y], dim=-1).to(torch.float32)
        if refine == "shift":
            coords = coords + self._quarter_shift(flat, x, y, w, h)
        elif refine == "dark":
            coords = coords - dark_udp_step(hm, x, y, self.blur_kernel)
        elif refine != "none":
            raise ValueError(f"unknown refinement {refine!r}")
        coords = torch.where((scores > 0)[..., None], coords, torch.full_like(coords, -1.0))
        return self.to_input(coords), scores

    @staticmethod
    def _quarter_shift(flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor, w: int, h: int) -> torch.Tensor:
        """+-0.25 toward the higher neighbour; mmpose 0.x shifts only where 1 < x < w-1 and 1 < y < h-1."""
        inner = (x > 1) & (x < w - 1) & (y > 1) & (y < h - 1)
        if h < 3 or w < 3:
            return torch.zeros((*x.shape, 2), device=flat.device)
        i = (y * w + x).clamp(w + 1, h * w - w - 2)

        def at(offset: int) -> torch.Tensor:
            return flat.gather(-1, (i + offset)[..., None])[..., 0]

        diff = torch.stack([at(1) - at(-1), at(w) - at(-w)], dim=-1)
        return SHIFT_STEP * torch.sign(diff) * inner[..., None]


def _reflect101(index: torch.Tensor, size: int) -> torch.Tensor:
    """OpenCV's BORDER_REFLECT_101 (2 1 | 0 1 2 ... n-1 | n-2 n-3), reflected again as often as the
    offset needs (OpenCV's ``borderInterpolate``: period 2 (n - 1); a 1-pixel axis reads pixel 0)."""
    if size == 1:
        return torch.zeros_like(index)
    r = index.abs() % (2 * (size - 1))
    return (size - 1) - ((size - 1) - r).abs()


def flip_back(heatmaps: torch.Tensor, flip_index: Sequence[int], *, shift: bool) -> torch.Tensor:
    """Map heatmaps predicted on a mirrored crop back to the original frame.

    Swaps left/right channels and mirrors x. With ``shift`` the result moves one pixel right
    (column 0 kept), as mmpose's ``shift_heatmap`` for non-UDP models: mirroring the input maps
    heatmap u to w - 1/stride - u, not w - 1 - u.
    """
    index = torch.as_tensor(list(flip_index), device=heatmaps.device, dtype=torch.long)
    out = heatmaps.index_select(1, index).flip(-1)
    if shift:
        out = torch.cat([out[..., :1], out[..., :-1]], dim=-1)
    return out


def flip_test_average(heatmaps: torch.Tensor, flipped_back: torch.Tensor) -> torch.Tensor:
    """The 0.5/0.5 average of the original and the flipped-back prediction."""
    return 0.5 * (heatmaps + flipped_back)


def render_reference(keypoints: np.ndarray, visible: np.ndarray, codec: HeatmapCodec) -> tuple[np.ndarray, np.ndarray]:
    """Per-joint loop that pastes a Gaussian patch: the independent check for tests and benchmarks."""
    kp = np.asarray(keypoints, dtype=np.float64)
    vis = np.asarray(visible, dtype=np.float64)
    n, k = vis.shape
    w, h = codec.heatmap_size
    sx, sy = codec.stride
    r, sigma = codec.radius, codec.sigma
    size = 2 * r + 1
    heatmaps = np.zeros((n, k, h, w), np.float32)
    weights = np.zeros((n, k), np.float32)
    for b in range(n):
        for j in range(k):
            ux, uy = kp[b, j, 0] / sx, kp[b, j, 1] / sy
            if not (math.isfinite(ux) and math.isfinite(uy)):
                continue
            cx, cy = math.floor(ux + 0.5), math.floor(uy + 0.5)
            x0, y0, x1, y1 = cx - r, cy - r, cx + r + 1, cy + r + 1
            if x0 >= w or y0 >= h or x1 <= 0 or y1 <= 0:
                continue
            weights[b, j] = vis[b, j]
            if vis[b, j] <= 0:
                continue
            px, py = (r + ux - cx, r + uy - cy) if codec.kind == "udp" else (r, r)
            t = np.arange(size, dtype=np.float64)
            patch = np.exp(-((t[None, :] - px) ** 2 + (t[:, None] - py) ** 2) / (2 * sigma**2))
            hx0, hy0, hx1, hy1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
            heatmaps[b, j, hy0:hy1, hx0:hx1] = patch[hy0 - y0 : hy1 - y0, hx0 - x0 : hx1 - x0]
    return heatmaps, weights
