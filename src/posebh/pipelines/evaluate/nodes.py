"""Evaluate nodes: every protocol of the paper for the baseline and PoseBH rows."""

from __future__ import annotations

import pandas as pd


def evaluate(
    instances: pd.DataFrame,
    detections: pd.DataFrame,
    baseline: dict,
    posebh: dict,
    other_head: dict,
    interhand: dict,
    pw3d: dict,
    model: dict,
    params: dict,
    sources: dict,
) -> tuple[dict, pd.DataFrame, list, bytes]:
    """Returns the metrics of every row, all predictions, and the COCO test-dev submission.

    Rows are named by model and head (``baseline``, ``posebh``, ``baseline_sar``, ...); ``head_cost``
    holds each head's parameters and FLOPs."""
    from posebh.engine.run import image_roots, resolve_device
    from posebh.evaluation.suite import evaluate_row, finite, submission
    from posebh.models.posebh import ModelConfig
    from posebh.evaluation.rows import BASELINE, METHOD, row_name

    cfg = ModelConfig.from_dict(model)
    tables = {"instances": instances, "detections": detections}
    device = resolve_device(params.get("device", "auto"))
    rows, preds, head_cost = {}, [], {}
    testdev_row, testdev_results, testdev_zip = METHOD, [], b""
    for base, models in ((BASELINE, baseline), (METHOD, posebh), (BASELINE, other_head)):
        reference = models["coco"] if "coco" in models else next(iter(models.values()))  # one head's cost
        head_cost.setdefault(reference.head_kind, reference.head_cost())
        row = row_name(base, reference.head_kind)
        metrics, predictions = evaluate_row(
            models, tables, image_roots_for=lambda split: image_roots(sources, split),
            input_wh=cfg.input_wh, heatmap_wh=cfg.heatmap_wh, device=device,
            batch_size=int(params.get("batch_size", 32)), progress=bool(params.get("progress", True)),
        )
        rows[row] = finite(metrics)
        for key, p in predictions.items():
            preds.append(p.assign(row=row, target=key))
        if base == METHOD and "coco/test-dev" in predictions:
            testdev_row = row
            testdev_results, testdev_zip = submission(predictions["coco/test-dev"], row)
    metrics = {
        "rows": rows,
        "head_cost": head_cost,
        "transfer": {"interhand": interhand.get("metrics", {}), "3dpw": pw3d.get("metrics", {})},
        "testdev": {testdev_row: {"results_file": "data/07_model_output/testdev/person_keypoints_test-dev2017_posebh_results.json",
                                  "num_results": len(testdev_results)}},
    }
    table = pd.concat(preds, ignore_index=True) if preds else pd.DataFrame()
    return metrics, table, testdev_results, testdev_zip
