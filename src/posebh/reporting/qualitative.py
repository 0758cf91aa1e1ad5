"""The same image predicted with several skeletons by several models (the paper's Figures 1-4)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd


def cross_skeleton_examples(
    rows: Mapping[str, Mapping[str, Any]],
    instances: pd.DataFrame,
    sources: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    images: Sequence[Sequence[str]],
    skeletons: Sequence[str],
) -> list[dict]:
    """For the first image of each (dataset, split): every row's per-dataset models predict every
    skeleton in the image's largest annotated box. Skeletons a row has no model for are skipped."""
    import cv2

    from posebh.data.paths import resolve
    from posebh.data.schema import bbox_array
    from posebh.engine.run import image_roots
    from posebh.evaluation.inference import predict_image

    items = []
    for dataset, split in images:
        rows_ds = instances[(instances["dataset"] == dataset) & (instances["split"] == split)]
        if len(rows_ds) == 0:
            continue
        first = rows_ds[rows_ds["image_id"] == rows_ds["image_id"].iloc[0]]
        boxes = bbox_array(first)
        box = boxes[np.argmax(boxes[:, 2] * boxes[:, 3])][None]
        root = image_roots(sources, split).get(dataset)
        if root is None:
            continue
        bgr = cv2.imread(str(resolve(root, str(first["file_name"].iloc[0]))))
        if bgr is None:
            continue
        image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        predictions: dict[str, dict[str, np.ndarray]] = {}
        for row, models in rows.items():
            predictions[row] = {}
            for skel in skeletons:
                model = models.get(skel)
                if model is None:
                    continue
                kp, _ = predict_image(model.eval(), image, box, skeleton=skel, input_wh=model.input_wh, heatmap_wh=model.heatmap_wh)
                predictions[row][skel] = kp
        items.append({"image": image, "title": f"{dataset} {split}", "predictions": predictions})
    return items
