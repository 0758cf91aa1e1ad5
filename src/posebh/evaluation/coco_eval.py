"""OKS AP/AR through pycocotools for any skeleton, and the COCO results / submission files.

Every OKS number in the project goes through ``pycocotools.cocoeval.COCOeval`` with the
dataset's sigmas from :mod:`posebh.skeletons`; this module only builds its inputs. The
variants mmpose gets from xtcocotools are reproduced on top of pycocotools:

* ``use_area=False`` (AIC, CrowdPose, 3DPW): xtcocotools then uses 0.53*w*h of the GT box both
  as the OKS scale and for the medium/large area filter. pycocotools reads both from the GT
  ``area``, so the GT is given that value before evaluation; the result is identical.
* COCO-WholeBody: one pass per part over that part's keypoints and sigmas
  (:func:`wholebody_ap`), as xtcocotools' ``keypoints_<part>`` types do.
* CrowdPose: :func:`crowdpose_ap` (stats of the official tool plus easy/medium/hard subsets).
* OCHuman occluded joints: :func:`occluded_keypoint_ap` (a reconstruction, see there).

GT conversion. The unified table becomes an in-memory COCO document: one image per image id
(plus the images that only predictions mention: an image of the split without any person, such
as most of COCO val's person-free images, must still count its detections as false positives),
annotation ids renumbered 1..N (pycocotools treats a matched id of 0 as "unmatched"),
``num_keypoints`` as stored (pycocotools ignores a GT with 0, and with ``iscrowd``), and the OKS
area per the skeleton's ``area_rule``. Category ids are the table's (AP-10K and APT-36K have
one per species, and COCOeval averages AP over species, as mmpose's evaluation does).

Results. Predictions are written without ``bbox``: pycocotools' ``loadRes`` would otherwise
treat them as box results and take the detection area from the box instead of the keypoint
extent. Predictions whose keypoint scores are all <= 0 are dropped by default, as xtcocotools
(mmpose's evaluator) does and pycocotools does not.

pycocotools writes -1 for a statistic without any GT (e.g. APm when no GT is medium); this
module returns NaN there so that no report averages it in.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from posebh import skeletons
from posebh.data.schema import bbox_array, extra_dicts, keypoints_array

log = logging.getLogger(__name__)

#: COCOeval.stats order for iouType="keypoints".
STAT_NAMES: tuple[str, ...] = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
#: The CrowdPose report: the "all" stats of the official tool, then the crowd-index subsets.
CROWDPOSE_STAT_NAMES: tuple[str, ...] = ("AP", "AP50", "AP75", "AR", "AR50", "AR75")
CROWD_LEVELS: tuple[str, ...] = ("easy", "medium", "hard")
#: crowdIndex thresholds of the official tool and xtcocotools (``get_type_result(0.2, 0.8)``)
CROWD_INDEX_BOUNDS: tuple[float, float] = (0.2, 0.8)
#: The whole-body pass's name next to the skeleton's part names.
WHOLEBODY = "wholebody"
#: Result files: 1/1000 px and 1e-6 in scores are far below what OKS can resolve.
COORD_DECIMALS = 3
SCORE_DECIMALS = 6
#: COCO visibility of an occluded (labelled, not visible) joint.
OCCLUDED = 1
SUBMISSION_NAME = "person_keypoints_test-dev2017_posebh_results.json"

#: The counts every OKS function returns next to its stats.
COUNT_NAMES = ("num_images", "num_gt", "num_gt_ignored", "num_predictions")


# ----------------------------------------------------------------------------------------------
# Table -> COCO conversion
# ----------------------------------------------------------------------------------------------


def select(table: pd.DataFrame, dataset: str, split: str | None = None) -> pd.DataFrame:
    """Rows of one dataset (and split); a table without a ``dataset`` column is taken whole."""
    out = table
    if "dataset" in out.columns and len(out):
        canonical = {d: skeletons.get(d).name for d in out["dataset"].unique()}
        out = out[(out["dataset"].map(canonical) == skeletons.get(dataset).name).to_numpy()]
    if split is not None and "split" in out.columns:
        out = out[(out["split"] == split).to_numpy()]
    return out.reset_index(drop=True)


def oks_areas(gt_table: pd.DataFrame, dataset: str, use_area: bool | None = None) -> np.ndarray:
    """The OKS scale of each GT row.

    ``use_area=None`` follows the skeleton's ``area_rule``: ``0.53wh`` and ``wh`` are computed
    from the box here (independent of what a reader stored), ``annotation`` takes the table's
    ``area`` (the release's segment area). ``use_area=False`` forces xtcocotools' 0.53*w*h and
    ``use_area=True`` forces the table's ``area``.
    """
    rule = skeletons.get(dataset).area_rule
    if use_area is None:
        use_area = rule != "0.53wh"
    box = bbox_array(gt_table)
    wh = box[:, 2] * box[:, 3]
    if not use_area:
        return skeletons.OKS_BOX_AREA_FACTOR * wh
    if rule == "wh":
        return wh
    return gt_table["area"].to_numpy(np.float64)


def _category_entries(gt_table: pd.DataFrame, dataset: str, names: Sequence[str]) -> list[dict]:
    skel = skeletons.get(dataset)
    links = [[a + 1, b + 1] for a, b in skel.links if a < len(names) and b < len(names)]
    if len(gt_table) == 0:
        pairs = [(1, skel.category)]
    else:
        cats = gt_table.drop_duplicates("category_id").sort_values("category_id")
        pairs = list(zip(cats["category_id"], cats["category"]))
    return [
        {"id": int(c), "name": str(n), "supercategory": skel.category, "keypoints": list(names), "skeleton": links}
        for c, n in pairs
    ]


def to_coco_ground_truth(
    gt_table: pd.DataFrame,
    *,
    dataset: str,
    use_area: bool | None = None,
    keypoint_slice: slice | None = None,
    num_keypoints: np.ndarray | None = None,
    keypoints: np.ndarray | None = None,
    extra_image_ids: Iterable[int] = (),
) -> dict:
    """An in-memory COCO keypoint document of the GT rows (see the module docstring).

    ``keypoints`` (N, K', 3) and ``num_keypoints`` (N,) replace the table's values (the part and
    occluded-joint variants); with ``keypoint_slice`` and no ``num_keypoints``, the count is
    re-taken over the slice (a part GT without labelled joints is then ignored).
    """
    skel = skeletons.get(dataset)
    sl = keypoint_slice or slice(None)
    names = skel.keypoints[sl]
    if keypoints is not None:
        kps = keypoints
    elif len(gt_table):
        kps = keypoints_array(gt_table)[:, sl]
    else:
        kps = np.zeros((0, len(names), 3))
    if kps.shape[1:] != (len(names), 3):
        raise ValueError(f"{dataset}: GT keypoints have shape {kps.shape[1:]}, expected ({len(names)}, 3)")
    if num_keypoints is None:
        if keypoint_slice is None and keypoints is None:
            num_keypoints = gt_table["num_keypoints"].to_numpy(np.int64)
        else:
            num_keypoints = (kps[..., 2] > 0).sum(axis=1)
    areas = oks_areas(gt_table, dataset, use_area)
    box = bbox_array(gt_table)
    flat = kps.reshape(len(kps), 3 * len(names)).astype(np.float64)

    images: dict[int, dict] = {}
    n = len(gt_table)
    width = gt_table["width"] if "width" in gt_table.columns else [0] * n
    height = gt_table["height"] if "height" in gt_table.columns else [0] * n
    for iid, w, h in zip(gt_table["image_id"], width, height):
        images.setdefault(int(iid), {"id": int(iid), "width": int(w), "height": int(h)})
    for iid in extra_image_ids:
        images.setdefault(int(iid), {"id": int(iid), "width": 0, "height": 0})
    annotations = [
        {
            "id": i + 1,
            "image_id": int(iid),
            "category_id": int(cat),
            "bbox": box[i].tolist(),
            "area": float(areas[i]),
            "iscrowd": int(crowd),
            "keypoints": flat[i].tolist(),
            "num_keypoints": int(num_keypoints[i]),
        }
        for i, (iid, cat, crowd) in enumerate(zip(gt_table["image_id"], gt_table["category_id"], gt_table["iscrowd"]))
    ]
    return {
        "images": [images[k] for k in sorted(images)],
        "annotations": annotations,
        "categories": _category_entries(gt_table, dataset, names),
    }


def _prediction_categories(predictions: pd.DataFrame, gt_table: pd.DataFrame | None) -> np.ndarray:
    """Category of each prediction: its own column, the GT's only category, or its GT row's."""
    if "category_id" in predictions.columns:
        return predictions["category_id"].to_numpy(np.int64)
    if gt_table is None or len(gt_table) == 0:
        return np.ones(len(predictions), np.int64)
    cats = gt_table["category_id"].unique()
    if len(cats) == 1:
        return np.full(len(predictions), int(cats[0]), np.int64)
    by_instance = dict(zip(gt_table["instance_id"].to_numpy(np.int64), gt_table["category_id"].to_numpy(np.int64)))
    out = predictions["instance_id"].map(by_instance)
    if out.isna().any():
        raise ValueError(
            "the GT has several categories (species) and some predictions have neither a category_id "
            "column nor the instance_id of a GT row; detection runs must carry category_id"
        )
    return out.to_numpy(np.int64)


def prediction_keypoints(predictions: pd.DataFrame) -> np.ndarray:
    """(N, K, 3) float64 keypoints (x, y, score) of a predictions frame."""
    if len(predictions) == 0:
        return np.zeros((0, 0, 3))
    return np.stack(predictions["keypoints"].to_numpy()).astype(np.float64).reshape(len(predictions), -1, 3)


def to_coco_results(
    predictions: pd.DataFrame,
    dataset: str,
    *,
    keypoint_slice: slice | None = None,
    category_ids: np.ndarray | None = None,
    gt_table: pd.DataFrame | None = None,
) -> list[dict]:
    """COCO keypoint results ``{image_id, category_id, keypoints, score}`` of a predictions frame.

    The category is ``category_ids``, else the frame's ``category_id`` column, else the GT's
    (``gt_table``) only category or the GT row's with the same ``instance_id``, else 1.
    """
    if len(predictions) == 0:
        return []
    k = skeletons.get(dataset).num_keypoints
    kps = prediction_keypoints(predictions)
    if kps.shape[1] != k:
        raise ValueError(f"{dataset} predictions have {kps.shape[1]} keypoints, the skeleton has {k}")
    if keypoint_slice is not None:
        kps = kps[:, keypoint_slice]
    if category_ids is None:
        category_ids = _prediction_categories(predictions, gt_table)
    kps = kps.copy()
    kps[..., :2] = np.round(kps[..., :2], COORD_DECIMALS)
    kps[..., 2] = np.round(kps[..., 2], SCORE_DECIMALS)
    flat = kps.reshape(len(kps), -1).tolist()
    scores = np.round(predictions["score"].to_numpy(np.float64), SCORE_DECIMALS).tolist()
    image_ids = predictions["image_id"].to_numpy(np.int64).tolist()
    return [
        {"image_id": iid, "category_id": int(cat), "keypoints": kp, "score": s}
        for iid, cat, kp, s in zip(image_ids, category_ids, flat, scores)
    ]


# ----------------------------------------------------------------------------------------------
# Running COCOeval
# ----------------------------------------------------------------------------------------------


class _Evaluator:
    """A COCOeval over one GT document and one results list, re-runnable on image subsets."""

    def __init__(self, gt_doc: dict, results: list[dict], sigmas: Sequence[float]):
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        with contextlib.redirect_stdout(io.StringIO()):
            self.gt = COCO()
            self.gt.dataset = gt_doc
            self.gt.createIndex()
            if results:
                self.dt = self.gt.loadRes([dict(r) for r in results])
            else:  # loadRes cannot take an empty list; no results simply means AP 0
                self.dt = COCO()
                self.dt.dataset = {**gt_doc, "images": list(gt_doc["images"]), "annotations": []}
                self.dt.createIndex()
        self.ev = COCOeval(self.gt, self.dt, iouType="keypoints")
        # after construction: the constructor's Params hard-codes the 17 COCO sigmas
        self.ev.params.kpt_oks_sigmas = np.asarray(sigmas, np.float64)
        self.all_images = sorted(self.gt.getImgIds())
        self.last_summary = ""

    def stats(self, image_ids: Iterable[int] | None = None) -> np.ndarray:
        ids = self.all_images if image_ids is None else sorted(set(int(i) for i in image_ids) & set(self.all_images))
        if not ids:
            return np.full(len(STAT_NAMES), np.nan)
        self.ev.params.imgIds = ids
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            self.ev.evaluate()
            self.ev.accumulate()
            self.ev.summarize()
        self.last_summary = buf.getvalue()
        log.debug("pycocotools summary:\n%s", self.last_summary)
        out = np.asarray(self.ev.stats, np.float64)
        out[out < 0] = np.nan
        return out


def _drop_unscored(results: list[dict]) -> list[dict]:
    return [r for r in results if any(s > 0 for s in r["keypoints"][2::3])]


def _counts(gt_doc: dict, results: list[dict]) -> dict[str, int]:
    anns = gt_doc["annotations"]
    ignored = sum(1 for a in anns if a["iscrowd"] or a["num_keypoints"] == 0)
    return dict(zip(COUNT_NAMES, (len(gt_doc["images"]), len(anns) - ignored, ignored, len(results))))


def _prepare(
    gt_table: pd.DataFrame,
    predictions: pd.DataFrame,
    dataset: str,
    split: str | None,
    image_ids: Iterable[int] | None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    gt = select(gt_table, dataset, split)
    pred = select(predictions, dataset, split)
    if image_ids is not None:
        keep = set(int(i) for i in image_ids)
        gt = gt[gt["image_id"].isin(keep).to_numpy()].reset_index(drop=True)
        pred = pred[pred["image_id"].isin(keep).to_numpy()].reset_index(drop=True)
    return gt, pred


def _named(stats: np.ndarray, prefix: str = "") -> dict[str, float]:
    return {f"{prefix}{n}": float(v) for n, v in zip(STAT_NAMES, stats)}


def oks_ap(
    gt_table: pd.DataFrame,
    predictions: pd.DataFrame,
    *,
    dataset: str,
    sigmas: Sequence[float] | None = None,
    use_area: bool | None = None,
    keypoint_slice: slice | None = None,
    image_ids: Iterable[int] | None = None,
    split: str | None = None,
    drop_unscored: bool = True,
) -> dict[str, float | int]:
    """COCO OKS AP/AR (the 10 ``STAT_NAMES``) plus counts, through pycocotools.

    ``sigmas`` default to the skeleton's (sliced by ``keypoint_slice``); ``use_area`` as in
    :func:`oks_areas`; ``image_ids`` restricts both GT and predictions to those images.
    """
    gt, pred = _prepare(gt_table, predictions, dataset, split, image_ids)
    if sigmas is None:
        own = skeletons.get(dataset).sigmas
        if own is None:
            raise ValueError(f"{dataset} has no OKS sigmas; its metric is not OKS AP")
        sigmas = np.asarray(own, np.float64)[keypoint_slice or slice(None)]
    results = to_coco_results(pred, dataset, keypoint_slice=keypoint_slice, gt_table=gt)
    if drop_unscored:
        results = _drop_unscored(results)
    doc = to_coco_ground_truth(
        gt, dataset=dataset, use_area=use_area, keypoint_slice=keypoint_slice,
        extra_image_ids=(r["image_id"] for r in results),
    )  # fmt: skip
    return {**_named(_Evaluator(doc, results, sigmas).stats()), **_counts(doc, results)}


def wholebody_ap(
    gt_table: pd.DataFrame,
    predictions: pd.DataFrame,
    *,
    dataset: str = "coco_wholebody",
    use_area: bool | None = None,
    image_ids: Iterable[int] | None = None,
    split: str | None = None,
    drop_unscored: bool = True,
) -> dict[str, float | int]:
    """COCO-WholeBody AP/AR per part and whole body: ``{part}_{stat}`` for every stat.

    One pycocotools pass per skeleton part (body, foot, face, left_hand, right_hand) over that
    part's keypoints and sigmas, then one over all keypoints (``wholebody_*``), all with the
    person's area as the OKS scale (xtcocotools' use_area=True). A GT whose part has no labelled
    joint is ignored in that pass. Part scores: every pass ranks by the instance ``score``;
    mmpose writes no part scores, so xtcocotools falls back to ``score`` the same way.
    """
    gt, pred = _prepare(gt_table, predictions, dataset, split, image_ids)
    skel = skeletons.get(dataset)
    if not skel.parts:
        raise ValueError(f"{dataset} has no keypoint parts")
    passes = [(part, skel.part_slice(part)) for part in skel.parts] + [(WHOLEBODY, slice(None))]
    out: dict[str, float | int] = {}
    for name, sl in passes:
        res = to_coco_results(pred, dataset, keypoint_slice=sl, gt_table=gt)
        if drop_unscored:
            res = _drop_unscored(res)
        doc = to_coco_ground_truth(
            gt, dataset=dataset, use_area=use_area, keypoint_slice=sl, extra_image_ids=(r["image_id"] for r in res)
        )
        out.update(_named(_Evaluator(doc, res, np.asarray(skel.sigmas)[sl]).stats(), prefix=f"{name}_"))
        if name == WHOLEBODY:
            out.update(_counts(doc, res))
    return out


def crowd_levels(gt_table: pd.DataFrame, bounds: tuple[float, float] = CROWD_INDEX_BOUNDS) -> dict[str, list[int]]:
    """Image ids per crowd level from each image's ``crowdIndex`` (in the rows' ``extra``)."""
    index: dict[int, float] = {}
    for iid, extra in zip(gt_table["image_id"], extra_dicts(gt_table)):
        if "crowdIndex" not in extra:
            raise ValueError(f"image {iid} has no crowdIndex in extra; read CrowdPose with the crowdpose reader")
        index[int(iid)] = float(extra["crowdIndex"])
    lo, hi = bounds
    return {
        "easy": sorted(i for i, c in index.items() if c < lo),
        "medium": sorted(i for i, c in index.items() if lo <= c < hi),
        "hard": sorted(i for i, c in index.items() if c >= hi),
    }


def crowdpose_ap(
    gt_table: pd.DataFrame,
    predictions: pd.DataFrame,
    *,
    dataset: str = "crowdpose",
    split: str | None = None,
    ignore_by: str = "num_keypoints",
    drop_unscored: bool = True,
) -> dict[str, float | int]:
    """CrowdPose: AP, AP50, AP75, AR, AR50, AR75 and AP_easy / AP_medium / AP_hard.

    What the official crowdposetools (and xtcocotools' ``keypoints_crowd``) do, and how it is
    reproduced on pycocotools:

    * OKS scale and area filter 0.53*w*h (use_area=False): the GT gets that area;
    * maxDets = 20: pycocotools' keypoint default;
    * a GT is ignored when iscrowd or its *stored* ``num_keypoints`` is 0. CrowdPose stores the
      count over the first 12 joints (head and neck excluded), and pycocotools ignores on the
      stored value too, so the table's count is passed unchanged. (xtcocotools, at the version
      read, counts labelled joints over all 14 instead: ``ignore_by="labelled"`` gives that);
    * easy / medium / hard: the same evaluation re-run on the images with crowdIndex < 0.2,
      in [0.2, 0.8) and >= 0.8, AP over IoU thresholds 0.50:0.95 (NaN for an empty level).
    """
    gt, pred = _prepare(gt_table, predictions, dataset, split, None)
    skel = skeletons.get(dataset)
    if ignore_by not in ("num_keypoints", "labelled"):
        raise ValueError(f"ignore_by must be 'num_keypoints' or 'labelled', not {ignore_by!r}")
    counts = None if ignore_by == "num_keypoints" else (keypoints_array(gt)[..., 2] > 0).sum(axis=1)
    results = to_coco_results(pred, dataset, gt_table=gt)
    if drop_unscored:
        results = _drop_unscored(results)
    doc = to_coco_ground_truth(
        gt, dataset=dataset, use_area=False, num_keypoints=counts, extra_image_ids=(r["image_id"] for r in results)
    )
    ev = _Evaluator(doc, results, skel.sigmas)
    stats = dict(zip(STAT_NAMES, ev.stats()))
    out: dict[str, float | int] = {n: float(stats[n]) for n in CROWDPOSE_STAT_NAMES}
    for level, ids in crowd_levels(gt).items():
        out[f"AP_{level}"] = float(ev.stats(ids)[0])
    out.update(_counts(doc, results))
    return out


def occluded_keypoint_ap(
    gt_table: pd.DataFrame,
    predictions: pd.DataFrame,
    *,
    dataset: str = "ochuman",
    split: str | None = None,
    drop_unscored: bool = True,
) -> dict[str, float | int]:
    """OKS AP over occluded GT joints only (PCT's OCHuman AP^OC, as reconstructed).

    Protocol (reference datasets.md 13.7; a best-guess reconstruction, not confirmed against
    PCT's paper or code, which ship no tooling for it): keep only GT joints with v = 1
    (labelled, occluded); every other joint becomes v = 0 at (0, 0), so OKS averages over the
    occluded joints alone; ``num_keypoints`` is recounted, so a person without an occluded joint
    is ignored; then the ordinary COCO OKS AP (the dataset's area rule, use_area=True for
    OCHuman) is computed with the unchanged full-body predictions.
    """
    gt, pred = _prepare(gt_table, predictions, dataset, split, None)
    kps = keypoints_array(gt).astype(np.float64) if len(gt) else np.zeros((0, skeletons.get(dataset).num_keypoints, 3))
    occluded = kps[..., 2] == OCCLUDED
    kps = np.where(occluded[..., None], kps, 0.0)
    results = to_coco_results(pred, dataset, gt_table=gt)
    if drop_unscored:
        results = _drop_unscored(results)
    doc = to_coco_ground_truth(
        gt, dataset=dataset, keypoints=kps, num_keypoints=occluded.sum(axis=1),
        extra_image_ids=(r["image_id"] for r in results),
    )  # fmt: skip
    return {**_named(_Evaluator(doc, results, skeletons.get(dataset).sigmas).stats()), **_counts(doc, results)}


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    from posebh.atomic import write_bytes

    write_bytes(path, data)


def _results_bytes(results: Sequence[Mapping[str, Any]]) -> bytes:
    return json.dumps(list(results), separators=(",", ":")).encode()


def write_results_json(results: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Write a COCO results list atomically (a reader never sees a half-written file)."""
    p = Path(path)
    _atomic_write_bytes(p, _results_bytes(results))
    return p


def write_submission_zip(results: Sequence[Mapping[str, Any]], path: str | Path, name: str = SUBMISSION_NAME) -> Path:
    """The COCO test-dev upload: a zip holding one results JSON named as the server expects."""
    p = Path(path)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, _results_bytes(results))
    _atomic_write_bytes(p, buf.getvalue())
    return p


__all__ = [
    "STAT_NAMES",
    "COUNT_NAMES",
    "CROWDPOSE_STAT_NAMES",
    "CROWD_INDEX_BOUNDS",
    "SUBMISSION_NAME",
    "oks_ap",
    "wholebody_ap",
    "crowdpose_ap",
    "occluded_keypoint_ap",
    "crowd_levels",
    "oks_areas",
    "to_coco_ground_truth",
    "to_coco_results",
    "prediction_keypoints",
    "select",
    "write_results_json",
    "write_submission_zip",
]
