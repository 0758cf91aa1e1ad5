"""Every evaluation protocol for a set of models: what the ``evaluate`` pipeline runs.

A "row" is one trained model (the ViTPose++ baseline, PoseBH, a transfer variant) given as its
per-dataset split models. Datasets evaluated with another dataset's model: OCHuman with the COCO
model (same skeleton), CrowdPose with the AIC model (its 14 joints are AIC's in another order,
with AIC's head top as CrowdPose's head).
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from posebh import skeletons

log = logging.getLogger(__name__)

#: dataset -> (the dataset whose model predicts it, keypoint names that differ: target -> source)
PROXY_MODELS: dict[str, tuple[str, dict[str, str]]] = {
    "ochuman": ("coco", {}),
    "crowdpose": ("aic", {"head": "head_top"}),
}


def proxy_index(target: str, source: str, renames: Mapping[str, str]) -> list[int]:
    """Channel order that turns ``source``'s heatmaps into ``target``'s keypoint order."""
    src = skeletons.get(source)
    return [src.index(renames.get(name, name)) for name in skeletons.get(target).keypoints]


def heatmap_fns(models: Mapping[str, Any], device: str = "cpu") -> Callable[[str], Callable]:
    """``heatmap_fn_for(dataset)`` over per-dataset models, with the proxy datasets mapped."""
    import torch

    for m in models.values():
        m.to(device).eval()

    def fn_for(dataset: str):
        name = skeletons.get(dataset).name
        if name in models:
            return models[name]
        if name in PROXY_MODELS and PROXY_MODELS[name][0] in models:
            source, renames = PROXY_MODELS[name]
            model, order = models[source], torch.tensor(proxy_index(name, source, renames))
            return lambda images: model(images)[:, order.to(images.device)]
        raise KeyError(f"no model for {name!r} (models: {sorted(models)})")

    return fn_for


def targets_for(models: Mapping[str, Any], tables: Mapping[str, pd.DataFrame]) -> list[tuple[str, str, str]]:
    """(dataset, split, box source) of every protocol that these models can answer."""
    from posebh.evaluation.inference import evaluation_targets

    can = set(models) | {d for d, (src, _) in PROXY_MODELS.items() if src in models}
    return [t for t in evaluation_targets(tables) if t[0] in can]


def evaluate_row(
    models: Mapping[str, Any],
    tables: Mapping[str, pd.DataFrame],
    *,
    image_roots_for: Callable[[str], Mapping[str, str]],
    input_wh: tuple[int, int],
    heatmap_wh: tuple[int, int],
    device: str = "cpu",
    batch_size: int = 32,
    progress: bool = True,
) -> tuple[dict[str, dict[str, float]], dict[str, pd.DataFrame]]:
    """Metrics and predictions of one row over every protocol its models answer.

    Keys are ``dataset`` or ``dataset/split`` (when a dataset is evaluated on several splits, and
    ``coco/test-dev`` whose predictions have no local ground truth).
    """
    from posebh.evaluation.inference import evaluate_model, target_keys

    targets = targets_for(models, tables)
    fn_for = heatmap_fns(models, device)
    metrics: dict[str, dict[str, float]] = {}
    predictions: dict[str, pd.DataFrame] = {}
    for key, target in zip(target_keys(targets), targets):
        m, p = evaluate_model(
            fn_for, tables, image_roots=image_roots_for(target[1]), input_wh=input_wh, heatmap_wh=heatmap_wh,
            datasets=[target], device=device, batch_size=batch_size, progress=progress,
        )
        metrics.update({key: v for v in m.values()})
        predictions.update({key: v for v in p.values()})
    return metrics, predictions


def submission(predictions: pd.DataFrame, name: str) -> tuple[list[dict], bytes]:
    """COCO test-dev results (rescored and OKS-NMS-ed as the server expects) and the upload zip."""
    from posebh.evaluation.coco_eval import SUBMISSION_NAME, to_coco_results
    from posebh.evaluation.postprocess import apply_topdown_postprocess

    kept = apply_topdown_postprocess(predictions, dataset="coco")
    results = to_coco_results(kept, "coco")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        info = zipfile.ZipInfo(SUBMISSION_NAME.replace("posebh", name), date_time=(1980, 1, 1, 0, 0, 0))
        z.writestr(info, json.dumps(results))
    return results, buf.getvalue()


def finite(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """NaN (undefined, e.g. no GT in an area range) becomes None so the JSON stays standard."""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, Mapping):
            out[k] = finite(v)
        elif isinstance(v, float) and v != v:
            out[k] = None
        else:
            out[k] = v
    return out


__all__ = ["PROXY_MODELS", "evaluate_row", "finite", "heatmap_fns", "proxy_index", "submission", "targets_for"]

