"""The PoseBH training objective: which losses a stage computes, on which outputs.

Stages switch terms on and off through ``stage.losses`` (DESIGN.md section 5):

========== ============================================================================
heatmap    per-dataset heatmap MSE of each head on its own dataset's samples
prototypes PPC + PPD on the ground-truth pixels, with momentum updates of the prototypes
           while the stage leaves them unfrozen
phm        MSE between the prototype heatmap and the ground truth (alpha)
css        cross-type self-supervision on the other datasets' images (zeta)
cps        clustered prototype supervision (delta), clusters built at the stage start
========== ============================================================================

Targets are rendered here, batched on the training device, by each dataset's codec (UDP for the
datasets the reference trains with UDP, MSRA for the others); the loader never makes heatmaps.

SAR heads (``model.head: sar``, recognised by their :class:`~posebh.data.sar_codec.SAROutput`):
the ``heatmap`` switch then trains them with the SAR likelihood (term ``sar``) plus the
auxiliary heatmap loss (term ``sar_aux``, weight ``sar_aux_weight``) against the same Gaussian
targets the heatmap heads would get. CSS uses the auxiliary branch as the head-side prediction,
sigmoid(aux logits): it lives in [0, 1] with a Gaussian of peak 1 as its target, so CSS's
confidence threshold, peak agreement and MSE to the pseudo-label mean what they mean for a
heatmap head, and no decoded coordinates need rasterising. The pseudo-labels therefore train the
SAR heads' shared deconvolutions and aux branch, not their confidence/offset convs directly.
PHM, PPC, PPD and CPS do not involve the heads and are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import Tensor, nn

from posebh import losses as L
from posebh import losses_sar as LS
from posebh.data.codecs import HeatmapCodec
from posebh.data.sar_codec import SARCodec, SAROutput
from posebh.engine.stages import apply_trainable
from posebh.models.prototypes import all_reduce_mean_, choose_clusters, prototype_learning, sample_pixels

_SAR_FIELDS = frozenset({"sar_lambda", "sar_aux_weight"})
#: The loss switches a stage may set, and their defaults (the baseline: ViTPose++ training).
LOSS_SWITCHES: dict[str, bool] = {"heatmap": True, "prototypes": False, "phm": False, "css": False, "cps": False}


@dataclass(frozen=True)
class ObjectiveConfig:
    """Method settings shared by every stage (conf/base/parameters_model.yml: ``objective``)."""

    udp_datasets: tuple[str, ...] = ("coco", "mpii")
    sigma: float = 2.0
    weights: L.LossWeights = field(default_factory=L.LossWeights)
    #: pixels whose ground-truth heatmap value exceeds this are clustered (0.0 MDT, 0.2 transfer)
    cluster_conf_thr: float = 0.0
    #: hard (0/1) instead of confidence weights in the momentum update (transfer configs)
    hard_cluster: bool = False
    css_conf_thr: float = L.CSS_CONF_THR
    css_match_dist: float = L.CSS_MATCH_DIST
    cps_options: tuple[int, ...] = (64, 96, 128)
    cps_iters: int = 500
    seed: int = 0
    #: SAR heads only: the Laplace kernel's lambda (normalised grid units) and the aux heatmap weight
    sar_lambda: float = LS.SAR_LAMBDA
    sar_aux_weight: float = LS.SAR_AUX_WEIGHT

    def __repr__(self) -> str:
        # The repr is part of the stage fingerprint; SAR settings at their defaults are left out
        # so heatmap runs keep the fingerprints (and resume folders) they had before SAR existed.
        shown = [f.name for f in fields(self) if not (f.name in _SAR_FIELDS and getattr(self, f.name) == f.default)]
        return f"{type(self).__qualname__}({', '.join(f'{n}={getattr(self, n)!r}' for n in shown)})"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ObjectiveConfig":
        d = dict(d)
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown objective setting(s) {unknown}; known: {sorted(cls.__dataclass_fields__)}")
        if "weights" in d:
            d["weights"] = L.LossWeights(**d["weights"])
        for key in ("udp_datasets", "cps_options"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


def unwrap(model: nn.Module) -> nn.Module:
    """The PoseBH module inside a DistributedDataParallel wrapper (or the model itself)."""
    return getattr(model, "module", model)


def loss_switches(stage: Any) -> dict[str, bool]:
    given = dict(getattr(stage, "losses", None) or {})
    unknown = sorted(set(given) - set(LOSS_SWITCHES))
    if unknown:
        raise ValueError(f"stage {getattr(stage, 'name', '?')}: unknown loss switch(es) {unknown}; known: {sorted(LOSS_SWITCHES)}")
    return {k: bool(given.get(k, v)) for k, v in LOSS_SWITCHES.items()}


class PoseBHObjective:
    """Implements the trainer's ``Objective`` protocol for the baseline, the three stages and transfer."""

    def __init__(self, config: ObjectiveConfig, *, datasets: tuple[str, ...], input_wh: tuple[int, int], heatmap_wh: tuple[int, int]):
        self.config = config
        self.datasets = tuple(datasets)
        self.codecs = {
            d: HeatmapCodec(input_wh, heatmap_wh, config.sigma, kind="udp" if d in config.udp_datasets else "msra")
            for d in self.datasets
        }
        # SAR targets drop the joints the heatmap codec drops (same window rule and radius)
        self.sar_codecs = {d: SARCodec(input_wh, heatmap_wh, margin=self.codecs[d].radius) for d in self.datasets}
        # Gumbel draws of the momentum update come from this generator so that runs (and resumed
        # runs) repeat exactly; on an accelerator the global, per-rank seeded RNG is used instead.
        self.generator = torch.Generator().manual_seed(config.seed)
        self.switches = dict(LOSS_SWITCHES)
        self.clusters = None
        self._update_prototypes = False

    # --- trainer protocol ---------------------------------------------------------------------

    def start_stage(self, model: nn.Module, stage: Any, epoch: int) -> None:
        m = unwrap(model)
        self.switches = loss_switches(stage)
        self.clusters = None
        if self.switches["cps"]:
            # The prototypes are frozen whenever CPS is on, so clustering them is deterministic
            # and a resumed run rebuilds exactly the same clusters.
            total = m.prototypes.num_keypoints
            # the paper's options assume J = 214; a smaller MDT space clusters into half its keypoints
            options = [c for c in self.config.cps_options if c < total] or [max(1, total // 2)]
            choice = choose_clusters(m.prototypes, options, iters=self.config.cps_iters)
            self.clusters = choice.clusters.to(m.prototypes.prototypes.device)

    def start_epoch(self, model: nn.Module, stage: Any, epoch: int) -> None:
        m = unwrap(model)
        apply_trainable(m, stage.trainable_at(epoch))
        self._update_prototypes = self.switches["prototypes"] and stage.prototypes_at(epoch) == "update"
        m.prototypes.frozen = not self._update_prototypes

    def after_step(self, model: nn.Module) -> None:
        if self._update_prototypes:
            all_reduce_mean_(unwrap(model).prototypes)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

    # --- the loss -----------------------------------------------------------------------------

    def targets(self, batch: dict) -> dict[str, tuple[Tensor, Tensor, Tensor]]:
        """Per dataset in the batch: (sample positions, target heatmaps, target weights)."""
        out = {}
        device = batch["image"].device
        for d, t in batch["targets"].items():
            name = self.datasets[int(d)]
            hm, w = self.codecs[name].encode(t["keypoints"].to(device), t["visible"].to(device))
            out[name] = (t["index"].to(device), hm, w)
        return out

    def sar_targets(self, batch: dict) -> dict[str, tuple[Tensor, Tensor]]:
        """Per dataset in the batch: (normalised SAR target coordinates, weights)."""
        out = {}
        device = batch["image"].device
        for d, t in batch["targets"].items():
            name = self.datasets[int(d)]
            out[name] = self.sar_codecs[name].encode(t["keypoints"].to(device), t["visible"].to(device))
        return out

    def _sar_terms(self, heads: dict, batch: dict, targets: dict, batch_size: int) -> dict[str, Tensor]:
        """The SAR likelihood and the auxiliary heatmap loss of each head on its own samples."""
        coords = self.sar_targets(batch)
        nll, aux = [], []
        for name, (_, pred) in heads.items():
            t, tw = coords[name]
            nll.append(LS.sar_loss(pred.logits, pred.offsets, t, tw, lam=self.config.sar_lambda,
                                   batch_size_for_mean=batch_size))
            if pred.heatmap is not None and self.config.sar_aux_weight > 0:
                _, hm, wt = targets[name]
                aux.append(LS.aux_heatmap_loss(pred.heatmap, hm, wt, batch_size_for_mean=batch_size))
        terms = {"sar": sum(nll)}
        if aux:
            terms["sar_aux"] = self.config.sar_aux_weight * sum(aux)
        return terms

    def __call__(self, model: nn.Module, batch: dict, *, epoch: int, step: int) -> dict[str, Tensor]:
        m = unwrap(model)
        s, w = self.switches, self.config.weights
        images = batch["image"]
        dataset_idx = batch["dataset_idx"].to(images.device)
        need_emb = s["prototypes"] or s["phm"] or s["css"] or s["cps"]
        out = model(images, dataset_idx, own_heads=s["heatmap"], embedding=need_emb, cross_heads=s["css"])
        targets = self.targets(batch)
        batch_size = images.shape[0]
        terms: dict[str, Tensor] = {}

        if s["heatmap"] and _is_sar(out["heads"]):
            terms.update(self._sar_terms(out["heads"], batch, targets, batch_size))
        elif s["heatmap"]:
            terms["heatmap"] = sum(
                L.heatmap_mse(hm, targets[name][1], targets[name][2], batch_size_for_mean=batch_size)
                for name, (_, hm) in out["heads"].items()
            )
        if need_emb:
            emb = out["emb"]
            proto, phm = [], []
            for name, (idx, hm, wt) in targets.items():
                sl = m.space.slice(name)
                if s["prototypes"]:
                    px = sample_pixels(hm, wt, emb[idx], self.config.cluster_conf_thr)
                    res = prototype_learning(
                        m.prototypes, px.emb, px.label, px.conf, offset=sl.start, K=sl.stop - sl.start,
                        eps=w.kappa, momentum=w.momentum, hard=self.config.hard_cluster,
                        update=self._update_prototypes,
                        generator=self.generator if emb.device.type == "cpu" else None,
                    )
                    proto.append(L.prototype_loss(res.logits, res.target, beta=w.beta, gamma=w.gamma))
                if s["phm"]:
                    phm.append(L.phm_loss(m.prototypes.heatmap(emb[idx], sl), hm, wt, alpha=w.alpha))
            if proto:
                terms["prototypes"] = sum(proto)
            if phm:
                terms["phm"] = sum(phm)
            if s["css"]:
                css = []
                for name, (others, head_hm) in out.get("cross", {}).items():
                    if isinstance(head_hm, SAROutput):
                        head_hm = _css_heatmap(head_hm)
                    sl = m.space.slice(name)
                    proto_hm = m.prototypes.heatmap(emb[others], sl)
                    css.append(
                        L.css_loss(
                            head_hm, proto_hm, emb[others], m.prototypes, offset=sl.start,
                            alpha=w.alpha, beta=w.beta, gamma=w.gamma, zeta=w.zeta,
                            conf_thr=self.config.css_conf_thr, match_dist=self.config.css_match_dist,
                            sigma=self.config.sigma, eps=w.kappa,
                        )
                    )
                if css:
                    terms["css"] = sum(css)
            if s["cps"] and self.clusters is not None:
                terms["cps"] = self._cps(emb, targets, m)
        loss = sum(terms.values()) if terms else images.new_zeros(())
        return {"loss": loss, **{k: v.detach() for k, v in terms.items()}}

    def _cps(self, emb: Tensor, targets: dict, m: nn.Module) -> Tensor:
        """CPS over the whole batch: each sample's cluster targets come from its own dataset's GT."""
        c = self.clusters.num_clusters
        h, w_ = emb.shape[-2:]
        target = emb.new_zeros(emb.shape[0], c, h, w_)
        weight = emb.new_zeros(emb.shape[0], c)
        for name, (idx, hm, wt) in targets.items():
            t, tw = L.cluster_targets(self.clusters.keypoint, hm, wt, m.space.slice(name).start)
            target[idx], weight[idx] = t, tw
        w = self.config.weights
        return L.cps_loss(emb, self.clusters, target, weight, alpha=w.alpha, beta=w.beta, gamma=w.gamma, delta=w.delta, eps=w.kappa)


def _is_sar(heads: dict) -> bool:
    """Whether the own-sample head outputs are SAR outputs (``{name: (positions, output)}``)."""
    return any(isinstance(pred, SAROutput) for _, pred in heads.values())


def _css_heatmap(pred: SAROutput) -> Tensor:
    """The head-side CSS prediction of a SAR head: sigmoid of its auxiliary heatmap logits."""
    if pred.heatmap is None:
        raise ValueError("CSS with SAR heads needs their auxiliary heatmap branch (with_heatmap=True)")
    return torch.sigmoid(pred.heatmap.float())
