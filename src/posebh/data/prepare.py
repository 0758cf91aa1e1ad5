"""The prepare step's library functions: APT-36K split, detection boxes, per-split manifests.

All functions take and return tables of :mod:`posebh.data.schema`; none drops a row without
counting it where the caller can see it (the returned counts, ``df.attrs`` or the manifest).
"""

from __future__ import annotations

import json
import math
import zlib
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from posebh import skeletons
from posebh.data.schema import COLUMNS, IMAGE_COLUMNS, bbox_array, detection_issues, make_table

SPLITS: tuple[str, ...] = ("train", "val", "test")


# ----------------------------------------------------------------------------------------------
# APT-36K: video-disjoint 7:1:2 split per category over distinct videos
# ----------------------------------------------------------------------------------------------


def apportion(n: int, ratios: Sequence[float]) -> list[int]:
    """Split ``n`` items by ``ratios`` so that every split that can get an item gets one.

    Largest remainders (Hamilton) keeps every count within one item of its exact share
    ``n * ratio``; ties in the remainder go to the earlier split. Then, when ``n`` is at least
    the number of positive ratios, a split left empty takes one item from the largest split
    (earliest on ties); when ``n`` is smaller, the ``n`` largest ratios (earliest on ties) get
    one item each.
    """
    r = np.asarray(ratios, dtype=np.float64)
    positive = [i for i in range(len(r)) if r[i] > 0]
    if n < len(positive):
        counts = [0] * len(r)
        for i in sorted(positive, key=lambda i: (-r[i], i))[:n]:
            counts[i] = 1
        return counts
    quotas = np.round(n * r, 9)  # 0.7 * 30 = 20.999999999999996 must count as 21
    counts = np.floor(quotas).astype(np.int64)
    frac = np.round(quotas - counts, 9)
    order = sorted(range(len(r)), key=lambda i: (-frac[i], i))
    for i in order[: n - int(counts.sum())]:
        counts[i] += 1
    for i in positive:
        if counts[i] == 0:
            donor = int(np.argmax(counts))
            counts[donor] -= 1
            counts[i] += 1
    return counts.tolist()


def split_apt36k(
    table: pd.DataFrame,
    *,
    ratios: Sequence[float] = (0.7, 0.1, 0.2),
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Assign every row of an APT-36K table to train / val / test, disjoint by video.

    PoseBH's script slices a per-image list of video ids, so split sizes follow image counts
    and a video on a cut goes wholly to the earlier split. Here the unit is the distinct video:

    1. Each video belongs to one category: the one most of its rows carry (ties: the first
       name in sorted order). The release has one category per video.
    2. Per category: sort its distinct video ids, permute them with
       ``numpy.random.default_rng([seed, crc32(category)])`` (so a category's split does not
       depend on which other categories are present), and give the first ``n_train`` to
       train, the next ``n_val`` to val, the rest to test, with the counts from
       :func:`apportion` (largest remainders: each within one video of ``n * ratio``; a
       category with at least three videos gets at least one per split, which for 7:1:2
       moves a video only below ten videos; one video goes to train, two to train and test).
    3. Every row takes its video's split; rows are never added or removed.

    ``ratios`` are (train, val, test) and must sum to 1. Rows without a ``video_id`` cannot be
    placed disjointly; validation quarantines them first, and here they raise ``ValueError``.

    Returns the table (a copy, ``split`` set) and the counts: one row per (split, category)
    with ``videos``, ``images`` and ``instances``, then per split a row with category ``"all"``.
    """
    if len(ratios) != len(SPLITS) or any(r < 0 for r in ratios) or not math.isclose(sum(ratios), 1.0, abs_tol=1e-6):
        raise ValueError(f"ratios must be three non-negative numbers (train, val, test) summing to 1, got {list(ratios)}")
    missing = int(table["video_id"].isna().sum())
    if missing:
        raise ValueError(f"{missing} APT-36K rows have no video_id; validate (and quarantine) them before splitting")
    out = table.copy()
    if len(out) == 0:
        out["split"] = pd.array([], dtype="string")
        return out, _split_counts(out)

    video = out["video_id"].astype("int64").to_numpy()
    category = out["category"].astype("string").fillna("<NA>").to_numpy(dtype=object)
    per_video = pd.DataFrame({"video": video, "category": category}).value_counts().reset_index(name="rows")
    per_video = per_video.sort_values(["video", "rows", "category"], ascending=[True, False, True], kind="stable")
    video_category = per_video.drop_duplicates("video").set_index("video")["category"]

    assignment: dict[int, str] = {}
    for cat, vids in video_category.groupby(video_category, sort=True):
        ids = np.sort(vids.index.to_numpy())
        rng = np.random.default_rng([seed, zlib.crc32(str(cat).encode("utf-8"))])
        ids = rng.permutation(ids)
        start = 0
        for name, count in zip(SPLITS, apportion(len(ids), ratios)):
            for v in ids[start : start + count].tolist():
                assignment[v] = name
            start += count
    out["split"] = pd.array(pd.Series(video).map(assignment).to_numpy(dtype=object), dtype="string")
    return out, _split_counts(out)


def _split_counts(table: pd.DataFrame) -> pd.DataFrame:
    cols = ["split", "category", "videos", "images", "instances"]
    if len(table) == 0:
        return pd.DataFrame({c: pd.array([], dtype="string" if c in ("split", "category") else "int64") for c in cols})
    frame = pd.DataFrame(
        {
            "split": table["split"].astype(str).to_numpy(),
            "category": table["category"].astype("string").fillna("<NA>").to_numpy(dtype=object),
            "video_id": table["video_id"].astype("int64").to_numpy(),
            "image_id": table["image_id"].to_numpy(),
        }
    )
    categories = sorted(frame["category"].unique())
    rows = []
    for split in SPLITS + tuple(sorted(set(frame["split"]) - set(SPLITS))):
        part = frame[frame["split"] == split]
        by_cat = part.groupby("category").agg(
            videos=("video_id", "nunique"), images=("image_id", "nunique"), instances=("image_id", "size")
        )
        for cat in categories:
            got = by_cat.loc[cat] if cat in by_cat.index else None
            rows.append([split, cat] + ([int(got[c]) for c in ("videos", "images", "instances")] if got is not None else [0, 0, 0]))
        rows.append([split, "all", part["video_id"].nunique(), part["image_id"].nunique(), len(part)])
    counts = pd.DataFrame(rows, columns=cols)
    return counts.astype({"split": "string", "category": "string", "videos": "int64", "images": "int64", "instances": "int64"})


# ----------------------------------------------------------------------------------------------
# Images and detection boxes (top-down testing on COCO val and test-dev)
# ----------------------------------------------------------------------------------------------

_IMAGE_KEY = ["dataset", "split", "image_id"]


def images_table(table: pd.DataFrame) -> pd.DataFrame:
    """The distinct images of an instance table, as the images table of :mod:`posebh.data.schema`.

    An image is (dataset, split, image_id); its file name and size come from its first row.
    Rows of one image that disagree on them are counted in ``attrs["conflicting_images"]``.
    """
    cols = ["dataset", "split", "image_id", "file_name", "width", "height"]
    distinct = table[cols].drop_duplicates()
    first = distinct.drop_duplicates(_IMAGE_KEY).reset_index(drop=True)
    n = len(first)
    out = make_table(
        {**{c: first[c].to_numpy() for c in cols}, "extra": ["{}"] * n, "issue": pd.array([pd.NA] * n, dtype="string")},
        n,
        IMAGE_COLUMNS,
    )
    out.attrs["conflicting_images"] = int(len(distinct) - n)
    return out


def attach_detections(
    images: pd.DataFrame,
    detections: pd.DataFrame,
    *,
    dataset: str,
    split: str,
    min_score: float = 0.0,
) -> pd.DataFrame:
    """One instance row per usable detection box on the (dataset, split) images, for top-down testing.

    Rows carry the detection box, ``area`` = box w*h, no keypoints (3K zeros, K of the dataset's
    skeleton), ``instance_id`` = the detection's row number in ``detections`` (stable when
    ``min_score`` changes), ``extra = {"det_score": score}``; they are ordered by image, then by
    descending score.

    Every other box is counted in ``attrs`` under the first reason that applies, in this order,
    never dropped unseen: ``other_dataset_or_split`` (when ``detections`` carries those columns);
    ``malformed`` (an ``issue`` from the reader, or a box or score that
    :func:`~posebh.data.schema.detection_issues` rejects, for tables written without ``issue``);
    ``below_min_score``; ``on_unknown_images`` (not in ``images``; the first ids are listed);
    ``on_flagged_images`` (an image row of that id has an ``issue`` or a size below 1 pixel, so a
    missing or corrupt image cannot feed evaluation). ``detections_in`` is their sum plus
    ``attached``. ``quarantine_reasons`` counts the reasons of the malformed and flagged-image
    boxes, ``quarantine_examples`` shows the first few; ``images_without_detections`` counts
    unflagged images only. ``attrs`` stays JSON-able.
    """
    sk = skeletons.get(dataset)
    dataset = sk.name
    sel = images[(images["dataset"] == dataset) & (images["split"] == split)]
    image_issue = _image_issues(sel)
    sel = sel.drop_duplicates("image_id").set_index("image_id")

    det = detections.reset_index(drop=True)
    n_in = len(det)
    score = det["score"].to_numpy(dtype=np.float64)
    image_id = det["image_id"].to_numpy(dtype=np.int64)
    mine = np.ones(n_in, dtype=bool)
    for col, want in (("dataset", dataset), ("split", split)):
        if col in det.columns:
            mine &= (det[col] == want).to_numpy(dtype=bool, na_value=False)
    issue = _detection_issues(det)
    malformed = mine & pd.notna(issue)
    usable = mine & ~malformed
    above = usable & (score >= min_score)
    known = np.isin(image_id, sel.index.to_numpy(dtype=np.int64))
    flagged = np.isin(image_id, np.fromiter(image_issue, np.int64, len(image_issue)))
    on_flagged = above & known & flagged
    keep = np.flatnonzero(above & known & ~flagged)
    keep = keep[np.lexsort((-score[keep], image_id[keep]))]
    unknown_ids = np.unique(image_id[above & ~known])

    reasons = np.full(n_in, None, dtype=object)
    reasons[malformed] = ["detection issue: " + str(i) for i in issue[malformed]]
    reasons[on_flagged] = ["image issue: " + image_issue[i] for i in image_id[on_flagged].tolist()]
    quarantined = np.flatnonzero(malformed | on_flagged)

    m = len(keep)
    boxes = bbox_array(det.iloc[keep]) if m else np.zeros((0, 4))
    img = sel.loc[image_id[keep]] if m else sel.iloc[:0]
    k = sk.num_keypoints
    cat = det["category_id"].to_numpy(dtype=np.int64)[keep]
    out = make_table(
        {
            "dataset": dataset,
            "split": split,
            "image_id": image_id[keep],
            "file_name": img["file_name"].to_numpy(dtype=object),
            "width": img["width"].to_numpy(dtype=np.int64),
            "height": img["height"].to_numpy(dtype=np.int64),
            "instance_id": keep.astype(np.int64),
            "bbox": boxes,
            "area": boxes[:, 2] * boxes[:, 3],
            "iscrowd": 0,
            "keypoints": np.zeros((m, 3 * k), np.float32),
            "num_keypoints": 0,
            "category_id": cat,
            "category": sk.category,
            "extra": [json.dumps({"det_score": float(s)}) for s in score[keep]],
        },
        m,
        COLUMNS,
    )
    clean_images = sel.index.difference(pd.Index(list(image_issue), dtype=np.int64))
    out.attrs.update(
        {
            "detections_in": n_in,
            "attached": m,
            "other_dataset_or_split": int((~mine).sum()),
            "malformed": int(malformed.sum()),
            "below_min_score": int((usable & ~above).sum()),
            "on_unknown_images": int((above & ~known).sum()),
            "on_flagged_images": int(on_flagged.sum()),
            "unknown_image_ids": unknown_ids[:20].tolist(),
            "quarantine_reasons": _top_reasons(reasons[quarantined].tolist()),
            "quarantine_examples": [_example(det, i, reasons[i]) for i in quarantined[:20].tolist()],
            "images": len(sel),
            "flagged_images": len(image_issue),
            "images_without_detections": int(len(clean_images) - len(np.unique(image_id[keep]))),
            "min_score": float(min_score),
        }
    )
    accounted = sum(out.attrs[c] for c in ("attached", "other_dataset_or_split", "malformed", "below_min_score",
                                           "on_unknown_images", "on_flagged_images"))  # fmt: skip
    if accounted != n_in:
        raise AssertionError(f"attach_detections accounted for {accounted} of {n_in} boxes")  # never expected
    return out


def _detection_issues(det: pd.DataFrame) -> np.ndarray:
    """The reader's ``issue`` of each box, else the schema's rule applied again (None: usable)."""
    own = det["issue"].to_numpy(dtype=object, na_value=None) if "issue" in det.columns else np.full(len(det), None)
    unchecked = np.flatnonzero(pd.isna(own))
    if len(unchecked):
        boxes = det["bbox"].to_numpy(dtype=object)[unchecked]
        four = np.fromiter((np.size(b) == 4 for b in boxes), bool, len(boxes))
        arr = np.full((len(boxes), 4), np.nan)
        if four.any():
            arr[four] = np.stack([np.asarray(b, np.float64).ravel() for b in boxes[four]])
        own[unchecked] = detection_issues(arr, det["score"].to_numpy(np.float64)[unchecked])
    return own


def _image_issues(images: pd.DataFrame) -> dict[int, str]:
    """Image id -> why its image cannot be used; an id with several rows is flagged by any of them."""
    issue = images["issue"] if "issue" in images.columns else pd.Series(pd.NA, index=images.index, dtype="string")
    width = images["width"].to_numpy(dtype=np.int64)
    height = images["height"].to_numpy(dtype=np.int64)
    has_issue = issue.notna().to_numpy(dtype=bool)
    out: dict[int, str] = {}
    for r in np.flatnonzero(has_issue | (width < 1) | (height < 1)).tolist():
        text = str(issue.iat[r]) if has_issue[r] else f"image width/height {width[r]}x{height[r]} not positive"
        out.setdefault(int(images["image_id"].iat[r]), text)
    return out


def _top_reasons(reasons: Sequence[str], top: int = 20) -> dict[str, int]:
    """Reason -> boxes, most frequent first (ties by name, so reports are reproducible)."""
    ranked = sorted(Counter(reasons).items(), key=lambda kv: (-kv[1], kv[0]))
    out = dict(ranked[:top])
    if len(ranked) > top:
        out[f"{len(ranked) - top} other reasons"] = sum(c for _, c in ranked[top:])
    return out


def _example(det: pd.DataFrame, i: int, reason: str) -> str:
    b = np.asarray(det["bbox"].iat[i], np.float64).ravel()
    box = "[" + ", ".join(f"{v:g}" for v in b) + "]"
    return f"row {i} (image {det['image_id'].iat[i]}, bbox {box}, score {float(det['score'].iat[i]):g}): {reason}"


# ----------------------------------------------------------------------------------------------
# Manifests
# ----------------------------------------------------------------------------------------------


def manifest(table: pd.DataFrame, *, quantiles: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0)) -> dict[str, Any]:
    """Per dataset and split: images, instances, keypoint counts, crowd count, box size quantiles.

    ``labelled_keypoints`` counts v > 0, ``visible_keypoints`` v == 2;
    ``mean_keypoints_per_instance`` is labelled keypoints / instances; ``box_size_quantiles``
    are quantiles of sqrt(w*h) of the boxes in pixels, keyed ``q0``, ``q25``, ... JSON-able.
    """
    out: dict[str, Any] = {"datasets": {}, "total": {"images": 0, "instances": int(len(table))}}
    for ds, part in table.groupby(table["dataset"].astype(str), sort=True):
        labelled, visible = _keypoint_counts(part)
        boxes = bbox_array(part)
        with np.errstate(invalid="ignore"):
            size = np.sqrt(np.clip(boxes[:, 2], 0, None) * np.clip(boxes[:, 3], 0, None))
        rows = pd.DataFrame(
            {
                "split": part["split"].astype(str).to_numpy(),
                "image_id": part["image_id"].to_numpy(),
                "labelled": labelled,
                "visible": visible,
                "iscrowd": part["iscrowd"].to_numpy(),
                "video_id": part["video_id"].to_numpy(),
                "size": size,
            }
        )
        entry: dict[str, Any] = {}
        for split, g in rows.groupby("split", sort=True):
            finite = g["size"].to_numpy()[np.isfinite(g["size"].to_numpy())]
            images = int(g["image_id"].nunique())
            out["total"]["images"] += images
            entry[split] = {
                "images": images,
                "instances": int(len(g)),
                "labelled_keypoints": int(g["labelled"].sum()),
                "visible_keypoints": int(g["visible"].sum()),
                "mean_keypoints_per_instance": round(float(g["labelled"].mean()), 4),
                "instances_without_keypoints": int((g["labelled"] == 0).sum()),
                "crowd": int(g["iscrowd"].sum()),
                "videos": int(g["video_id"].nunique()),
                "box_size_quantiles": {
                    f"q{round(q * 100):d}": round(float(np.quantile(finite, q)), 3) if len(finite) else None for q in quantiles
                },
            }
        out["datasets"][ds] = entry
    return out


def _keypoint_counts(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per row: labelled (v > 0) and visible (v == 2) keypoints; rows of any length mix."""
    kp = rows["keypoints"].to_numpy(dtype=object)
    lengths = np.fromiter((len(k) for k in kp), np.int64, len(kp))
    labelled = np.zeros(len(rows), np.int64)
    visible = np.zeros(len(rows), np.int64)
    for length in np.unique(lengths):
        if length > 0 and length % 3 == 0:
            pos = np.flatnonzero(lengths == length)
            v = np.stack(kp[pos]).reshape(len(pos), -1, 3)[..., 2]
            labelled[pos] = (v > 0).sum(axis=1)
            visible[pos] = (v == 2).sum(axis=1)
    return labelled, visible


__all__ = ["SPLITS", "apportion", "attach_detections", "images_table", "manifest", "split_apt36k"]
