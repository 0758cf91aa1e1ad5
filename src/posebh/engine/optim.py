"""Optimizer with ViT layer-wise lr decay, and the warm-up + step lr schedule (reference 5.1).

Every parameter is put in a group, frozen ones included: torch optimizers skip parameters whose
``grad`` is None, so a stage that thaws the backbone half-way needs no optimizer rebuild and the
optimizer state stays loadable from a checkpoint at any epoch.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .stages import StageSpec

_BLOCK = re.compile(r"blocks\.(\d+)\.")


def _vit():
    """The layer-id rules live with the backbone; imported lazily because the backbone imports timm."""
    from posebh.models import vit_moe

    return vit_moe


def infer_num_layers(model: nn.Module, backbone_prefix: str | None = None) -> int:
    """Number of transformer blocks under ``backbone_prefix`` (``<prefix>blocks.<i>.``); 0 if none."""
    if backbone_prefix is None:
        backbone_prefix = _vit().BACKBONE_PREFIX
    ids = [
        int(m.group(1))
        for name, _ in model.named_parameters()
        if name.startswith(backbone_prefix) and (m := _BLOCK.match(name[len(backbone_prefix):]))
    ]
    return max(ids) + 1 if ids else 0


def param_groups(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    layer_decay: float | None = None,
    num_layers: int | None = None,
    backbone_prefix: str | None = None,
) -> list[dict[str, Any]]:
    """Groups by (layer id, decay / no decay), each with ``lr = lr * lr_scale`` and ``base_lr``.

    Layer ids follow the reference's constructor: patch_embed/pos_embed 0, block i -> i + 1, the
    rest (last norm, heads, embedding module) num_layers + 1 with scale 1; scale =
    layer_decay ** (num_layers + 1 - layer_id). Only names under ``backbone_prefix`` get a layer id
    below num_layers + 1, so a head with its own ``blocks`` is never decayed by accident.
    ``backbone_prefix`` defaults to ``vit_moe.BACKBONE_PREFIX`` ("backbone.").
    """
    vit = _vit()
    if backbone_prefix is None:
        backbone_prefix = vit.BACKBONE_PREFIX
    if num_layers is None:
        num_layers = infer_num_layers(model, backbone_prefix)
    if layer_decay is not None and num_layers == 0:
        raise ValueError(f"layer_decay={layer_decay} needs backbone blocks, but no parameter matches '{backbone_prefix}blocks.<i>.'")
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        lid = vit.layer_id(name, num_layers, prefix=backbone_prefix) if name.startswith(backbone_prefix) else num_layers + 1
        scale = 1.0 if layer_decay is None else float(layer_decay) ** (num_layers + 1 - lid)
        decay = not vit.no_weight_decay(name, param)
        g = groups.setdefault((lid, decay), {
            "name": f"layer{lid:02d}.{'decay' if decay else 'no_decay'}",
            "params": [],
            "param_names": [],
            "layer_id": lid,
            "lr_scale": scale,
            "base_lr": lr * scale,
            "lr": lr * scale,
            "weight_decay": weight_decay if decay else 0.0,
        })
        g["params"].append(param)
        g["param_names"].append(name)
    return [groups[k] for k in sorted(groups, key=lambda k: (k[0], not k[1]))]


def build_optimizer(
    model: nn.Module,
    spec: StageSpec,
    *,
    num_layers: int | None = None,
    backbone_prefix: str | None = None,
) -> torch.optim.Optimizer:
    """AdamW or Adam over :func:`param_groups` of the whole model, from the stage's optimizer spec."""
    o = spec.optimizer
    groups = param_groups(model, lr=o.lr, weight_decay=o.weight_decay, layer_decay=spec.layer_decay,
                          num_layers=num_layers, backbone_prefix=backbone_prefix)
    if not groups:
        raise ValueError("the model has no parameters to optimize")
    cls = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}[o.type]
    return cls(groups, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)


def lr_factor(iteration: int, epoch: int, *, warmup_iters: int = 0, warmup_ratio: float = 0.001,
              steps: Sequence[int] = (), gamma: float = 0.1) -> float:
    """Multiplier of every group's base lr at a 0-based ``iteration`` within ``epoch`` (both stage-relative).

    Step decay: gamma ** (number of steps <= epoch). Linear warm-up (mmcv's form) scales that by
    1 - (1 - iteration / warmup_iters) * (1 - warmup_ratio) while iteration < warmup_iters.
    """
    regular = gamma ** sum(1 for s in steps if epoch >= s)
    if iteration < warmup_iters:
        return regular * (1.0 - (1.0 - iteration / warmup_iters) * (1.0 - warmup_ratio))
    return regular


class LRSchedule:
    """Applies :func:`lr_factor` to every group: ``lr = base_lr * factor`` (base_lr = lr x layer scale)."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, warmup_iters: int = 0, warmup_ratio: float = 0.001,
                 steps: Sequence[int] = (), gamma: float = 0.1):
        self.optimizer = optimizer
        self.warmup_iters = int(warmup_iters)
        self.warmup_ratio = float(warmup_ratio)
        self.steps = tuple(int(s) for s in steps)
        self.gamma = float(gamma)
        for g in optimizer.param_groups:
            g.setdefault("base_lr", g["lr"])
        self.iteration = 0
        self.epoch = 0
        self.factor = self.lr_factor(0, 0)

    @classmethod
    def from_spec(cls, optimizer: torch.optim.Optimizer, spec: StageSpec) -> LRSchedule:
        return cls(optimizer, warmup_iters=spec.warmup_iters, warmup_ratio=spec.warmup_ratio,
                   steps=spec.lr_steps, gamma=spec.lr_gamma)

    def lr_factor(self, iteration: int, epoch: int) -> float:
        """Pure: the factor at (iteration, epoch); changes nothing."""
        return lr_factor(iteration, epoch, warmup_iters=self.warmup_iters, warmup_ratio=self.warmup_ratio,
                         steps=self.steps, gamma=self.gamma)

    def apply(self, iteration: int, epoch: int) -> float:
        """Set every group's lr for the step about to run; returns the factor."""
        self.iteration, self.epoch = int(iteration), int(epoch)
        self.factor = self.lr_factor(self.iteration, self.epoch)
        for g in self.optimizer.param_groups:
            g["lr"] = g["base_lr"] * self.factor
        return self.factor

    def base_lr(self) -> float:
        """The lr of scale-1 groups (heads) before the factor: the stage's configured lr."""
        return max(g["base_lr"] / g.get("lr_scale", 1.0) for g in self.optimizer.param_groups)

    def state_dict(self) -> dict[str, Any]:
        return {"iteration": self.iteration, "epoch": self.epoch, "factor": self.factor,
                "warmup_iters": self.warmup_iters, "warmup_ratio": self.warmup_ratio,
                "steps": list(self.steps), "gamma": self.gamma}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.warmup_iters = int(state.get("warmup_iters", self.warmup_iters))
        self.warmup_ratio = float(state.get("warmup_ratio", self.warmup_ratio))
        self.steps = tuple(int(s) for s in state.get("steps", self.steps))
        self.gamma = float(state.get("gamma", self.gamma))
        self.apply(state["iteration"], state["epoch"])
