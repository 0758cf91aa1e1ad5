"""Heads nodes: the baseline's training with the other keypoint head."""

from __future__ import annotations

import pandas as pd

from posebh.models import DEFAULT_HEAD, HEADS
from posebh.pipelines.training.nodes import train_stage


def other_head(head: str) -> str:
    if head not in HEADS:
        raise ValueError(f"model.head: {head!r} is not a keypoint head (expected one of {', '.join(HEADS)})")
    return next(h for h in HEADS if h != head)


def train_other_head(
    instances: pd.DataFrame, heads: dict, baseline: dict, model: dict, objective: dict, data: dict, sources: dict
):
    """``heads.stage`` (default: the baseline's schedule) from scratch with the other head, also when
    ``baseline.import`` brings an official checkpoint (none exists for the other head); its stage
    is named ``baseline_<head>``."""
    head = other_head(model.get("head", DEFAULT_HEAD))
    stage = {"stage": {**(heads.get("stage") or baseline["stage"]), "name": f"baseline_{head}"}}
    return train_stage(instances, None, stage, {**model, "head": head}, objective, data, sources)
