"""Keypoint prototypes, Sinkhorn-Knopp assignment, momentum update and prototype clustering.

PoseBH keeps M unit prototypes of dimension F for each of the J keypoint types of the global MDT
space (``posebh.skeletons.mdt_space``). They are never trained by the optimizer: pixels of the
ground-truth heatmaps are assigned to the prototypes of their keypoint with a few Sinkhorn-Knopp
iterations, and each prototype moves toward the weighted mean of its pixels (momentum update).
Similarity everywhere is |cos| (the official ``sim_rescale='abs'``).

All math here runs in fp32 with autocast disabled, whatever the caller's AMP setting.

Indexing (DESIGN.md section 5): a dataset with start ``offset`` in J owns prototype rows
``[offset, offset + K)``, i.e. columns ``[offset*M, (offset+K)*M)`` of the flattened (J*M)
similarities. The released code mixes local and global indices for datasets after the first; here
the global index ``offset + k`` is used everywhere (Sinkhorn input, correct-classification mask,
logit columns).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Literal, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: Sinkhorn entropic temperature (the paper's kappa, ProtoSeg's epsilon).
KAPPA = 0.05
#: Sinkhorn-Knopp iterations of the official code.
SINKHORN_ITERS = 3
#: Momentum of the prototype update (the paper's lambda).
MOMENTUM = 0.999
#: Gumbel-softmax temperature of the update assignment (irrelevant for the hard one-hot draw).
GUMBEL_TAU = 0.5
#: Prototypes per keypoint (M) and embedding width (F).
PROTOTYPES_PER_KEYPOINT = 3
EMBED_DIM = 64
#: Prototype-heatmap scores are clamped to [HEATMAP_CLAMP, 1 - HEATMAP_CLAMP].
HEATMAP_CLAMP = 1e-4
#: CPS cluster-count options and soft k-means settings of the official config.
CLUSTER_OPTIONS = (64, 96, 128)
KMEANS_BETA = 20.0
KMEANS_ITERS = 500

_CHUNK = 65536  # pixels per chunk for the no-grad argmax over all J keypoints


@contextlib.contextmanager
def fp32(device: torch.device | str) -> Iterator[None]:
    """Disable autocast for the enclosed block (tensors still need an explicit ``.float()``)."""
    dev = torch.device(device).type
    if dev not in ("cuda", "cpu", "xpu", "mps", "hpu"):
        yield
        return
    with torch.autocast(device_type=dev, enabled=False):
        yield


# ----------------------------------------------------------------------------------------------
# The prototype tensor
# ----------------------------------------------------------------------------------------------


class Prototypes(nn.Module):
    """J x M x F unit prototypes, held in a buffer named ``prototypes``.

    A buffer (not a parameter) so that no optimizer, freeze logic or layer-decay grouping can ever
    touch it; it is still saved in the state dict. ``frozen`` stops momentum updates (stage 2/3).
    """

    def __init__(
        self,
        num_keypoints: int,
        num_per_keypoint: int = PROTOTYPES_PER_KEYPOINT,
        dim: int = EMBED_DIM,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        p = torch.zeros(num_keypoints, num_per_keypoint, dim)
        nn.init.trunc_normal_(p, mean=0.0, std=0.02, a=-2.0, b=2.0, generator=generator)
        self.register_buffer("prototypes", F.normalize(p, dim=-1))
        self.frozen = False

    @property
    def num_keypoints(self) -> int:
        return self.prototypes.shape[0]

    @property
    def num_per_keypoint(self) -> int:
        return self.prototypes.shape[1]

    @property
    def dim(self) -> int:
        return self.prototypes.shape[2]

    @torch.no_grad()
    def normalize_(self) -> None:
        """L2-normalise in place over F (after a DDP average or a checkpoint load)."""
        self.prototypes.copy_(F.normalize(self.prototypes.float(), dim=-1))

    def unit(self) -> torch.Tensor:
        """Normalised fp32 copy (J, M, F); never the buffer itself, so later in-place updates
        cannot invalidate tensors saved for backward."""
        return F.normalize(self.prototypes.detach().float(), dim=-1)

    def similarity(self, emb: torch.Tensor) -> torch.Tensor:
        """|cos| between pixel embeddings (N, F) and every prototype: (N, J, M), fp32."""
        with fp32(emb.device):
            x = F.normalize(emb.float(), dim=1)
            p = self.unit()
            return (x @ p.flatten(0, 1).T).abs().view(x.shape[0], *p.shape[:2])

    def heatmap(self, emb_map: torch.Tensor, sl: slice | None = None) -> torch.Tensor:
        """Prototype-side keypoint heatmap (B, K, h, w): max over M of |cos|, clamped.

        ``sl`` selects keypoint rows of the global space (a dataset's ``MDTSpace.slice``);
        None gives all J.
        """
        with fp32(emb_map.device):
            b, f, h, w = emb_map.shape
            x = F.normalize(emb_map.float().flatten(2), dim=1)  # (B, F, hw)
            p = self.unit()
            if sl is not None:
                p = p[sl]
            k, m, _ = p.shape
            sim = torch.matmul(p.reshape(k * m, f), x).abs()  # (B, K*M, hw)
            score = sim.view(b, k, m, h * w).amax(dim=2)
            return score.clamp(HEATMAP_CLAMP, 1.0 - HEATMAP_CLAMP).view(b, k, h, w)

    def forward(self, emb_map: torch.Tensor, sl: slice | None = None) -> torch.Tensor:
        return self.heatmap(emb_map, sl)


@torch.no_grad()
def all_reduce_mean_(prototypes: Prototypes | torch.Tensor) -> None:
    """Average the prototypes over DDP ranks (no-op without an initialised process group or when
    frozen). Not re-normalised here: the next ``unit()``/update normalises, as in the reference."""
    import torch.distributed as dist

    if isinstance(prototypes, Prototypes):
        if prototypes.frozen:
            return
        t = prototypes.prototypes
    else:
        t = prototypes
    if not (dist.is_available() and dist.is_initialized()):
        return
    world = dist.get_world_size()
    if world == 1:
        return
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    t.div_(world)


# ----------------------------------------------------------------------------------------------
# Sinkhorn-Knopp
# ----------------------------------------------------------------------------------------------


def _sinkhorn_grouped(
    q: torch.Tensor, group: torch.Tensor, num_groups: int, eps: float, iters: int
) -> torch.Tensor:
    """Independent Sinkhorn-Knopp runs for every group of rows of Q (n, M), vectorised.

    Row n belongs to group ``group[n]`` (the pixel's keypoint class); each group is normalised as
    if it were its own (n_k, M) problem, which is what the per-class loop of the reference does.
    """
    n, m = q.shape
    if n == 0:
        return q.new_zeros(n, m)
    tiny = torch.finfo(torch.float32).tiny
    q = q.float() / eps
    counts = torch.bincount(group, minlength=num_groups).float()  # n_k
    n_k = counts[group].unsqueeze(1)  # (n, 1)
    # subtracting each group's max is a constant factor per group, cancelled by the total-sum
    # normalisation right after: same result, no overflow for small eps
    gmax = torch.full((num_groups,), float("-inf"), device=q.device)
    gmax = gmax.scatter_reduce(0, group, q.amax(dim=1), reduce="amax")
    lmat = torch.exp(q - gmax[group].unsqueeze(1))
    total = torch.zeros(num_groups, device=q.device).index_add_(0, group, lmat.sum(dim=1))
    lmat = lmat / total[group].unsqueeze(1).clamp_min(tiny)
    for _ in range(iters):
        # prototype (row of the reference's M x n matrix) sums, per group
        rows = torch.zeros(num_groups, m, device=q.device).index_add_(0, group, lmat)
        lmat = lmat / rows[group].clamp_min(tiny) / m
        # pixel (column) sums
        lmat = lmat / lmat.sum(dim=1, keepdim=True).clamp_min(tiny) / n_k
    return lmat * n_k


def sinkhorn(q: torch.Tensor, eps: float = KAPPA, iters: int = SINKHORN_ITERS) -> torch.Tensor:
    """Sinkhorn-Knopp soft assignment of n pixels to M prototypes (reference 2.2).

    exp(Q/eps), normalise the total to 1, then ``iters`` times: divide each prototype's mass by its
    sum and by M, each pixel's by its sum and by n; finally times n, so every pixel row sums to 1.
    Computed in the (n, M) layout instead of the reference's transposed (M, n): same numbers.
    The max of Q is subtracted before exp (cancelled by the first normalisation: same result).
    """
    with fp32(q.device):
        group = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        return _sinkhorn_grouped(q.float(), group, 1, eps, iters)


def gumbel_one_hot(
    logits: torch.Tensor, tau: float = GUMBEL_TAU, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Hard Gumbel-softmax sample (one-hot rows), as ``F.gumbel_softmax(hard=True)`` forward.

    Written out so a ``torch.Generator`` can seed it (``F.gumbel_softmax`` only uses the global
    RNG; without a generator this also uses the global RNG, so ``torch.manual_seed`` reproduces).
    For a hard sample tau does not change the argmax; it is kept for the record.
    """
    u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=torch.float32)
    u = u.clamp(torch.finfo(torch.float32).tiny, 1.0 - torch.finfo(torch.float32).eps)
    g = -torch.log(-torch.log(u))
    idx = ((logits.float() + g) / tau).argmax(dim=1)
    return F.one_hot(idx, logits.shape[1]).float()


# ----------------------------------------------------------------------------------------------
# Pixel sampling and prototype learning
# ----------------------------------------------------------------------------------------------


class PixelSamples(NamedTuple):
    emb: torch.Tensor  # (N, F) raw (not normalised) embeddings, with gradient
    label: torch.Tensor  # (N,) local keypoint class (argmax channel)
    conf: torch.Tensor  # (N,) max target value


def sample_pixels(
    target_heatmaps: torch.Tensor,
    weights: torch.Tensor | None,
    emb_map: torch.Tensor,
    conf_thr: float = 0.0,
) -> PixelSamples:
    """Pixels whose max over the (weighted) target channels exceeds ``conf_thr`` (reference 2.1).

    The target is multiplied by its joint weight first, so invisible joints (weight 0) contribute
    no pixels, and CSS can sample from ``target * weight > 0`` (reference 3.4 step 6).
    Thresholds: 0.0 for multi-dataset training, 0.2 for transfer.
    """
    with fp32(emb_map.device):
        t = target_heatmaps.float()
        if weights is not None:
            t = t * weights.float()[:, :, None, None]
        n, k, h, w = t.shape
        conf, label = t.permute(0, 2, 3, 1).reshape(-1, k).max(dim=1)
        keep = conf > conf_thr
        emb = emb_map.float().permute(0, 2, 3, 1).reshape(n * h * w, -1)
        return PixelSamples(emb[keep], label[keep], conf[keep])


class ProtoLearningOutput(NamedTuple):
    logits: torch.Tensor  # (N, K*M) |cos| to the dataset's prototypes, with gradient to emb
    target: torch.Tensor  # (N,) sinkhorn argmax + M * local class
    assignment: torch.Tensor  # (N, M) Sinkhorn soft assignment to the own class's prototypes


@torch.no_grad()
def _global_argmax(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """argmax over all J keypoints of max_m |cos| for unit pixels x (N, F); chunked."""
    j, m, f = p.shape
    flat = p.reshape(j * m, f).T
    out = [(c @ flat).abs().view(-1, j, m).amax(dim=2).argmax(dim=1) for c in x.split(_CHUNK)]
    return torch.cat(out) if out else x.new_zeros(0, dtype=torch.long)


def prototype_learning(
    prototypes: Prototypes,
    emb: torch.Tensor,
    local_class: torch.Tensor,
    conf: torch.Tensor,
    *,
    offset: int,
    K: int,
    eps: float = KAPPA,
    iters: int = SINKHORN_ITERS,
    momentum: float = MOMENTUM,
    hard: bool = False,
    update: bool = True,
    generator: torch.Generator | None = None,
    tau: float = GUMBEL_TAU,
    update_assignment: Literal["gumbel", "argmax"] = "gumbel",
) -> ProtoLearningOutput:
    """PPC/PPD logits and targets for one dataset's pixels, plus the momentum update (2.2, 2.3).

    ``emb`` (N, F) are raw pixel embeddings of dataset rows ``[offset, offset + K)``, ``local_class``
    their keypoint class in 0..K-1 and ``conf`` their target value. Logits keep the gradient to
    ``emb``; targets and the update never carry gradient. Logits and Sinkhorn use the prototypes
    as they were before this call's update.

    When ``update`` and not ``prototypes.frozen``: a hard Gumbel sample of the Sinkhorn output
    (used as logits; ``update_assignment="argmax"`` takes the Sinkhorn argmax instead, a
    deterministic option for tests and ablations), a correct-classification mask (the global argmax
    over all J must be ``offset + k``), weight w = c*a (soft) or a (``hard``),
    f_m = sum q w^2 x normalised, p <- lambda p + (1 - lambda) f for prototypes with non-zero
    mass sum q w, then every prototype is re-normalised.
    """
    with fp32(emb.device):
        p_all = prototypes.unit()
        j, m, f = p_all.shape
        if offset < 0 or offset + K > j:
            raise ValueError(f"rows [{offset}, {offset + K}) outside the {j} prototype rows")
        n = emb.shape[0]
        x = F.normalize(emb.float(), dim=1)
        block = p_all[offset : offset + K].reshape(K * m, f)
        # columns [offset*M, (offset+K)*M) of the flattened J*M similarities
        logits = (x @ block.T).abs()
        label = local_class.to(device=emb.device, dtype=torch.long)
        with torch.no_grad():
            # Sinkhorn input: similarities to the prototypes of global class offset + k
            own = logits.detach().view(n, K, m)[torch.arange(n, device=emb.device), label]
            assign = _sinkhorn_grouped(own, label, K, eps, iters)
            idx = assign.argmax(dim=1) if n else label.new_zeros(0)
            target = idx + m * label
            if update and not prototypes.frozen and n > 0:
                if update_assignment == "gumbel":
                    q_idx = gumbel_one_hot(assign, tau, generator).argmax(dim=1)
                elif update_assignment == "argmax":
                    q_idx = idx
                else:
                    raise ValueError(f"unknown update_assignment {update_assignment!r}")
                xd = x.detach()
                correct = (_global_argmax(xd, p_all) == offset + label).float()
                c = conf.to(emb.device).float() * correct
                w = correct if hard else c
                slot = label * m + q_idx  # flat (K*M) slot of each pixel's one-hot assignment
                feat = torch.zeros(K * m, f, device=emb.device).index_add_(
                    0, slot, (w * w).unsqueeze(1) * xd
                )
                mass = torch.zeros(K * m, device=emb.device).index_add_(0, slot, w)
                feat = F.normalize(feat, dim=1)
                upd = mass != 0
                new = block.clone()
                new[upd] = momentum * block[upd] + (1.0 - momentum) * feat[upd]
                p_new = p_all.clone()
                p_new[offset : offset + K] = new.view(K, m, f)
                prototypes.prototypes.copy_(F.normalize(p_new, dim=-1))
    return ProtoLearningOutput(logits, target, assign)


# ----------------------------------------------------------------------------------------------
# Clustered prototypes (CPS)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KMeansResult:
    centroids: torch.Tensor  # (C, F) unit vectors
    assignment: torch.Tensor  # (P, C) soft assignment
    dist: torch.Tensor  # (P, C) (1 - cos) / 2


def _cos_dist(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return (1.0 - F.normalize(x, dim=1) @ F.normalize(c, dim=1).T) * 0.5


def soft_kmeans(
    vectors: torch.Tensor,
    num_clusters: int,
    *,
    beta: float = KMEANS_BETA,
    iters: int = KMEANS_ITERS,
    init: Literal["first_of_each_keypoint", "even"] = "first_of_each_keypoint",
    num_per_keypoint: int = PROTOTYPES_PER_KEYPOINT,
) -> KMeansResult:
    """Soft k-means on the sphere: distance (1 - cos)/2, assignment softmax(-beta * dist), centroids
    = assignment-weighted means (reference 3.5).

    ``init="first_of_each_keypoint"`` starts from rows 0, M, 2M, ... (the first prototype of
    keypoints 0..C-1, as the official hook); ``"even"`` from C evenly spaced rows.
    """
    with fp32(vectors.device):
        x = vectors.detach().float()
        p = x.shape[0]
        if init == "first_of_each_keypoint":
            if num_clusters * num_per_keypoint > p:
                raise ValueError(
                    f"{num_clusters} clusters need {num_clusters} keypoints of {num_per_keypoint}"
                )
            start = torch.arange(num_clusters, device=x.device) * num_per_keypoint
        elif init == "even":
            if num_clusters > p:
                raise ValueError(f"{num_clusters} clusters for {p} vectors")
            start = torch.linspace(0, p - 1, num_clusters, device=x.device).round().long()
        else:
            raise ValueError(f"unknown init {init!r}")
        c = x[start].clone()
        for _ in range(iters):
            a = torch.softmax(-beta * _cos_dist(x, c), dim=1)  # (P, C)
            c = (a.T @ x) / a.sum(dim=0).unsqueeze(1).clamp_min(1e-12)
        d = _cos_dist(x, c)
        return KMeansResult(F.normalize(c, dim=1), torch.softmax(-beta * d, dim=1), d)


def reconstruction_error(
    vectors: torch.Tensor,
    centroids: torch.Tensor,
    assignment: torch.Tensor | None = None,
    *,
    kind: Literal["lstsq", "assignment"] = "lstsq",
) -> torch.Tensor:
    """Error of reconstructing the vectors (P, F) from the centroids (C, F), summed.

    ``"lstsq"`` (the reference): best linear combination of centroids per vector, in float64 via
    the pseudo-inverse (rank-deficient and C > F safe on every device). Once C >= F the centroids
    span R^F and this error is ~0 for every option, so with F = 64 the choice between 64/96/128 is
    decided by rounding. ``"assignment"`` (an alternative, not in the reference): the soft
    assignment's reconstruction sum_c a_pc * c_c, which keeps growing with fewer clusters.
    """
    b = vectors.detach().double()
    c = centroids.detach().double()
    if kind == "lstsq":
        a = c.T  # (F, C)
        bt = b.T  # (F, P)
        return ((bt - a @ (torch.linalg.pinv(a) @ bt)) ** 2).sum().float()
    if kind == "assignment":
        if assignment is None:
            raise ValueError("kind='assignment' needs the soft assignment")
        return ((b - assignment.double() @ c) ** 2).sum().float()
    raise ValueError(f"unknown error kind {kind!r}")


class ClusterPrototypes(Prototypes):
    """Frozen C x M x F cluster prototypes with the global keypoint each cluster stands for.

    Intended behaviour of the official CPS (it sorted along the wrong axis, so it copied the first
    C prototypes and mapped clusters only to low-index keypoints): cluster c holds the M prototypes
    nearest to its centroid, and ``keypoint[c]`` is the global keypoint (over all J) of the nearest
    one. Its GT heatmap becomes cluster c's target.
    """

    def __init__(
        self,
        num_clusters: int,
        num_per_keypoint: int = PROTOTYPES_PER_KEYPOINT,
        dim: int = EMBED_DIM,
    ) -> None:
        nn.Module.__init__(self)  # no random init: filled by from_clustering or load_state_dict
        self.register_buffer("prototypes", torch.zeros(num_clusters, num_per_keypoint, dim))
        self.register_buffer("centroids", torch.zeros(num_clusters, dim))
        self.register_buffer("keypoint", torch.zeros(num_clusters, dtype=torch.long))
        self.frozen = True

    @classmethod
    @torch.no_grad()
    def from_clustering(cls, prototypes: torch.Tensor, result: KMeansResult) -> "ClusterPrototypes":
        j, m, f = prototypes.shape
        flat = F.normalize(prototypes.detach().float().reshape(j * m, f), dim=1)
        c = result.centroids.shape[0]
        d = _cos_dist(flat, result.centroids)  # (J*M, C)
        nearest = d.argsort(dim=0)[:m].T  # (C, M): per cluster, its M closest prototypes
        out = cls(c, m, f).to(prototypes.device)
        out.prototypes.copy_(flat[nearest])
        out.centroids.copy_(result.centroids)
        out.keypoint.copy_(torch.div(nearest[:, 0], m, rounding_mode="floor"))
        return out

    @property
    def num_clusters(self) -> int:
        return self.prototypes.shape[0]


@dataclass(frozen=True)
class ClusterChoice:
    clusters: ClusterPrototypes
    num_clusters: int
    error: float
    weighted_error: float
    errors: dict[int, float]  # weighted error of every option tried


def choose_clusters(
    prototypes: Prototypes | torch.Tensor,
    options: Sequence[int] = CLUSTER_OPTIONS,
    *,
    beta: float = KMEANS_BETA,
    iters: int = KMEANS_ITERS,
    init: Literal["first_of_each_keypoint", "even"] = "first_of_each_keypoint",
    error: Literal["lstsq", "assignment"] = "lstsq",
) -> ClusterChoice:
    """Cluster the J*M prototypes for every option C (C < J) and keep the C minimising
    err * (C / J)^2 (reference 3.5). Options >= J are skipped, as in the official hook."""
    p = prototypes.prototypes if isinstance(prototypes, Prototypes) else prototypes
    with fp32(p.device):
        p = F.normalize(p.detach().float(), dim=-1)
        j, m, f = p.shape
        flat = p.reshape(j * m, f)
        best: tuple[float, int, float, KMeansResult] | None = None
        errors: dict[int, float] = {}
        for c in options:
            if c >= j:
                continue
            res = soft_kmeans(flat, c, beta=beta, iters=iters, init=init, num_per_keypoint=m)
            err = float(reconstruction_error(flat, res.centroids, res.assignment, kind=error))
            weighted = err * (c / j) ** 2
            errors[c] = weighted
            if best is None or weighted < best[0]:
                best = (weighted, c, err, res)
        if best is None:
            raise ValueError(f"no cluster option in {tuple(options)} is below J = {j}")
        weighted, c, err, res = best
        return ClusterChoice(ClusterPrototypes.from_clustering(p, res), c, err, weighted, errors)
