"""PoseBH's losses: heatmap MSE, PPC, PPD, PHM, CSS and CPS (reference sections 3.1-3.5).

Every loss runs in fp32 with autocast disabled. The weights are the paper's symbols with the
official code's values (module defaults below; the configured values come from ``conf/``):
alpha = PHM MSE, beta = PPC, gamma = PPD, delta = CPS, zeta = CSS, kappa = Sinkhorn epsilon,
momentum = lambda of the prototype update.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from posebh.data import codecs
from posebh.models.prototypes import (
    KAPPA,
    MOMENTUM,
    SINKHORN_ITERS,
    ClusterPrototypes,
    Prototypes,
    fp32,
    prototype_learning,
    sample_pixels,
)

ALPHA = 3.33e-6  # prototype-heatmap MSE
BETA = 1.25e-7  # PPC (1.25e-5 x 0.01)
GAMMA = 1.25e-8  # PPD (1.25e-5 x 0.001)
DELTA = 1e-2  # CPS
ZETA = 1e-3  # CSS
CSS_CONF_THR = 0.25
CSS_MATCH_DIST = 2.1
CSS_SIGMA = 2.0
DARK_KERNEL = codecs.DEFAULT_BLUR_KERNEL
#: CSS clamps each DARK-UDP step component to this many heatmap pixels (evaluation does not).
CSS_MAX_DARK_STEP = 1.0


@dataclass(frozen=True)
class LossWeights:
    """The loss weights and prototype constants, named after the paper's symbols."""

    alpha: float = ALPHA
    beta: float = BETA
    gamma: float = GAMMA
    delta: float = DELTA
    zeta: float = ZETA
    kappa: float = KAPPA
    momentum: float = MOMENTUM


def _zero_like_graph(*tensors: torch.Tensor) -> torch.Tensor:
    """A fp32 zero that stays connected to the inputs' graph (keeps DDP's used-parameter set stable)."""
    z = torch.zeros((), device=tensors[0].device)
    for t in tensors:
        z = z + t.float().sum() * 0.0
    return z


# ----------------------------------------------------------------------------------------------
# Heatmap MSE and prototype losses
# ----------------------------------------------------------------------------------------------


def heatmap_mse(
    pred: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    *,
    batch_size_for_mean: int | None = None,
) -> torch.Tensor:
    """JointsMSE with target weight: (1/K) sum_k mean over (N, pixels) of (w * (pred - target))^2.

    ``batch_size_for_mean`` replaces N in the mean. The official multi-head loss runs every head on
    the whole batch with other datasets' samples weighted 0, so head d's loss is divided by the
    whole batch size B, i.e. scaled by its dataset's share n_d / B: pass B with only the n_d
    samples of dataset d to reproduce that. The PHM and CSS terms average over their own samples
    (leave it None).
    """
    with fp32(pred.device):
        n, k, h, w = pred.shape
        diff = pred.float() - target.float()
        if weight is not None:
            diff = diff * weight.float().reshape(n, k, 1, 1)
        denom = (batch_size_for_mean if batch_size_for_mean is not None else n) * h * w * k
        if denom == 0:
            return _zero_like_graph(pred)
        return diff.pow(2).sum() / denom


def ppc_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pixel-prototype contrastive loss: cross-entropy on the |cos| logits, no temperature."""
    with fp32(logits.device):
        if logits.shape[0] == 0:
            return _zero_like_graph(logits)
        return F.cross_entropy(logits.float(), target.long())


def ppd_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pixel-prototype distance loss: mean over pixels of (1 - logit of the target)^2."""
    with fp32(logits.device):
        if logits.shape[0] == 0:
            return _zero_like_graph(logits)
        picked = logits.float().gather(1, target.long().unsqueeze(1)).squeeze(1)
        return (1.0 - picked).pow(2).mean()


def prototype_loss(
    logits: torch.Tensor, target: torch.Tensor, *, beta: float = BETA, gamma: float = GAMMA
) -> torch.Tensor:
    """beta * PPC + gamma * PPD."""
    return beta * ppc_loss(logits, target) + gamma * ppd_loss(logits, target)


def phm_loss(
    proto_heatmap: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    *,
    alpha: float = ALPHA,
) -> torch.Tensor:
    """alpha * JointsMSE between the prototype heatmap and the GT (over the dataset's samples)."""
    return alpha * heatmap_mse(proto_heatmap, target, weight)


# ----------------------------------------------------------------------------------------------
# Peaks, DARK-UDP refinement and UDP Gaussian targets (all torch, no gradient)
# ----------------------------------------------------------------------------------------------


def heatmap_peaks(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer argmax location (n, K, 2) as (x, y) float and peak value (n, K)."""
    n, k, h, w = heatmaps.shape
    val, idx = heatmaps.reshape(n, k, h * w).max(dim=2)
    loc = torch.stack([(idx % w), torch.div(idx, w, rounding_mode="floor")], dim=-1).float()
    return loc, val


@torch.no_grad()
def dark_udp_refine(
    heatmaps: torch.Tensor, locations: torch.Tensor, kernel: int = DARK_KERNEL
) -> torch.Tensor:
    """DARK-UDP sub-pixel refinement (mmpose ``post_dark_udp``) of the CSS pseudo-labels.

    :func:`posebh.data.codecs.dark_udp_refine` (the decoder's DARK-UDP: blur with the OpenCV
    sigma of ``kernel``, clip to [1e-3, 50], log, one Newton step from the rounded location) with
    the step clamped to +-``CSS_MAX_DARK_STEP`` px (safety; mmpose does not clamp: a larger step
    means the quadratic model does not hold there). fp32, no gradient.
    """
    with fp32(heatmaps.device):
        return codecs.dark_udp_refine(heatmaps, locations, kernel, max_step=CSS_MAX_DARK_STEP)


@torch.no_grad()
def render_udp_gaussian(
    locations: torch.Tensor,
    weights: torch.Tensor,
    size: tuple[int, int],
    sigma: float = CSS_SIGMA,
) -> tuple[torch.Tensor, torch.Tensor]:
    """UDP Gaussian targets for locations already in heatmap pixels (n, K, 2), batched.

    The UDP codec's rendering (:func:`posebh.data.codecs.gaussian_heatmaps`) at stride 1: a
    Gaussian at the sub-pixel location, cut to the (2 floor(3 sigma) + 1)^2 window around the
    rounded centre. Joints whose window misses the map (or whose location is not finite) get
    weight 0. Rendered where weight > 0 (mmpose's v > 0.5 test is for 0/1 visibilities; CSS
    weights are confidences). Returns (heatmaps (n, K, h, w), weights).
    """
    with fp32(locations.device):
        return codecs.gaussian_heatmaps(locations, weights, size, sigma, subpixel=True)


# ----------------------------------------------------------------------------------------------
# CSS: cross-type self-supervision
# ----------------------------------------------------------------------------------------------

Refine = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Render = Callable[[torch.Tensor, torch.Tensor, tuple[int, int]], tuple[torch.Tensor, torch.Tensor]]


@torch.no_grad()
def css_pseudo_labels(
    head_hm: torch.Tensor,
    proto_hm: torch.Tensor,
    *,
    conf_thr: float = CSS_CONF_THR,
    match_dist: float = CSS_MATCH_DIST,
    refine: Refine | None = dark_udp_refine,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pseudo-labels for one keypoint set on images that have no labels for it (reference 3.4).

    Keep (image, joint) where both peaks exceed ``conf_thr`` and the two argmax locations are at
    most ``match_dist`` heatmap pixels apart (true Euclidean distance). The label is the
    confidence-weighted mean of the two (refined) locations, (cA yA + cB yB) / max(cA + cB, 1e-4);
    weight min(cA, cB) for kept joints, else 0. The released code used cB in place of yB and a
    wrong distance (reference section 9); this is the intended rule. No gradient.
    ``refine=None`` keeps the integer argmax locations.
    """
    with fp32(head_hm.device):
        a = head_hm.detach().float()
        b = proto_hm.detach().float()
        loc_a, conf_a = heatmap_peaks(a)
        loc_b, conf_b = heatmap_peaks(b)
        dist = (loc_a - loc_b).pow(2).sum(-1).sqrt()
        keep = (conf_a > conf_thr) & (conf_b > conf_thr) & (dist <= match_dist)
        if refine is not None:
            loc_a = refine(a, loc_a).float()
            loc_b = refine(b, loc_b).float()
        denom = (conf_a + conf_b).clamp_min(1e-4).unsqueeze(-1)
        label = (conf_a.unsqueeze(-1) * loc_a + conf_b.unsqueeze(-1) * loc_b) / denom
        weight = torch.minimum(conf_a, conf_b) * keep.float()
        return label, weight


def css_loss(
    head_hm: torch.Tensor,
    proto_hm: torch.Tensor,
    emb_map: torch.Tensor,
    prototypes: Prototypes,
    *,
    offset: int,
    alpha: float = ALPHA,
    beta: float = BETA,
    gamma: float = GAMMA,
    zeta: float = ZETA,
    conf_thr: float = CSS_CONF_THR,
    match_dist: float = CSS_MATCH_DIST,
    sigma: float = CSS_SIGMA,
    refine: Refine | None = dark_udp_refine,
    render: Render | None = None,
    eps: float = KAPPA,
    iters: int = SINKHORN_ITERS,
    sample_thr: float = 0.0,
) -> torch.Tensor:
    """CSS for one target keypoint set d (rows ``[offset, offset + K)``) on other datasets' images.

    ``head_hm`` = head d's heatmaps and ``proto_hm`` = d's prototype-heatmap channels on those n
    images (``prototypes.heatmap(emb_map, slice(offset, offset + K))``, both with gradient),
    ``emb_map`` their embeddings. Returns
    zeta * [MSE(head, pseudo) + alpha * MSE(proto, pseudo) + beta * PPC + gamma * PPD], the MSEs
    averaged over the images with at least one kept joint (as the official loss), the PPC/PPD on
    pixels with pseudo target x weight > ``sample_thr`` against d's prototypes, without updating
    them (they are frozen when CSS is on). Sum over d at the call site.
    """
    with fp32(head_hm.device):
        n, k, h, w = head_hm.shape
        label, weight = css_pseudo_labels(
            head_hm, proto_hm, conf_thr=conf_thr, match_dist=match_dist, refine=refine
        )
        images = weight.gt(0).any(dim=1)
        if not bool(images.any()):
            return _zero_like_graph(head_hm, proto_hm, emb_map)
        if render is None:
            target, tw = render_udp_gaussian(label[images], weight[images], (w, h), sigma)
        else:
            target, tw = render(label[images], weight[images], (w, h))
        target, tw = target.float().detach(), tw.float().detach()
        mse_head = heatmap_mse(head_hm[images], target, tw)
        mse_proto = heatmap_mse(proto_hm[images], target, tw)
        px = sample_pixels(target, tw, emb_map[images], sample_thr)
        out = prototype_learning(
            prototypes, px.emb, px.label, px.conf, offset=offset, K=k, eps=eps, iters=iters, update=False
        )
        total = mse_head + alpha * mse_proto + prototype_loss(out.logits, out.target, beta=beta, gamma=gamma)
        return zeta * total


# ----------------------------------------------------------------------------------------------
# CPS: clustered prototype supervision
# ----------------------------------------------------------------------------------------------


def cluster_targets(
    keypoint: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor,
    offset: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster targets (n, C, h, w) and weights (n, C) for n samples of one dataset.

    Cluster c takes the GT channel of its keypoint ``keypoint[c]`` (global index) when that
    keypoint belongs to this dataset (rows ``[offset, offset + K)``), else zeros with weight 0.
    Build these per dataset and put them back in batch order (the released code concatenated
    them in dataset order against batch-ordered predictions).
    """
    n, k, h, w = target.shape
    local = keypoint.to(target.device).long() - offset
    valid = (local >= 0) & (local < k)
    src = local.clamp(0, max(k - 1, 0))
    t = target.float()[:, src] * valid.float()[None, :, None, None]
    wt = weight.float()[:, src] * valid.float()[None, :]
    return t, wt


def cps_loss(
    emb_map: torch.Tensor,
    clusters: ClusterPrototypes,
    target: torch.Tensor,
    weight: torch.Tensor,
    *,
    alpha: float = ALPHA,
    beta: float = BETA,
    gamma: float = GAMMA,
    delta: float = DELTA,
    eps: float = KAPPA,
    iters: int = SINKHORN_ITERS,
    sample_thr: float = 0.0,
    enabled: bool = True,
) -> torch.Tensor:
    """delta * [beta * PPC + gamma * PPD on the cluster prototypes + alpha * MSE(cluster heatmap,
    mapped GT)] (reference 3.5). ``target``/``weight`` (B, C, ...) come from ``cluster_targets``
    in the same sample order as ``emb_map``. ``enabled=False`` returns a graph-connected zero."""
    if not enabled:
        return _zero_like_graph(emb_map)
    with fp32(emb_map.device):
        c = clusters.num_clusters
        hm = clusters.heatmap(emb_map)
        mse = heatmap_mse(hm, target, weight)
        px = sample_pixels(target, weight, emb_map, sample_thr)
        out = prototype_learning(
            clusters, px.emb, px.label, px.conf, offset=0, K=c, eps=eps, iters=iters, update=False
        )
        return delta * (prototype_loss(out.logits, out.target, beta=beta, gamma=gamma) + alpha * mse)


__all__ = [
    "ALPHA",
    "BETA",
    "DELTA",
    "GAMMA",
    "ZETA",
    "LossWeights",
    "cluster_targets",
    "cps_loss",
    "css_loss",
    "css_pseudo_labels",
    "dark_udp_refine",
    "heatmap_mse",
    "heatmap_peaks",
    "phm_loss",
    "ppc_loss",
    "ppd_loss",
    "prototype_loss",
    "render_udp_gaussian",
]
