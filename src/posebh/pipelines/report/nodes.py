"""Report node: paper-style tables and figures from the evaluation metrics and training logs."""

from __future__ import annotations

import pandas as pd


def build(
    metrics: dict,
    baseline_history: pd.DataFrame,
    stage1_history: pd.DataFrame,
    stage2_history: pd.DataFrame,
    stage3_history: pd.DataFrame,
    posebh_model: dict,
    baseline_split: dict,
    posebh_split: dict,
    instances: pd.DataFrame,
    params: dict,
    sources: dict,
) -> dict:
    from posebh.reporting.qualitative import cross_skeleton_examples
    from posebh.reporting.report import build_report

    histories = {"baseline": baseline_history, "stage1": stage1_history, "stage2": stage2_history, "stage3": stage3_history}
    prototypes = {
        "array": posebh_model["state_dict"]["prototypes.prototypes"].float().numpy(),
        "datasets": list(posebh_model["config"]["datasets"]),
    }
    qualitative = cross_skeleton_examples(
        {"baseline": baseline_split, "posebh": posebh_split}, instances, sources,
        images=params["qualitative"]["images"], skeletons=params["qualitative"]["skeletons"],
    )
    written = build_report(metrics, histories, prototypes, qualitative, params["out_dir"], dvc_prefix=params["out_dir"])
    return {"files": sorted(str(p) for p in written["files"].values()), "dvc_plots": written["dvc_plots"]}
