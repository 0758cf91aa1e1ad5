"""Training nodes: one generic node per stage over posebh.engine.run."""

from __future__ import annotations

import pandas as pd


def train_stage(
    instances: pd.DataFrame,
    init: dict | None,
    stage: dict,
    model: dict,
    objective: dict,
    data: dict,
    sources: dict,
) -> tuple[dict, pd.DataFrame, dict]:
    from posebh.engine.run import run_stage

    return run_stage(
        stage["stage"], model=model, objective=objective, data=data, instances=instances, sources=sources,
        init=init, checkpoint_root=data["checkpoint_root"], device=data.get("device", "auto"),
    )


def train_baseline(instances: pd.DataFrame, stage: dict, model: dict, objective: dict, data: dict, sources: dict):
    """ViTPose++ multi-dataset training from scratch (or, with ``baseline.import``, an official checkpoint)."""
    source = stage.get("import")
    if source:
        from posebh.models.checkpoints import load_official_vitpose_plus

        net, report = load_official_vitpose_plus(source, size=model.get("size"), lenient=bool(stage.get("lenient", False)))
        state = {"config": net.config.to_dict(), "state_dict": net.state_dict()}
        return state, pd.DataFrame(), {"stage": "baseline", "imported": str(source), "load_report": report.to_dict()}
    return train_stage(instances, None, stage, model, objective, data, sources)
