"""SAR losses (reference peers.md 2.3-2.4): the Laplacian-kernel likelihood and the auxiliary
heatmap loss. Both run in fp32 with autocast disabled, like every PoseBH loss.

Likelihood, per keypoint: the confidences are normalised over the grid by their sum (not a
softmax), p_i = s_i / sum_j s_j with s = sigmoid(logit); every cell's regression is scored by the
Laplace kernel q_i = exp(-lambda (|x_i - x| + |y_i - y|)) in normalised units (lambda = 16, so the
kernel's scale is 1/16 of the grid: w/16 x h/16 cells, anisotropic when w != h); the loss is
-log(sum_i p_i q_i + 1e-6). Auxiliary heatmap: quality-focal BCE |t - sigmoid(x)|^2 BCE(x, t) (for
t = 0 that is the reference's sigma(x)^2 modulation of negatives), summed and divided by the
number of pixels whose target exceeds 0.7.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from posebh.data.sar_codec import cell_coordinates
from posebh.models.prototypes import fp32

#: The reference's kernel sharpness, relative to the grid (normalised coordinates).
SAR_LAMBDA = 16.0
SAR_EPS = 1e-6
#: The auxiliary heatmap loss weight of the reference.
SAR_AUX_WEIGHT = 1.0
#: Pixels with a target above this count as positives when normalising the auxiliary loss.
AUX_POSITIVE_THR = 0.7


def _zero_like_graph(*tensors: torch.Tensor) -> torch.Tensor:
    """A fp32 zero connected to the inputs' graph (keeps DDP's used-parameter set stable)."""
    z = torch.zeros((), device=tensors[0].device)
    for t in tensors:
        z = z + t.float().sum() * 0.0
    return z


def _share(n: int, batch_size_for_mean: int | None) -> float:
    return 1.0 if batch_size_for_mean is None else n / batch_size_for_mean


def sar_nll(
    logits: torch.Tensor, offsets: torch.Tensor, target: torch.Tensor, *, lam: float = SAR_LAMBDA, eps: float = SAR_EPS
) -> torch.Tensor:
    """Per-keypoint negative log-likelihood (N, K) for logits (N, K, h, w), offsets (N, K, 2, h, w)
    and normalised targets (N, K, 2)."""
    n, k, h, w = logits.shape
    s = torch.sigmoid(logits.float().reshape(n, k, h * w))
    p = s / s.sum(-1, keepdim=True)
    coords = cell_coordinates(offsets)
    dist = (coords - target.float()[..., None]).abs().sum(2)
    return -torch.log((p * torch.exp(-lam * dist)).sum(-1) + eps)


def sar_loss(
    logits: torch.Tensor,
    offsets: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    *,
    lam: float = SAR_LAMBDA,
    eps: float = SAR_EPS,
    batch_size_for_mean: int | None = None,
) -> torch.Tensor:
    """The SAR likelihood loss: sum_k w_k NLL_k / #{w_k > 0} over the keypoints with weight > 0.

    ``batch_size_for_mean`` (B) scales the result by n / B, this head's share of the batch: summed
    over the per-dataset heads, every sample then counts once whatever the batch's dataset mix, the
    balance the heatmap MSE has (``heatmap_mse``'s argument of the same name).
    """
    with fp32(logits.device):
        n, k = logits.shape[:2]
        w = torch.ones(n, k, device=logits.device) if weight is None else weight.float().reshape(n, k)
        valid = w > 0
        if n * k == 0:
            return _zero_like_graph(logits, offsets)
        # no host sync: without valid keypoints the sum is a graph-connected zero
        nll = sar_nll(logits, offsets, torch.where(valid[..., None], target.float(), 0.0), lam=lam, eps=eps)
        count = valid.sum().clamp_min(1)
        return (nll * torch.where(valid, w, 0.0)).sum() / count * _share(n, batch_size_for_mean)


def aux_heatmap_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    *,
    batch_size_for_mean: int | None = None,
    positive_thr: float = AUX_POSITIVE_THR,
) -> torch.Tensor:
    """Quality-focal BCE of auxiliary heatmap logits (N, K, h, w) against Gaussian targets.

    Channels with weight 0 (unlabelled joints) are left out; the sum is divided by the number of
    target pixels above ``positive_thr`` in the kept channels (at least 1), then scaled by n / B as
    :func:`sar_loss`.
    """
    with fp32(logits.device):
        n, k = logits.shape[:2]
        x, t = logits.float(), target.float()
        w = torch.ones(n, k, device=x.device) if weight is None else weight.float().reshape(n, k)
        if x.numel() == 0:
            return _zero_like_graph(logits)
        keep = torch.where(w > 0, w, 0.0)[..., None, None]
        focal = (torch.sigmoid(x) - t).pow(2) * F.binary_cross_entropy_with_logits(x, t, reduction="none")
        positives = ((t > positive_thr).float() * (keep > 0)).sum().clamp_min(1.0)
        return (focal * keep).sum() / positives * _share(n, batch_size_for_mean)


__all__ = ["SAR_LAMBDA", "SAR_EPS", "SAR_AUX_WEIGHT", "sar_nll", "sar_loss", "aux_heatmap_loss"]
