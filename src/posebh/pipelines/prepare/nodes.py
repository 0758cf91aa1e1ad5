"""Prepare nodes: splits, reprojection and detection boxes on top of the validated tables."""

from __future__ import annotations

import pandas as pd


def split_apt36k(instances: pd.DataFrame, params: dict) -> tuple[pd.DataFrame, dict]:
    from posebh.data.prepare import split_apt36k as run_split

    table, counts = run_split(instances, ratios=tuple(params["ratios"]), seed=params["seed"])
    return table, {"counts": counts.to_dict(orient="records"), "ratios": list(params["ratios"]), "seed": params["seed"]}


def reproject_3dpw(instances: pd.DataFrame, params: dict) -> pd.DataFrame:
    from posebh.data.pw3d import reproject_3dpw as run_reprojection

    return run_reprojection(instances, **params)


def detection_instances(
    instances: pd.DataFrame, images: pd.DataFrame, detections: pd.DataFrame, params: dict
) -> tuple[pd.DataFrame, dict]:
    """Person boxes from a detector on the evaluation images (COCO val and test-dev).

    Returns the box instances and, per split, the counts of boxes attached and not attached
    (below the score threshold, on unknown images), so no box disappears unreported.
    """
    from posebh.data.prepare import attach_detections, images_table
    from posebh.data.schema import concat

    tables, report = [], {}
    for split in params["splits"]:
        imgs = pd.concat([images_table(instances[instances["split"] == split]), images[images["split"] == split]])
        imgs = imgs.drop_duplicates(subset=["dataset", "split", "image_id"]).reset_index(drop=True)
        dets = detections[detections["split"] == split]
        table = attach_detections(imgs, dets, dataset=params["dataset"], split=split, min_score=params["min_score"])
        report[split] = dict(table.attrs)
        tables.append(table)
    return concat(tables), report


def assemble(*tables: pd.DataFrame) -> pd.DataFrame:
    """All datasets' clean instances in one table: the input of training and evaluation."""
    from posebh.data.schema import concat

    return concat(tables)


def manifests(instances: pd.DataFrame, detections: pd.DataFrame, detection_report: dict, split_counts: dict) -> dict:
    from posebh.data.prepare import manifest

    return {
        "annotations": manifest(instances),
        "detections": manifest(detections),
        "detection_boxes": detection_report,
        "apt36k_split": split_counts,
    }
