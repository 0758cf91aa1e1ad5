"""SAR codec: keypoints <-> the per-cell regressions of a spatial-aware regression head.

Spatial-aware regression (SAR; Wang and Zhang, CVPR 2024; reference peers.md section 2) keeps the
output grid: every cell of an h x w grid predicts, per keypoint, a confidence logit and a 2-D
offset. One convention, used by the encoder, the loss and the decoder alike:

* grid coordinates g = x / stride with stride = input / grid (the MSRA heatmap convention the
  reference's ``MSRAHeatmapCoord`` emits); normalised coordinates n = g / (w, h), so n = x / input;
* cell (i, j) sits at the normalised location (i / w, j / h) and regresses the keypoint at
  ``location - offset`` (the reference's sign), unbounded, so any cell may point anywhere;
* decoding takes the most confident cell (argmax of the sigmoid; the same cell as the argmax of
  the grid-normalised confidence) and returns its regression, scaled back to input pixels.

Scores: the reference reports the grid-normalised confidence max_i s_i / sum_j s_j, which is small
whenever several cells are confident; rescoring (mean keypoint score above 0.2, mmpose 0.x) would
then zero every instance score and tie every pose in OKS AP. The default score is therefore the
sigmoid confidence of the chosen cell, in [0, 1] like a heatmap peak; ``score="normalized"`` gives
the reference's.

Flip test happens in coordinate space: mirroring a crop maps input pixel x to input_w - 1 - x for
either affine (warpAffine samples pixel centres), which for stride 4 is exactly the reference's
empirical 1 - n - 1/(4w); keypoints are then swapped left/right and both poses averaged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch

Score = Literal["sigmoid", "normalized"]
Mode = Literal["argmax", "weighted"]

#: The heatmap codec's window radius (floor(3 sigma) at sigma 2): a joint whose window misses the
#: grid gets weight 0 there, and the SAR encoder drops the same joints by default.
DEFAULT_MARGIN = 6


class SAROutput(NamedTuple):
    """Raw outputs of a SAR head: ``logits`` (B, K, h, w), ``offsets`` (B, K, 2, h, w) in
    normalised grid units, ``heatmap`` (B, K, h, w) auxiliary heatmap logits or None.

    A CSS-only forward leaves ``logits`` and ``offsets`` None. Indexing with a tuple selects along
    the leading dimensions of every field, so ``out[:, order]`` reorders keypoints the way a
    heatmap tensor is reordered (proxy datasets); integer indices keep tuple semantics.
    """

    logits: torch.Tensor | None
    offsets: torch.Tensor | None
    heatmap: torch.Tensor | None = None

    def __getitem__(self, key):  # type: ignore[override]
        if isinstance(key, tuple):
            return SAROutput(*(None if t is None else t[key] for t in tuple.__iter__(self)))
        return tuple.__getitem__(self, key)


def cell_locations(grid_wh: tuple[int, int], *, device: torch.device | str | None = None) -> torch.Tensor:
    """(2, h * w) normalised cell locations (i / w, j / h), row-major like a flattened map."""
    w, h = int(grid_wh[0]), int(grid_wh[1])
    ys, xs = torch.meshgrid(
        torch.arange(h, device=device, dtype=torch.float32) / h,
        torch.arange(w, device=device, dtype=torch.float32) / w,
        indexing="ij",
    )
    return torch.stack([xs.reshape(-1), ys.reshape(-1)])


def cell_coordinates(offsets: torch.Tensor) -> torch.Tensor:
    """Every cell's regressed keypoint (B, K, 2, h * w) in normalised units: location - offset."""
    b, k, two, h, w = offsets.shape
    if two != 2:
        raise ValueError(f"offsets must be (B, K, 2, h, w), got {tuple(offsets.shape)}")
    return cell_locations((w, h), device=offsets.device) - offsets.float().reshape(b, k, 2, h * w)


class SARCodec:
    """Encode keypoints (input pixels) to normalised SAR targets; decode head outputs back."""

    def __init__(
        self,
        input_size: tuple[int, int] = (192, 256),
        grid_size: tuple[int, int] = (48, 64),
        *,
        margin: float = DEFAULT_MARGIN,
        score: Score = "sigmoid",
        mode: Mode = "argmax",
    ):
        if score not in ("sigmoid", "normalized"):
            raise ValueError(f"unknown score {score!r}; expected 'sigmoid' or 'normalized'")
        if mode not in ("argmax", "weighted"):
            raise ValueError(f"unknown decoding mode {mode!r}; expected 'argmax' or 'weighted'")
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.grid_size = (int(grid_size[0]), int(grid_size[1]))
        self.margin = float(margin)
        self.score: Score = score
        self.mode: Mode = mode
        (iw, ih), (gw, gh) = self.input_size, self.grid_size
        self.stride = (iw / gw, ih / gh)

    def __repr__(self) -> str:
        return (f"SARCodec(input_size={self.input_size}, grid_size={self.grid_size}, margin={self.margin}, "
                f"score={self.score!r}, mode={self.mode!r})")

    # --- coordinate maps -------------------------------------------------------------------

    def normalize(self, points: torch.Tensor) -> torch.Tensor:
        """Input pixels -> normalised grid units (..., 2)."""
        iw, ih = self.input_size
        return torch.stack([points[..., 0] / iw, points[..., 1] / ih], dim=-1)

    def to_input(self, points: torch.Tensor) -> torch.Tensor:
        """Normalised grid units -> input pixels (..., 2)."""
        iw, ih = self.input_size
        return torch.stack([points[..., 0] * iw, points[..., 1] * ih], dim=-1)

    # --- encode ----------------------------------------------------------------------------

    def encode(self, keypoints: torch.Tensor, visible: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Targets (N, K, 2) float32 in normalised units and weights (N, K).

        weight = ``visible`` x finite x "rounded grid location within ``margin`` cells of the grid"
        (the heatmap codec's test, so both heads learn from the same joints). Non-finite targets
        become 0 (with weight 0) so that they cannot poison the loss.
        """
        kp = keypoints.to(torch.float32)
        vis = visible.to(device=kp.device, dtype=torch.float32)
        gw, gh = self.grid_size
        g = torch.stack([kp[..., 0] / self.stride[0], kp[..., 1] / self.stride[1]], dim=-1)
        finite = torch.isfinite(g).all(-1)
        g = torch.where(finite[..., None], g, torch.zeros_like(g)).clamp(-1e6, 1e6)
        c = torch.floor(g + 0.5)
        m = self.margin
        near = (c[..., 0] >= -m) & (c[..., 0] <= gw - 1 + m) & (c[..., 1] >= -m) & (c[..., 1] <= gh - 1 + m)
        target = torch.stack([g[..., 0] / gw, g[..., 1] / gh], dim=-1)
        return target, vis * (finite & near)

    # --- decode ----------------------------------------------------------------------------

    def decode(self, logits: torch.Tensor, offsets: torch.Tensor, *, mode: Mode | None = None,
               score: Score | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Keypoints (N, K, 2) in input pixels and scores (N, K) from logits (N, K, h, w) and
        offsets (N, K, 2, h, w).

        ``argmax``: the regression of the most confident cell (the reference); ``weighted``: the
        mean regression under the grid-normalised confidences.
        """
        mode, score = mode or self.mode, score or self.score
        lg = logits.detach().float()
        n, k, h, w = lg.shape
        if (w, h) != self.grid_size:
            raise ValueError(f"outputs are {w}x{h}; this codec decodes {self.grid_size[0]}x{self.grid_size[1]} grids")
        if tuple(offsets.shape) != (n, k, 2, h, w):
            raise ValueError(f"offsets {tuple(offsets.shape)} do not match logits {tuple(lg.shape)}")
        s = torch.sigmoid(lg.reshape(n, k, h * w))
        p = s / s.sum(-1, keepdim=True)
        coords = cell_coordinates(offsets.detach())
        best = s.argmax(-1)
        if mode == "argmax":
            xy = coords.gather(-1, best[:, :, None, None].expand(n, k, 2, 1))[..., 0]
        elif mode == "weighted":
            xy = (coords * p[:, :, None, :]).sum(-1)
        else:
            raise ValueError(f"unknown decoding mode {mode!r}")
        conf = (s if score == "sigmoid" else p).gather(-1, best[..., None])[..., 0]
        return self.to_input(xy), conf

    def ideal_outputs(self, keypoints: torch.Tensor, visible: torch.Tensor | None = None, *,
                      peak: float = 8.0) -> SAROutput:
        """The outputs a perfect head would give for keypoints (N, K, 2) in input pixels: every
        cell regresses the keypoint exactly, the nearest cell is confident (no cell where
        ``visible`` is 0, so those joints score sigmoid(-peak)). For tests and demos."""
        t = self.normalize(keypoints.to(torch.float32))
        gw, gh = self.grid_size
        n, k = t.shape[:2]
        loc = cell_locations(self.grid_size, device=t.device).reshape(2, gh, gw)
        offsets = loc - t[..., None, None]
        near = torch.floor(t * torch.tensor([gw, gh], device=t.device) + 0.5)
        ix = near[..., 0].clamp(0, gw - 1).long()
        iy = near[..., 1].clamp(0, gh - 1).long()
        logits = torch.full((n, k, gh * gw), -peak, device=t.device)
        on = torch.full((n, k, 1), peak, device=t.device)
        if visible is not None:
            on = torch.where(visible.to(t.device)[..., None] > 0, on, -peak)
        logits.scatter_(-1, (iy * gw + ix)[..., None], on)
        return SAROutput(logits.reshape(n, k, gh, gw), offsets)


def flip_coordinates(keypoints: torch.Tensor, flip_index: Sequence[int], input_width: int) -> torch.Tensor:
    """Keypoints (N, K, 2) predicted on a mirrored crop, in the original crop's frame: x -> W - 1 - x
    and left/right joints swapped (``out[:, j] = in[:, flip_index[j]]``, as ``flip_back``)."""
    index = torch.as_tensor(list(flip_index), device=keypoints.device, dtype=torch.long)
    out = keypoints.index_select(1, index).clone()
    out[..., 0] = (input_width - 1) - out[..., 0]
    return out


def flip_scores(scores: torch.Tensor, flip_index: Sequence[int]) -> torch.Tensor:
    index = torch.as_tensor(list(flip_index), device=scores.device, dtype=torch.long)
    return scores.index_select(1, index)


def flip_test_average_coordinates(
    keypoints: torch.Tensor, scores: torch.Tensor, flipped_back: torch.Tensor, flipped_scores: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The 0.5/0.5 average of both poses and both scores (the reference averages both)."""
    return 0.5 * (keypoints + flipped_back), 0.5 * (scores + flipped_scores)


def focal_prior_bias(prior: float = 0.01) -> float:
    """Logit bias whose sigmoid is ``prior`` (-ln 99 for the reference's 0.01)."""
    return -math.log((1.0 - prior) / prior)


__all__ = [
    "SAROutput",
    "SARCodec",
    "cell_locations",
    "cell_coordinates",
    "flip_coordinates",
    "flip_scores",
    "flip_test_average_coordinates",
    "focal_prior_bias",
    "DEFAULT_MARGIN",
]
