"""Generate the demo raw data: every dataset in its real release layout, from one synthetic world.

Layout under the output folder (``data/01_raw/demo`` by default; also described in the
generated ``README.md``)::

    coco/annotations/person_keypoints_{train,val}2017.json
    coco/annotations/coco_wholebody_{train,val}_v1.0.json       (same images and ids as COCO)
    coco/annotations/image_info_test-dev2017.json                (images only, no annotations key)
    coco/person_detection_results/COCO_val2017_detections_AP_H_56_person.json
    coco/person_detection_results/COCO_test-dev2017_detections_AP_H_609_person.json
    coco/{train2017,val2017,test2017}/<12 digits>.jpg
    aic/ai_challenger_keypoint_train_20170902/keypoint_train_annotations_20170909.json
    aic/ai_challenger_keypoint_train_20170902/keypoint_train_images_20170902/<40 hex>.jpg
    aic/ai_challenger_keypoint_validation_20170911/keypoint_validation_annotations_20170911.json
    aic/ai_challenger_keypoint_validation_20170911/keypoint_validation_images_20170911/<40 hex>.jpg
    mpii/annotations/mpii_{train,val}.json, mpii/annotations/mpii_gt_val.mat, mpii/images/<9 digits>.jpg
    ap10k/annotations/ap10k-{train,val,test}-split1.json, ap10k/data/<12 digits>.jpg
    apt36k/apt36k_annotations.json, apt36k/AP-36k-patr1/<NN><species>/<clip>/frame<k>.jpg
    ochuman/ochuman_coco_format_{val,test}_range_0.00_1.00.json, ochuman/images/<6 digits>.jpg
    crowdpose/annotations/crowdpose_{val,test}.json, crowdpose/annotations/det_for_crowd_test_0.1_0.5.json,
    crowdpose/images/<6 digits>.jpg
    interhand/annotations/{all,machine_annot}/InterHand2.6M_{split}_{data,camera,joint_3d}.json
    interhand/images/{train,val,test}/Capture<N>/<seq>/cam<cam>/image<frame>.jpg
    3dpw/sequenceFiles/{train,test}/<seq>.pkl, 3dpw/imageFiles/<seq>/image_<5 digits>.jpg
    3dpw/annotations/3DPW_{train,test}.json                     (ScoreHypo layout, same frames)
    DEFECTS.json, README.md

Each dataset draws from its own random stream (seeded from ``seed`` and the dataset name), so
generating a subset gives the same bytes as the full run.
"""

from __future__ import annotations

import hashlib
import math
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from posebh import skeletons
from posebh.data.demo import bodies, defects, scenes
from posebh.data.demo.render import figure_mask
from posebh.data.demo.writers import OutputTree, r2

#: Generator groups in generation order; each writes the datasets listed with it.
GROUPS: dict[str, tuple[str, ...]] = {
    "coco": ("coco", "coco_wholebody"),
    "aic": ("aic",),
    "mpii": ("mpii",),
    "ap10k": ("ap10k",),
    "apt36k": ("apt36k",),
    "ochuman": ("ochuman",),
    "crowdpose": ("crowdpose",),
    "interhand": ("interhand",),
    "3dpw": ("3dpw",),
}
DATASETS: tuple[str, ...] = tuple(d for ds in GROUPS.values() for d in ds)
#: Top folder of each dataset under the output root.
FOLDERS = {"coco": "coco", "coco_wholebody": "coco", "aic": "aic", "mpii": "mpii", "ap10k": "ap10k", "apt36k": "apt36k",
           "ochuman": "ochuman", "crowdpose": "crowdpose", "interhand": "interhand", "3dpw": "3dpw"}  # fmt: skip
DEFAULT_OUT = "data/01_raw/demo"

#: Images per split at scale 1 (3DPW: sequences x frames; APT-36K: clips per species x frames).
BASE_COUNTS = {
    "coco": {"train": 150, "val": 40, "test-dev": 24},
    "aic": {"train": 140, "val": 30},
    "mpii": {"train": 140, "val": 30},
    "ap10k": {"all": 180},
    "ochuman": {"val": 25, "test": 25},
    "crowdpose": {"val": 20, "test": 25},
    "interhand": {"train": 120, "val": 24, "test": 30},
}
#: Fewest images a split gets at any scale (keeps tiny test generations meaningful).
MIN_IMAGES = {"train": 20, "all": 30}
MIN_EVAL_IMAGES = 4
#: APT-36K: 15 frames per clip as released; clips per species grow with the scale.
APT36K_FRAMES = 15
APT36K_CLIPS_PER_SPECIES = 2
#: Below this scale APT-36K has one species (tiny test generations stay the scarcest set).
APT36K_ALL_SPECIES_FROM_SCALE = 0.5
#: 3DPW: (sequences, frames per sequence) per split at scale 1; sequences never get shorter than
#: PW3D_MIN_FRAMES nor longer than at scale 1 (more scale = more sequences).
PW3D_SEQUENCES = {"train": (2, 30), "test": (1, 30)}
PW3D_MIN_FRAMES = 8
#: AP-10K split1: 7:1:2 of the images.
AP10K_FRACTIONS = (0.7, 0.1, 0.2)


def _count(base: int, scale: float, split: str) -> int:
    minimum = MIN_IMAGES.get(split, MIN_EVAL_IMAGES)
    return max(minimum, int(math.ceil(base * scale)))


def plan(scale: float = 1.0) -> dict:
    """Images per dataset and split that :func:`generate_demo` produces at ``scale``."""
    out: dict[str, dict[str, int]] = {}
    for ds, splits in BASE_COUNTS.items():
        out[ds] = {s: _count(n, scale, s) for s, n in splits.items()}
    n = out["ap10k"].pop("all")
    n_train, n_val = int(n * AP10K_FRACTIONS[0]), int(n * AP10K_FRACTIONS[1])
    out["ap10k"] = {"train": n_train, "val": n_val, "test": n - n_train - n_val}
    out["apt36k"] = {"all": _apt36k_species(scale) * _apt36k_clips(scale) * APT36K_FRAMES}
    out["coco_wholebody"] = {"train": out["coco"]["train"], "val": out["coco"]["val"]}
    out["3dpw"] = {s: _pw3d_sequences(k, scale) * max(PW3D_MIN_FRAMES, round(f * min(scale, 1.0))) for s, (k, f) in PW3D_SEQUENCES.items()}
    return out


def _apt36k_species(scale: float) -> int:
    return len(bodies.APT36K_SPECIES) if scale >= APT36K_ALL_SPECIES_FROM_SCALE else 1


def _apt36k_clips(scale: float) -> int:
    return max(1, round(APT36K_CLIPS_PER_SPECIES * scale))


def _pw3d_sequences(base: int, scale: float) -> int:
    return max(1, round(base * scale))


# ----------------------------------------------------------------------------------------------
# Ground truth and context
# ----------------------------------------------------------------------------------------------


@dataclass
class Truth:
    """The generator's own ground truth, in the unified table's conventions.

    ``instances[dataset]`` holds one dict per written instance (keys as the table's columns plus
    ``_image`` (the image path under the output root), ``_figure`` (the figure's index in the
    image's id buffer) and, for defective rows, ``_defect``). ``images[path]`` holds the image
    size and, with ``keep_buffers``, its id buffer.
    """

    instances: dict[str, list[dict]] = field(default_factory=dict)
    images: dict[str, dict] = field(default_factory=dict)
    defects: list[dict] = field(default_factory=list)
    extra: dict[str, dict] = field(default_factory=dict)

    def rows(self, dataset: str, split: str | None = None, clean: bool = True) -> list[dict]:
        rows = self.instances.get(dataset, [])
        return [r for r in rows if (split is None or r["split"] == split) and not (clean and r.get("_defect"))]


@dataclass
class Context:
    out: OutputTree
    seed: int
    scale: float
    truth: Truth
    keep_buffers: bool
    plan: dict

    def rng(self, *names: str | int) -> np.random.Generator:
        """An independent stream per (dataset, purpose), stable across subsets and versions."""
        key = [self.seed] + [zlib.crc32(str(n).encode()) for n in names]
        return np.random.default_rng(np.random.SeedSequence(key))

    def image(self, rel: str, scene: scenes.Scene, split: str, *datasets: str) -> None:
        """Write one rendered image; the truth notes its size, split and datasets (and ids)."""
        self.out.write_jpeg(rel, scene.rendered.image)
        entry = {"width": scene.width, "height": scene.height, "split": split, "datasets": datasets}
        if self.keep_buffers:
            entry["ids"] = scene.rendered.ids
        self.truth.images[rel] = entry

    def add(self, dataset: str, row: dict) -> dict:
        self.truth.instances.setdefault(dataset, []).append(row)
        return row


def row(dataset: str, split: str, image_id: int, file_name: str, width: int, height: int, instance_id: int, bbox, keypoints,
        category_id: int, category: str, *, iscrowd: int = 0, image: str, figure: int | None, video_id=None,
        frame_index=None, track_id=None, extra: dict | None = None) -> dict:  # fmt: skip
    """One ground-truth instance in the unified table's conventions (0-based, v in {0, 1, 2})."""
    kp = np.asarray(keypoints, np.float64).reshape(-1, 3)
    return {
        "dataset": dataset, "split": split, "image_id": int(image_id), "file_name": file_name, "width": int(width),
        "height": int(height), "instance_id": int(instance_id), "bbox": np.asarray(bbox, np.float64), "keypoints": kp,
        "num_keypoints": int((kp[:, 2] > 0).sum()), "category_id": int(category_id), "category": category,
        "iscrowd": int(iscrowd), "video_id": video_id, "frame_index": frame_index, "track_id": track_id,
        "extra": extra or {}, "_image": image, "_figure": figure,
    }  # fmt: skip


def _unique_ids(rng: np.random.Generator, n: int, low: int, high: int, sort: bool = True) -> list[int]:
    """``n`` distinct integers in [low, high) (sorted unless ``sort`` is False)."""
    ids = [low + int(i) for i in rng.choice(high - low, size=n, replace=False)]
    return sorted(ids) if sort else ids


class Counter:
    """Increasing annotation ids with irregular gaps, like a real release's."""

    def __init__(self, rng: np.random.Generator, start: int):
        self.rng, self.value = rng, start

    def __call__(self) -> int:
        self.value += int(self.rng.integers(1, 30))
        return self.value


def _labelled(kp: np.ndarray, flags_to_v) -> np.ndarray:
    """(K, 3) [x, y, v] with the release's v; x = y = 0 where v = 0 (COCO's rule)."""
    v = flags_to_v(kp[:, 2])
    xy = np.where((v > 0)[:, None], kp[:, :2], 0.0)
    return np.column_stack([xy, v])


def _honest(flags):
    return flags.astype(np.float64)


def _visible_only(flags):
    """AP-10K's convention: only visible keypoints are labelled (v in {0, 2})."""
    return np.where(flags == 2, 2.0, 0.0)


def _amodal_box(scene: scenes.Scene, figure: int, integer: bool = False) -> np.ndarray:
    """The full silhouette's box clipped to the image, [x, y, w, h]."""
    x0, y0, x1, y1 = scene.rendered.amodal[figure]
    x0, y0 = max(x0, 0.0), max(y0, 0.0)
    x1, y1 = min(x1, scene.width - 1.0), min(y1, scene.height - 1.0)
    if integer:
        x0, y0, x1, y1 = math.floor(x0), math.floor(y0), math.ceil(x1), math.ceil(y1)
    return np.array([x0, y0, max(x1 - x0, 0.0), max(y1 - y0, 0.0)])


def _mask_box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1], np.float64)


def _polygons(mask: np.ndarray) -> list[list[float]]:
    """COCO polygon segmentation of a mask (outer contours, lightly simplified)."""
    import cv2

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        c = cv2.approxPolyDP(c, 0.8, True).reshape(-1, 2)
        if len(c) >= 3:
            polys.append([float(v) for v in c.reshape(-1)])
    return polys


def _rle_uncompressed(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE (column-major runs, starting with a run of zeros)."""
    flat = np.asarray(mask, np.uint8).reshape(-1, order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs = [0] + runs
    return {"counts": runs, "size": [int(mask.shape[0]), int(mask.shape[1])]}


def _rle_compressed(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"counts": rle["counts"].decode("ascii"), "size": [int(s) for s in rle["size"]]}


def _category(dataset: str, cid: int = 1, name: str | None = None, supercategory: str | None = None, skeleton=None) -> dict:
    """A COCO category entry from the registry (1-based skeleton, as the releases write it)."""
    sk = skeletons.get(dataset)
    links = sk.links if skeleton is None else skeleton
    return {
        "supercategory": supercategory or sk.category,
        "id": cid,
        "name": name or sk.category,
        "keypoints": list(sk.keypoints),
        "skeleton": [[a + 1, b + 1] for a, b in links],
    }


_LICENSES = [{"url": "https://creativecommons.org/publicdomain/zero/1.0/", "id": 1, "name": "CC0 1.0 (synthetic posebh demo data)"}]


def _info(description: str, year: int, version: str = "1.0") -> dict:
    return {"description": f"posebh demo (synthetic): {description}", "url": "https://example.invalid/posebh-demo",
            "version": version, "year": year, "contributor": "posebh demo generator", "date_created": f"{year}/01/01"}  # fmt: skip


def _detections(rng: np.random.Generator, image_id: int, boxes: list[np.ndarray], width: int, height: int) -> list[dict]:
    """Detector-like boxes: jittered true boxes, some duplicates, a few false positives."""
    out = []
    for b in boxes:
        x, y, w, h = b
        j = rng.normal(0, 0.05, 4) * np.array([w, h, w, h])
        nb = np.array([x + j[0], y + j[1], w + j[2], h + j[3]])
        out.append((nb, float(rng.uniform(0.7, 1.0))))
        if rng.random() < 0.3:
            out.append((nb + rng.normal(0, 0.12, 4) * np.array([w, h, w, h]), float(rng.uniform(0.15, 0.6))))
    for _ in range(int(rng.integers(0, 3))):
        w, h = float(rng.uniform(0.1, 0.4) * width), float(rng.uniform(0.2, 0.7) * height)
        out.append((np.array([rng.uniform(0, width - w), rng.uniform(0, height - h), w, h]), float(rng.uniform(0.02, 0.4))))
    dets = []
    for b, s in out:
        b = np.array([max(b[0], 0.0), max(b[1], 0.0), max(b[2], 2.0), max(b[3], 2.0)])
        dets.append({"bbox": np.round(b, 3).tolist(), "category_id": 1, "image_id": int(image_id), "score": round(s, 6)})
    return dets


# ----------------------------------------------------------------------------------------------
# COCO 2017 person keypoints, COCO-WholeBody and COCO test-dev
# ----------------------------------------------------------------------------------------------

_COCO_SIZES = ((256, 192), (192, 256), (240, 240))
#: A part (face, hand) needs at least this many labelled points and this box size to be valid.
_PART_MIN_POINTS = {"face": 34, "left_hand": 11, "right_hand": 11}
_PART_MIN_BOX = {"face": 6.0, "left_hand": 5.0, "right_hand": 5.0}
#: Visible pixels a person needs to be annotated at all.
_MIN_VISIBLE_PIXELS = 40
_WB_PART_KEYS = {"foot": "foot_kpts", "face": "face_kpts", "left_hand": "lefthand_kpts", "right_hand": "righthand_kpts"}
_WB_BOX_KEYS = {"face": "face_box", "left_hand": "lefthand_box", "right_hand": "righthand_box"}


def _part_box(kp: np.ndarray) -> np.ndarray:
    lab = kp[kp[:, 2] > 0, :2]
    lo, hi = lab.min(axis=0), lab.max(axis=0)
    pad = 0.1 * (hi - lo) + 1.0
    return np.concatenate([lo - pad, hi - lo + 2 * pad])


def _wholebody_parts(kp133: np.ndarray) -> tuple[dict, np.ndarray]:
    """The WholeBody part fields of one person and the 133 keypoints the reader should produce."""
    sk = skeletons.get("coco_wholebody")
    fields: dict = {}
    final = kp133.copy()
    for part in ("face", "left_hand", "right_hand"):
        sl = sk.part_slice(part)
        pk = kp133[sl]
        labelled = pk[:, 2] > 0
        valid = labelled.sum() >= _PART_MIN_POINTS[part]
        if valid:
            box = _part_box(pk)
            valid = min(box[2], box[3]) >= _PART_MIN_BOX[part]
        fields[_WB_BOX_KEYS[part]] = r2(box) if valid else [0.0, 0.0, 0.0, 0.0]
        if not valid:
            final[sl] = 0.0
    for part, key in _WB_PART_KEYS.items():
        sl = sk.part_slice(part)
        pk = final[sl]
        if part == "foot":
            fields[key] = [int(v) for v in pk.reshape(-1)]
        else:
            fields[key] = r2(pk.reshape(-1))
    for part, flag in (("face", "face_valid"), ("left_hand", "lefthand_valid"), ("right_hand", "righthand_valid"), ("foot", "foot_valid")):
        fields[flag] = bool((final[sk.part_slice(part), 2] > 0).any())
    return fields, final


def _coco_person(scene: scenes.Scene, f: int) -> tuple[np.ndarray, np.ndarray, dict] | None:
    """Body (17) and whole-body (133) keypoints plus mask facts of one person, or None if unseen."""
    mask = figure_mask(scene.rendered, f)
    if mask.sum() < _MIN_VISIBLE_PIXELS:
        return None
    body, _ = scenes.annotate(scene, f, "coco", 0)
    body = _labelled(body, _honest)
    if (body[:, 2] > 0).sum() == 0:
        return None
    wb, _ = scenes.annotate(scene, f, "coco_wholebody", 2)
    wb = _labelled(wb, _honest)
    sk = skeletons.get("coco_wholebody")
    wb[sk.part_slice("body")] = body
    foot = wb[sk.part_slice("foot")]
    foot[:, :2] = np.round(foot[:, :2])
    return body, wb, {"mask": mask, "bbox": _mask_box(mask), "area": float(mask.sum()), "segmentation": _polygons(mask)}


def build_coco(ctx: Context) -> None:
    counts = ctx.plan["coco"]
    rng_ids = ctx.rng("coco", "ids")
    total = sum(counts.values())
    ids = _unique_ids(rng_ids, total, 1, 581930, sort=False)
    next_ann = Counter(rng_ids, 180000)
    sk_wb = skeletons.get("coco_wholebody")
    docs, wb_docs = {}, {}
    start = 0
    for split, folder in (("train", "train2017"), ("val", "val2017"), ("test-dev", "test2017")):
        n = counts[split]
        split_ids = sorted(ids[start : start + n])
        start += n
        rng = ctx.rng("coco", split)
        images, anns, wb_anns, dets = [], [], [], []
        for image_id in split_ids:
            W, H = _COCO_SIZES[rng.integers(len(_COCO_SIZES))]
            crowd = split == "train" and rng.random() < 0.08
            scene = scenes.people_scene(rng, W, H, count=(1, 3), crowd_cluster=crowd)
            fname = f"{image_id:012d}.jpg"
            rel = f"coco/{folder}/{fname}"
            ctx.image(rel, scene, split, *(("coco",) if split == "test-dev" else ("coco", "coco_wholebody")))
            images.append({"license": 1, "file_name": fname, "coco_url": f"http://images.example.invalid/{folder}/{fname}",
                           "height": H, "width": W, "date_captured": "2017-01-01 00:00:00",
                           "flickr_url": f"http://photos.example.invalid/{fname}", "id": image_id})  # fmt: skip
            boxes = []
            for f, role in enumerate(scene.roles):
                if role != "person":
                    continue
                person = _coco_person(scene, f)
                if person is None:
                    continue
                body, wb, m = person
                boxes.append(m["bbox"])
                if split == "test-dev":
                    ctx.add("coco", row("coco", split, image_id, fname, W, H, -1, m["bbox"], body, 1, "person", image=rel, figure=f))
                    continue
                aid = next_ann()
                ann = {"segmentation": m["segmentation"], "num_keypoints": int((body[:, 2] > 0).sum()), "area": m["area"],
                       "iscrowd": 0, "keypoints": [int(v) for v in body.reshape(-1)], "image_id": image_id,
                       "bbox": m["bbox"].tolist(), "category_id": 1, "id": aid}  # fmt: skip
                anns.append(ann)
                ctx.add("coco", row("coco", split, image_id, fname, W, H, aid, m["bbox"], body, 1, "person", image=rel, figure=f))
                parts, final = _wholebody_parts(wb)
                wb_anns.append(ann | parts)
                ctx.add("coco_wholebody", row("coco_wholebody", split, image_id, fname, W, H, aid, m["bbox"], final, 1, "person", image=rel, figure=f))
            crowd_figs = [f for f, role in enumerate(scene.roles) if role == "crowd"]
            if crowd_figs and split != "test-dev":
                mask = np.zeros((H, W), bool)
                for f in crowd_figs:
                    mask |= figure_mask(scene.rendered, f)
                if mask.sum() >= _MIN_VISIBLE_PIXELS:
                    aid = next_ann()
                    box = _mask_box(mask)
                    ann = {"segmentation": _rle_uncompressed(mask), "num_keypoints": 0, "area": float(mask.sum()), "iscrowd": 1,
                           "keypoints": [0] * 3 * skeletons.get("coco").num_keypoints, "image_id": image_id, "bbox": box.tolist(),
                           "category_id": 1, "id": aid}  # fmt: skip
                    anns.append(ann)
                    zeros = np.zeros((skeletons.get("coco").num_keypoints, 3))
                    ctx.add("coco", row("coco", split, image_id, fname, W, H, aid, box, zeros, 1, "person", iscrowd=1, image=rel, figure=None))
                    wb_anns.append(ann | _wholebody_parts(np.zeros((sk_wb.num_keypoints, 3)))[0])
                    zeros = np.zeros((sk_wb.num_keypoints, 3))
                    ctx.add("coco_wholebody", row("coco_wholebody", split, image_id, fname, W, H, aid, box, zeros, 1, "person",
                                                  iscrowd=1, image=rel, figure=None))  # fmt: skip
            if split != "train":
                dets += _detections(rng, image_id, boxes, W, H)
        if split == "test-dev":
            info = {"info": _info("COCO 2017 test-dev image info", 2017), "licenses": _LICENSES, "images": images, "categories": [_category("coco")]}
            ctx.out.write_json("coco/annotations/image_info_test-dev2017.json", info)
            ctx.out.write_json("coco/person_detection_results/COCO_test-dev2017_detections_AP_H_609_person.json", dets)
            ctx.truth.extra.setdefault("coco", {})["test-dev_images"] = images
            continue
        cats = [_category("coco")]
        docs[split] = {"info": _info("COCO 2017 person keypoints", 2017), "licenses": _LICENSES, "images": images, "annotations": anns, "categories": cats}
        # COCO-WholeBody gets its own image entries so a defect planted in one file stays there
        wb_images = [dict(im) for im in images]
        wb_docs[split] = {"info": _info("COCO-WholeBody v1.0", 2020), "licenses": _LICENSES, "images": wb_images, "annotations": wb_anns, "categories": cats}
        if split == "val":
            ctx.out.write_json("coco/person_detection_results/COCO_val2017_detections_AP_H_56_person.json", dets)
            ctx.truth.extra.setdefault("coco", {})["val_detections"] = len(dets)
    defects.plant_coco(ctx, docs, wb_docs)
    for split in ("train", "val"):
        ctx.out.write_json(f"coco/annotations/person_keypoints_{split}2017.json", docs[split])
        ctx.out.write_json(f"coco/annotations/coco_wholebody_{split}_v1.0.json", wb_docs[split])


# ----------------------------------------------------------------------------------------------
# AI Challenger (raw release)
# ----------------------------------------------------------------------------------------------

AIC_RELEASE = {
    "train": ("ai_challenger_keypoint_train_20170902", "keypoint_train_annotations_20170909.json", "keypoint_train_images_20170902"),
    "val": ("ai_challenger_keypoint_validation_20170911", "keypoint_validation_annotations_20170911.json", "keypoint_validation_images_20170911"),
}
#: honest flag (0 outside, 1 covered, 2 visible) -> AIC raw visibility (3 absent, 2 occluded, 1 visible)
AIC_RAW_V = {0: 3, 1: 2, 2: 1}
_AIC_SIZE = (256, 192)


def build_aic(ctx: Context) -> None:
    next_instance = 0
    for split, (folder, ann_name, img_folder) in AIC_RELEASE.items():
        rng = ctx.rng("aic", split)
        records = []
        next_instance = 0
        for i in range(ctx.plan["aic"][split]):
            W, H = _AIC_SIZE
            scene = scenes.people_scene(rng, W, H, count=(1, 4))
            image_hash = hashlib.sha1(f"posebh-demo-aic-{ctx.seed}-{split}-{i}".encode()).hexdigest()
            fname = f"{image_hash}.jpg"
            rel = f"aic/{folder}/{img_folder}/{fname}"
            ctx.image(rel, scene, split, "aic")
            humans = []
            for f in range(len(scene.figures)):
                kp, _ = scenes.annotate(scene, f, "aic", 0)
                kp = _labelled(kp, _honest)
                box = _amodal_box(scene, f, integer=True)
                if (kp[:, 2] > 0).sum() < 3 or min(box[2], box[3]) < 4:
                    continue
                humans.append((f, kp, box))
            order = rng.permutation(len(humans))  # key order in the file is not numeric
            kmap, hmap = {}, {}
            for j in order:
                f, kp, box = humans[j]
                raw = kp.copy()
                raw[:, 2] = [AIC_RAW_V[int(v)] for v in kp[:, 2]]
                kmap[f"human{j + 1}"] = [int(v) for v in raw.reshape(-1)]
                hmap[f"human{j + 1}"] = [int(box[0]), int(box[1]), int(box[0] + box[2]), int(box[1] + box[3])]
            records.append({"url": f"http://news.example.invalid/aic/{i}.jpg", "image_id": image_hash,
                            "keypoint_annotations": kmap, "human_annotations": hmap})  # fmt: skip
            for j, (f, kp, box) in enumerate(humans):
                next_instance += 1
                ctx.add("aic", row("aic", split, i + 1, fname, W, H, next_instance, box, kp, 1, "person", image=rel, figure=f,
                                   extra={"image_hash": image_hash, "human": f"human{j + 1}"}))  # fmt: skip
        defects.plant_aic(ctx, split, records, f"aic/{folder}/{ann_name}")
        ctx.out.write_json(f"aic/{folder}/{ann_name}", records)


# ----------------------------------------------------------------------------------------------
# MPII (mmpose json + PCKh ground-truth .mat)
# ----------------------------------------------------------------------------------------------

#: mmpose's MPII person centre is shifted by this many scale units (the reader adds it back).
MPII_CENTER_SHIFT = 15.0
MPII_PIXEL_STD = 200.0
#: The .mat's joint abbreviations, built from the registry names.
_MPII_ABBREV = {"ankle": "ank", "knee": "kne", "hip": "hip", "pelvis": "pelv", "thorax": "thor", "upper_neck": "neck",
                "head_top": "head", "wrist": "wri", "elbow": "elb", "shoulder": "sho"}  # fmt: skip
_MPII_SIZE = (256, 192)
_MPII_MIN_JOINTS = 6


def mpii_joint_abbreviations() -> list[str]:
    out = []
    for name in skeletons.get("mpii").keypoints:
        side, _, rest = name.partition("_")
        out.append(side[0] + _MPII_ABBREV[rest] if side in ("left", "right") else _MPII_ABBREV[name])
    return out


def _mpii_head_box(scene: scenes.Scene, f: int) -> np.ndarray:
    """[[x1, y1], [x2, y2]] (0-based): a square on the head from upper neck to head top."""
    fig = scene.figures[f]
    uv, _ = scene.camera.project(np.stack([fig.point("upper_neck"), fig.point("head_top")]))
    centre = uv.mean(axis=0)
    side = float(np.linalg.norm(uv[1] - uv[0]))
    return np.stack([centre - side / 2, centre + side / 2])


def build_mpii(ctx: Context) -> None:
    counts = ctx.plan["mpii"]
    rng_ids = ctx.rng("mpii", "ids")
    names = _unique_ids(rng_ids, sum(counts.values()), 1, 999_999_999, sort=False)
    start = 0
    sk = skeletons.get("mpii")
    for split in ("train", "val"):
        rng = ctx.rng("mpii", split)
        entries, heads = [], []
        for image_number in names[start : start + counts[split]]:
            W, H = _MPII_SIZE
            scene = scenes.people_scene(rng, W, H, count=(1, 2), truncate=0.1)
            fname = f"{image_number:09d}.jpg"
            rel = f"mpii/images/{fname}"
            ctx.image(rel, scene, split, "mpii")
            for f in range(len(scene.figures)):
                kp, _ = scenes.annotate(scene, f, "mpii", 2)
                inside = kp[:, 2] > 0
                if inside.sum() < _MPII_MIN_JOINTS:
                    continue
                joints = [[round(float(x) + 1, 2), round(float(y) + 1, 2)] if ok else [-1.0, -1.0] for (x, y), ok in zip(kp[:, :2], inside)]
                box = _amodal_box(scene, f)
                scale = round(max(box[2], box[3]) / MPII_PIXEL_STD, 4)
                cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
                center = [round(cx + 1, 2), round(cy + 1 - MPII_CENTER_SHIFT * scale, 2)]
                entries.append({"joints_vis": [int(v) for v in inside], "joints": joints, "image": fname, "scale": scale, "center": center})
                truth_kp = np.zeros((sk.num_keypoints, 3))
                truth_kp[inside, :2] = np.asarray(joints, np.float64)[inside] - 1
                truth_kp[inside, 2] = 2
                c = np.array([center[0] - 1, center[1] + MPII_CENTER_SHIFT * scale - 1])
                side = MPII_PIXEL_STD * scale
                heads.append(_mpii_head_box(scene, f))
                ctx.add("mpii", row("mpii", split, image_number, fname, W, H, len(entries), [c[0] - side / 2, c[1] - side / 2, side, side],
                                    truth_kp, 1, "person", image=rel, figure=f, extra={"head_box": (heads[-1]).reshape(-1).tolist()}))  # fmt: skip
        start += counts[split]
        defects.plant_mpii(ctx, split, entries, f"mpii/annotations/mpii_{split}.json")
        ctx.out.write_json(f"mpii/annotations/mpii_{split}.json", entries)
        if split == "val":
            _write_mpii_gt(ctx, entries, heads)


def _write_mpii_gt(ctx: Context, entries: list[dict], heads: list[np.ndarray]) -> None:
    """``mpii_gt_val.mat``: columns in json order, 1-based pixels, missing joints flagged."""
    k, n = skeletons.get("mpii").num_keypoints, len(entries)
    pos = np.zeros((k, 2, n))
    missing = np.ones((k, n), np.uint8)
    boxes = np.zeros((2, 2, n))
    for i, e in enumerate(entries):
        joints = np.asarray(e.get("joints", []), np.float64)
        vis = np.asarray(e.get("joints_vis", []))
        if joints.shape == (k, 2) and vis.shape == (k,):
            pos[:, :, i] = joints
            missing[:, i] = (vis == 0).astype(np.uint8)
        boxes[:, :, i] = np.round(heads[i] + 1, 2)
    names = np.empty((1, k), dtype=object)
    for j, a in enumerate(mpii_joint_abbreviations()):
        names[0, j] = np.array([a])
    ctx.out.write_mat("mpii/annotations/mpii_gt_val.mat", {"dataset_joints": names, "jnt_missing": missing, "pos_gt_src": pos, "headboxes_src": boxes})


# ----------------------------------------------------------------------------------------------
# AP-10K and APT-36K (animals)
# ----------------------------------------------------------------------------------------------

_ANIMAL_SIZE = (256, 192)
_ANIMAL_MIN_POINTS = 3


def _animal_instance(scene: scenes.Scene, f: int, dataset: str) -> tuple[np.ndarray, np.ndarray] | None:
    kp, _ = scenes.annotate(scene, f, dataset, 0)
    kp = _labelled(kp, _visible_only)
    box = _amodal_box(scene, f, integer=True)
    if (kp[:, 2] > 0).sum() < _ANIMAL_MIN_POINTS or min(box[2], box[3]) < 4:
        return None
    return kp, box


def _animal_category(sp: bodies.Species, dataset: str) -> dict:
    return _category(dataset, sp.category_id, sp.name, sp.family) | {"id": sp.category_id}


def build_ap10k(ctx: Context) -> None:
    counts = ctx.plan["ap10k"]
    n = sum(counts.values())
    rng = ctx.rng("ap10k", "images")
    ids = _unique_ids(ctx.rng("ap10k", "ids"), n, 1, 60000)
    order = ctx.rng("ap10k", "split").permutation(n)
    split_of = {}
    for k, i in enumerate(order):
        split_of[i] = "train" if k < counts["train"] else "val" if k < counts["train"] + counts["val"] else "test"
    next_ann = Counter(ctx.rng("ap10k", "annotations"), 0)
    images = {s: [] for s in ("train", "val", "test")}
    anns = {s: [] for s in ("train", "val", "test")}
    for i, image_id in enumerate(ids):
        split = split_of[i]
        W, H = _ANIMAL_SIZE
        bg = int(rng.integers(1, 9))
        scene = scenes.animal_scene(rng, W, H, bodies.AP10K_SPECIES, bg)
        fname = f"{image_id:012d}.jpg"
        rel = f"ap10k/data/{fname}"
        ctx.image(rel, scene, split, "ap10k")
        images[split].append({"license": 1, "id": image_id, "file_name": fname, "width": W, "height": H, "background": bg})
        for f in range(len(scene.figures)):
            inst = _animal_instance(scene, f, "ap10k")
            if inst is None:
                continue
            kp, box = inst
            sp = scene.meta[f]["species"]
            aid = next_ann()
            anns[split].append({"id": aid, "image_id": image_id, "category_id": sp.category_id, "bbox": [int(v) for v in box],
                                "area": int(box[2] * box[3]), "iscrowd": 0, "num_keypoints": int((kp[:, 2] > 0).sum()),
                                "keypoints": [int(v) for v in kp.reshape(-1)]})  # fmt: skip
            ctx.add("ap10k", row("ap10k", split, image_id, fname, W, H, aid, box, kp, sp.category_id, sp.name, image=rel, figure=f,
                                 extra={"background": bg}))  # fmt: skip
    cats = [_animal_category(sp, "ap10k") for sp in sorted(bodies.AP10K_SPECIES, key=lambda s: s.category_id)]
    docs = {s: {"info": _info("AP-10K", 2021), "licenses": _LICENSES, "images": images[s], "annotations": anns[s], "categories": cats} for s in images}
    defects.plant_ap10k(ctx, docs)
    for s, doc in docs.items():
        ctx.out.write_json(f"ap10k/annotations/ap10k-{s}-split1.json", doc)


#: Clip-folder names in the styles of the release (one non-ASCII, as in the real folders).
APT36K_CLIPS = ("v3c2", "v11C1", "clip46", "video11_clip6_1m44s-1m46s_frame", "v2c21", "clip46\u221a", "v7c3", "clip12")
APT36K_DRIVE_PREFIX = "D:\\Animal_pose\\AP-36k-patr1"
APT36K_IMAGE_ROOT = "apt36k/AP-36k-patr1"


def build_apt36k(ctx: Context) -> None:
    n_species = _apt36k_species(ctx.scale)
    clips_per_species = _apt36k_clips(ctx.scale)
    next_ann = Counter(ctx.rng("apt36k", "annotations"), 0)
    images, anns = [], []
    image_id = video_id = 0
    for s, (sp, folder) in enumerate(bodies.APT36K_SPECIES[:n_species]):
        for c in range(clips_per_species):
            rng = ctx.rng("apt36k", folder, c)
            # folder names cycle through the release's styles (the non-ASCII one is used at scale 1)
            clip_name = APT36K_CLIPS[(s * clips_per_species + c) % len(APT36K_CLIPS)] + ("" if c < len(APT36K_CLIPS) else f"_{c}")
            clip = scenes.animal_clip(rng, *_ANIMAL_SIZE, sp, APT36K_FRAMES)
            video_id += 1
            for k, scene in enumerate(clip.scenes, start=1):
                image_id += 1
                rel_name = f"{folder}/{clip_name}/frame{k}.jpg"
                ctx.image(f"{APT36K_IMAGE_ROOT}/{rel_name}", scene, "all", "apt36k")
                release_name = "\\".join([APT36K_DRIVE_PREFIX, folder, clip_name, f"frame{k}.jpg"])
                images.append({"id": image_id, "file_name": release_name, "width": scene.width, "height": scene.height, "video_id": video_id})
                for f in range(len(scene.figures)):
                    inst = _animal_instance(scene, f, "apt36k")
                    if inst is None:
                        continue
                    kp, box = inst
                    aid = next_ann()
                    anns.append({"id": aid, "image_id": image_id, "category_id": sp.category_id, "bbox": [int(v) for v in box],
                                 "area": int(box[2] * box[3]), "is_crowd": 0, "num_keypoints": int((kp[:, 2] > 0).sum()),
                                 "keypoints": [int(v) for v in kp.reshape(-1)], "video_id": video_id, "track_id": clip.tracks[f]})  # fmt: skip
                    ctx.add("apt36k", row("apt36k", "all", image_id, rel_name, scene.width, scene.height, aid, box, kp, sp.category_id, sp.name,
                                          image=f"{APT36K_IMAGE_ROOT}/{rel_name}", figure=f, video_id=video_id, frame_index=k,
                                          track_id=clip.tracks[f], extra={"species_folder": folder}))  # fmt: skip
    cats = [_animal_category(sp, "apt36k") for sp, _ in sorted(bodies.APT36K_SPECIES[:n_species], key=lambda t: t[0].category_id)]
    doc = {"license": _LICENSES, "info": _info("APT-36K", 2022), "categories": cats, "images": images, "annotations": anns}
    defects.plant_apt36k(ctx, doc)
    ctx.out.write_json("apt36k/apt36k_annotations.json", doc)


# ----------------------------------------------------------------------------------------------
# OCHuman and CrowdPose (evaluation sets, crowded)
# ----------------------------------------------------------------------------------------------

_OCHUMAN_SIZE = (224, 256)
OCHUMAN_FILES = {s: f"ochuman/ochuman_coco_format_{s}_range_0.00_1.00.json" for s in ("val", "test")}


def build_ochuman(ctx: Context) -> None:
    number = 0
    for split in ("val", "test"):
        rng = ctx.rng("ochuman", split)
        images, anns = [], []
        for i in range(ctx.plan["ochuman"][split]):
            W, H = _OCHUMAN_SIZE
            scene = scenes.people_scene(rng, W, H, count=(2, 4), spread=0.3, height_frac=(0.7, 0.95), truncate=0.05)
            number += 1
            fname = f"{number:06d}.jpg"
            rel = f"ochuman/images/{fname}"
            ctx.image(rel, scene, split, "ochuman")
            image_id = i + 1
            images.append({"file_name": fname, "width": W, "height": H, "id": image_id})
            for f in range(len(scene.figures)):
                mask = figure_mask(scene.rendered, f)
                kp, _ = scenes.annotate(scene, f, "ochuman", 2)
                kp = _labelled(kp, _honest)
                if mask.sum() < _MIN_VISIBLE_PIXELS or (kp[:, 2] > 0).sum() == 0:
                    continue
                box = _mask_box(mask)
                aid = len(anns) + 1
                keypoints = []
                for x, y, v in kp:
                    keypoints += [round(float(x), 2), round(float(y), 2), int(v)]
                anns.append({"area": int(mask.sum()), "image_id": image_id, "iscrowd": 0, "category_id": 1, "bbox": [int(v) for v in box],
                             "segmentation": _rle_compressed(mask), "num_keypoints": int((kp[:, 2] > 0).sum()), "id": aid, "keypoints": keypoints})  # fmt: skip
                ctx.add("ochuman", row("ochuman", split, image_id, fname, W, H, aid, box, kp, 1, "person", image=rel, figure=f))
        doc = {"categories": [_category("ochuman")], "images": images, "annotations": anns, "info": _info("OCHuman COCO format", 2019)}
        defects.plant_ochuman(ctx, split, doc, OCHUMAN_FILES[split])
        ctx.out.write_json(OCHUMAN_FILES[split], doc)


_CROWDPOSE_SIZE = (256, 192)
#: CrowdPose counts labelled joints among the first 12 (head and neck excluded).
CROWDPOSE_COUNTED = 12


def _crowd_index(boxes: list[np.ndarray], kps: list[np.ndarray]) -> float:
    """CrowdPose's crowd index: mean over persons of other persons' joints in the box / own joints."""
    ratios = []
    for i, b in enumerate(boxes):
        x0, y0, x1, y1 = b[0], b[1], b[0] + b[2], b[1] + b[3]

        def inside(kp):
            lab = kp[kp[:, 2] > 0]
            return int(((lab[:, 0] >= x0) & (lab[:, 0] <= x1) & (lab[:, 1] >= y0) & (lab[:, 1] <= y1)).sum())

        own = inside(kps[i])
        if own:
            ratios.append(sum(inside(k) for j, k in enumerate(kps) if j != i) / own)
    return float(np.mean(ratios)) if ratios else 0.0


def build_crowdpose(ctx: Context) -> None:
    rng_ids = ctx.rng("crowdpose", "ids")
    numbers = _unique_ids(rng_ids, sum(ctx.plan["crowdpose"].values()), 100000, 120000)
    next_ann = Counter(rng_ids, 100000)
    start = 0
    sk = skeletons.get("crowdpose")
    for split in ("val", "test"):
        rng = ctx.rng("crowdpose", split)
        images, anns, dets = [], [], []
        for image_id in numbers[start : start + ctx.plan["crowdpose"][split]]:
            W, H = _CROWDPOSE_SIZE
            scene = scenes.people_scene(rng, W, H, count=(3, 6), spread=0.6, height_frac=(0.45, 0.85), crowd_cluster=rng.random() < 0.1)
            fname = f"{image_id:06d}.jpg"
            rel = f"crowdpose/images/{fname}"
            ctx.image(rel, scene, split, "crowdpose")
            boxes, kps = [], []
            for f, role in enumerate(scene.roles):
                if role != "person":
                    continue
                kp, _ = scenes.annotate(scene, f, "crowdpose", 0)
                kp = _labelled(kp, _honest)
                box = np.round(_amodal_box(scene, f), 2)
                if (kp[:, 2] > 0).sum() == 0 or min(box[2], box[3]) < 4:
                    continue
                aid = next_ann()
                anns.append({"num_keypoints": int((kp[:CROWDPOSE_COUNTED, 2] > 0).sum()), "iscrowd": 0, "keypoints": [int(v) for v in kp.reshape(-1)],
                             "image_id": image_id, "bbox": box.tolist(), "category_id": 1, "id": aid})  # fmt: skip
                boxes.append(box)
                kps.append(kp)
                ctx.add("crowdpose", row("crowdpose", split, image_id, fname, W, H, aid, box, kp, 1, "person", image=rel, figure=f))
            crowd = [f for f, role in enumerate(scene.roles) if role == "crowd"]
            if crowd:
                a = np.stack([scene.rendered.amodal[f] for f in crowd])
                box = np.round(np.array([max(a[:, 0].min(), 0), max(a[:, 1].min(), 0), 0, 0]), 2)
                box[2:] = np.round([min(a[:, 2].max(), W - 1) - box[0], min(a[:, 3].max(), H - 1) - box[1]], 2)
                aid = next_ann()
                anns.append({"num_keypoints": 0, "iscrowd": 1, "keypoints": [0] * 3 * sk.num_keypoints, "image_id": image_id,
                             "bbox": box.tolist(), "category_id": 1, "id": aid})  # fmt: skip
                zeros = np.zeros((sk.num_keypoints, 3))
                ctx.add("crowdpose", row("crowdpose", split, image_id, fname, W, H, aid, box, zeros, 1, "person", iscrowd=1, image=rel, figure=None))
            images.append({"file_name": fname, "id": image_id, "height": H, "width": W, "crowdIndex": round(_crowd_index(boxes, kps), 2)})
            if split == "test":
                dets += _detections(rng, image_id, boxes, W, H)
        # the release's category skeleton is COCO's 17-joint list, wrong for 14 joints (kept as released)
        cat = _category("crowdpose", skeleton=skeletons.get("coco").links[:CROWDPOSE_COUNTED])
        doc = {"categories": [cat], "images": images, "annotations": anns}
        defects.plant_crowdpose(ctx, split, doc, f"crowdpose/annotations/crowdpose_{split}.json")
        ctx.out.write_json(f"crowdpose/annotations/crowdpose_{split}.json", doc)
        if split == "test":
            ctx.out.write_json("crowdpose/annotations/det_for_crowd_test_0.1_0.5.json", dets)
        start += ctx.plan["crowdpose"][split]


# ----------------------------------------------------------------------------------------------
# InterHand2.6M (5 fps v1.0 layout)
# ----------------------------------------------------------------------------------------------

#: The release's hands in joint order (right 0-20, left 21-41); the reader numbers a hand's row
#: annotation id * 2 + this index.
INTERHAND_SIDES = ("right", "left")
#: annotation subset folder of each split (PoseBH: all/train, machine_annot/val, all/test)
INTERHAND_SUBSETS = {"train": "all", "val": "machine_annot", "test": "all"}
INTERHAND_SEQUENCES = (("0390_dh_touchROM", "interacting"), ("0051_dinosaur", "interacting"), ("ROM04_RT_Occlusion", "right"),
                       ("0002_good_luck", "right"), ("ROM03_LT_No_Occlusion", "left"), ("0125_finger_spread", "left"))  # fmt: skip
_IH_SIZES = ((192, 256), (256, 192))
_IH_CAMERAS = 4
_IH_VIEWS_PER_FRAME = 2
_IH_FRAMES_PER_SEQUENCE = (4, 8)
#: Projected joints keep this margin from the image border (crops contain the hands).
_IH_MARGIN = 3.0
_IH_MAX_SEQUENCES_PER_IMAGE = 20
MM = 1000.0


def _rounded_camera(cam, width: int, height: int) -> tuple:
    """The camera as InterHand writes it (mm, rounded) and the Camera those numbers define."""
    from posebh.data.demo.geometry import Camera

    campos = np.round(cam.center * MM, 4)
    camrot = np.round(cam.R, 8)
    focal = np.round([cam.fx, cam.fy], 4)
    princpt = np.round([cam.cx, cam.cy], 4)
    t = -camrot @ (campos / MM)
    return (campos, camrot, focal, princpt), Camera(camrot, t, float(focal[0]), float(focal[1]), float(princpt[0]), float(princpt[1]), width, height)


def project_interhand(world_mm: np.ndarray, campos, camrot, focal, princpt) -> tuple[np.ndarray, np.ndarray]:
    """InterHand's projection: X_c = R (X - campos), then the pinhole."""
    Xc = (np.asarray(world_mm) - np.asarray(campos)) @ np.asarray(camrot).T
    uv = np.stack([focal[0] * Xc[:, 0] / Xc[:, 2] + princpt[0], focal[1] * Xc[:, 1] / Xc[:, 2] + princpt[1]], axis=1)
    return uv, Xc[:, 2]


def build_interhand(ctx: Context) -> None:
    sk = skeletons.get("interhand")
    k = sk.num_keypoints
    capture = 0
    image_id = ann_id = 0
    root = sk.index("wrist")
    for split, subset in INTERHAND_SUBSETS.items():
        target = ctx.plan["interhand"][split]
        n_captures = max(1, round(target / 60))
        data_images, data_anns, cam_json, j3d_json = [], [], {}, {}
        done = 0
        for c in range(n_captures):
            rng = ctx.rng("interhand", split, c)
            cam_names = [str(400000 + 2 * int(i)) for i in sorted(rng.choice(np.arange(1, 200), size=_IH_CAMERAS, replace=False))]
            rig = {}
            cam_entry = {"campos": {}, "camrot": {}, "focal": {}, "princpt": {}}
            for name in cam_names:
                W, H = _IH_SIZES[rng.integers(len(_IH_SIZES))]
                raw = scenes.capture_rig(rng, W, H, 1, [name]).cameras[name]
                params, cam = _rounded_camera(raw, W, H)
                rig[name] = (params, cam)
                for key, value in zip(("campos", "camrot", "focal", "princpt"), params):
                    cam_entry[key][name] = value.tolist()
            cam_json[str(capture)] = cam_entry
            j3d_json[str(capture)] = {}
            subject = int(rng.integers(1, 27))
            frame_idx = int(rng.integers(100, 900))
            quota = math.ceil((target - done) / (n_captures - c))
            got = attempts = 0
            while got < quota:
                attempts += 1
                if attempts > _IH_MAX_SEQUENCES_PER_IMAGE * quota:  # pragma: no cover - a camera rig that never sees the hands
                    raise RuntimeError(f"InterHand capture {capture}: cameras keep missing the hands")
                seq, hand_type = INTERHAND_SEQUENCES[rng.integers(len(INTERHAND_SEQUENCES))]
                motion = scenes.hand_motion(rng, hand_type)
                palette = scenes.hand_palette(rng)
                for f in range(int(rng.integers(*_IH_FRAMES_PER_SEQUENCE))):
                    if got >= quota:
                        break
                    frame_idx += 6 * int(rng.integers(1, 4))  # 5 fps of 30
                    hands = motion.at(f)
                    figures = scenes.hand_figures(hands, motion.size, palette)
                    world = np.zeros((2 * k, 3))
                    valid = np.zeros(2 * k, np.int64)
                    fig_of = {}
                    for fi, side in enumerate(hands):
                        fig_of[side] = fi
                        off = 0 if side == "right" else k
                        world[off : off + k] = np.round(bodies.annotator("interhand").points(figures[fi]) * MM, 2)
                        valid[off : off + k] = 1
                        drop = rng.random(k) < 0.02
                        drop[root] = False
                        valid[off : off + k][drop] = 0
                    for name in rng.permutation(cam_names)[:_IH_VIEWS_PER_FRAME]:
                        (campos, camrot, focal, princpt), cam = rig[name]
                        uv, depth = project_interhand(world, campos, camrot, focal, princpt)
                        ok = valid > 0
                        inside = (depth > 0) & _inside(uv, cam.width, cam.height, _IH_MARGIN)
                        if not inside[ok].all():
                            continue
                        scene = scenes.hand_scene(rng, cam, figures)
                        image_id += 1
                        ann_id += 1
                        fname = f"Capture{capture}/{seq}/cam{name}/image{frame_idx}.jpg"
                        rel = f"interhand/images/{split}/{fname}"
                        ctx.image(rel, scene, split, "interhand")
                        data_images.append({"id": image_id, "file_name": fname, "width": cam.width, "height": cam.height, "capture": capture,
                                            "subject": subject, "seq_name": seq, "camera": name, "frame_idx": frame_idx})  # fmt: skip
                        lo, hi = uv[ok].min(axis=0), uv[ok].max(axis=0)
                        data_anns.append({"id": ann_id, "image_id": image_id, "bbox": r2(np.concatenate([lo, hi - lo])),
                                          "joint_valid": [[int(v)] for v in valid], "hand_type": hand_type, "hand_type_valid": 1})  # fmt: skip
                        for side, fi in fig_of.items():
                            off = 0 if side == "right" else k
                            kv = valid[off : off + k] > 0
                            kp = np.zeros((k, 3))
                            kp[kv, :2] = uv[off : off + k][kv]
                            kp[kv, 2] = 2
                            honest, _ = scenes.annotate(scene, fi, "interhand")
                            s = INTERHAND_SIDES.index(side)
                            ctx.add("interhand", row("interhand", split, image_id, fname, cam.width, cam.height, ann_id * len(INTERHAND_SIDES) + s,
                                                     scenes_box(kp), kp, 1, "hand", image=rel, figure=fi,
                                                     extra={"annotation_id": ann_id, "hand": side, "uv_render": honest[:, :2],
                                                            "flags": honest[:, 2]}))  # fmt: skip
                        got += 1
                    if valid.any():
                        j3d_json[str(capture)][str(frame_idx)] = {"world_coord": world.tolist(), "joint_valid": [[bool(v)] for v in valid],
                                                                  "hand_type": hand_type, "hand_type_valid": True}  # fmt: skip
            done += got
            capture += 1
        files = {kind: f"interhand/annotations/{subset}/InterHand2.6M_{split}_{kind}.json" for kind in ("data", "camera", "joint_3d")}
        data = {"images": data_images, "annotations": data_anns}
        defects.plant_interhand(ctx, split, data, files["data"])
        ctx.out.write_json(files["data"], data)
        ctx.out.write_json(files["camera"], cam_json)
        ctx.out.write_json(files["joint_3d"], j3d_json)
        ctx.truth.extra.setdefault("interhand", {})[split] = files


def _inside(uv: np.ndarray, width: int, height: int, margin: float = 0.0) -> np.ndarray:
    """Finite points in [margin, W - margin) x [margin, H - margin) (the readers' image test at 0)."""
    ok = np.isfinite(uv).all(axis=1)
    u, v = np.where(ok, uv[:, 0], -1.0), np.where(ok, uv[:, 1], -1.0)
    if margin:
        return ok & (u >= margin) & (u <= width - 1 - margin) & (v >= margin) & (v <= height - 1 - margin)
    return ok & (u >= 0) & (u < width) & (v >= 0) & (v < height)


def scenes_box(kp: np.ndarray) -> np.ndarray:
    """Tightest box around labelled keypoints (zeros when none is)."""
    lab = kp[kp[:, 2] > 0, :2]
    if not len(lab):
        return np.zeros(4)
    lo, hi = lab.min(axis=0), lab.max(axis=0)
    return np.concatenate([lo, hi - lo])


# ----------------------------------------------------------------------------------------------
# 3DPW (official sequence pickles + ScoreHypo json)
# ----------------------------------------------------------------------------------------------

PW3D_SIZE = (144, 256)  # 9:16 portrait, as the phone videos
PW3D_NAMES = {"train": ("courtyard_demoWalk_00", "downtown_demoStroll_01", "outdoors_demoPath_02", "courtyard_demoPair_03"),
              "test": ("downtown_demoCrossing_00", "outdoors_demoPark_01", "office_demoHall_02")}  # fmt: skip
#: The 3dpw_sequences reader's numbering: image_id = sequence index * stride + frame,
#: instance_id = image_id * actor stride + actor (sequences in file-name order).
PW3D_IMAGE_ID_STRIDE = 100_000
PW3D_ACTOR_STRIDE = 10
#: An actor with fewer joints in the frame gets campose_valid = False there (no empty instances).
PW3D_MIN_JOINTS = 6
#: Side-by-side spacing of a pair of actors (m) and camera distances (m) by number of actors.
PW3D_PAIR_GAP = 0.9
PW3D_DISTANCE = {1: (3.2, 4.2), 2: (4.4, 5.4)}
#: Frames per second of the images; the IMU-rate fields are at twice this.
PW3D_IMU_FACTOR = 2
_PW3D_GENDER = {"m": "male", "f": "female"}


def _interpolate_60hz(a: np.ndarray) -> np.ndarray:
    """IMU-rate series: the image-rate samples with midpoints between them."""
    out = np.empty((PW3D_IMU_FACTOR * len(a) - 1,) + a.shape[1:])
    out[0::PW3D_IMU_FACTOR] = a
    out[1::PW3D_IMU_FACTOR] = 0.5 * (a[:-1] + a[1:])
    return out


def build_3dpw(ctx: Context) -> None:
    from posebh.data.demo.geometry import matrix_to_rotvec

    W, H = PW3D_SIZE
    image_id = ann_id = 0
    for split, (n_seq, _) in PW3D_SEQUENCES.items():
        n_seq = _pw3d_sequences(n_seq, ctx.scale)
        n_frames = ctx.plan["3dpw"][split] // n_seq
        names = sorted(f"{PW3D_NAMES[split][s % len(PW3D_NAMES[split])]}{'' if s < len(PW3D_NAMES[split]) else f'_{s}'}" for s in range(n_seq))
        sh_images, sh_anns = [], []
        for seq_index, seq in enumerate(names):
            rng = ctx.rng("3dpw", split, seq)
            n_actors = int(rng.choice([1, 2], p=[0.6, 0.4]))
            heading = float(rng.uniform(-np.pi, np.pi))
            actors = []
            for a in range(n_actors):  # a pair walks side by side, roughly the same way
                side = (a - 0.5 * (n_actors - 1)) * PW3D_PAIR_GAP * np.array([np.cos(heading), 0.0, -np.sin(heading)])
                actors.append(scenes.pw3d_actor(rng, side + np.array([0.0, bodies.BIPED_PELVIS_HEIGHT, 0.0]), heading + float(rng.normal(0, 0.1))))
            poses = [[scenes.actor_pose(act, f) for f in range(n_frames)] for act in actors]
            targets = np.array([np.mean([poses[a][f][0].trans for a in range(n_actors)], axis=0) for f in range(n_frames)])
            cams = scenes.handheld_camera(rng, W, H, targets, n_frames, PW3D_DISTANCE[n_actors])
            bg = scenes.background(rng, W, H)
            valid = [np.ones(n_frames, bool) for _ in actors]
            if n_actors > 1:
                valid[1][-2:] = False  # the second actor's camera pose is unreliable at the end
            joints = [np.zeros((n_frames, 72)) for _ in actors]
            rotvecs = [np.zeros((n_frames, 72)) for _ in actors]
            trans = [np.zeros((n_frames, 3)) for _ in actors]
            poses2d = [np.zeros((n_frames, 3, 18)) for _ in actors]
            for f in range(n_frames):
                figs = [bodies.pose_biped(act.shape, poses[a][f][0], act.palette) for a, act in enumerate(actors)]
                scene = scenes.world_scene(cams[f], figs, bg)
                rel = f"3dpw/imageFiles/{seq}/image_{f:05d}.jpg"
                ctx.image(rel, scene, split, "3dpw")
                sh_image = None
                for a in range(n_actors):
                    J = figs[a].meta["joints"]
                    joints[a][f] = J.reshape(-1)
                    rotvecs[a][f] = matrix_to_rotvec(poses[a][f][0].rotations).reshape(-1)
                    trans[a][f] = poses[a][f][0].trans
                    op, _ = scenes.annotate(scene, a, "openpose18")
                    conf = np.where(op[:, 2] == 2, rng.uniform(0.6, 0.95, 18), np.where(op[:, 2] == 1, rng.uniform(0.1, 0.5, 18), 0.0))
                    xy = np.where((op[:, 2] > 0)[:, None], op[:, :2] + rng.normal(0, 1.0, (18, 2)), 0.0)
                    poses2d[a][f] = np.column_stack([xy, conf]).T
                    if not valid[a][f]:
                        continue
                    kp, _ = scenes.annotate(scene, a, "3dpw")
                    uv_render = kp[:, :2].copy()
                    inside = _inside(uv_render, W, H)
                    if inside.sum() < PW3D_MIN_JOINTS:  # the camera lost this actor: flag the frame as 3DPW does
                        valid[a][f] = False
                        continue
                    truth_kp = np.zeros((24, 3))
                    truth_kp[inside, :2] = uv_render[inside]
                    truth_kp[inside, 2] = 2
                    iid = seq_index * PW3D_IMAGE_ID_STRIDE + f
                    extra = {"sequence": seq, "actor": a, "uv_render": uv_render, "joints_world": J, "E": cams[f].extrinsic, "K": cams[f].K}
                    ctx.add("3dpw", row("3dpw", split, iid, f"{seq}/image_{f:05d}.jpg", W, H, iid * PW3D_ACTOR_STRIDE + a, scenes_box(truth_kp),
                                        truth_kp, 1, "person", image=rel, figure=a, video_id=seq_index, frame_index=f, track_id=a, extra=extra))  # fmt: skip
                    # the ScoreHypo json: camera-frame joints in mm, per image
                    if sh_image is None:
                        image_id += 1
                        sh_image = {"id": image_id, "file_name": f"image_{f:05d}.jpg", "sequence": seq, "width": W, "height": H,
                                    "cam_param": {"focal": [cams[f].fx, cams[f].fy], "princpt": [cams[f].cx, cams[f].cy]}}  # fmt: skip
                        sh_images.append(sh_image)
                    ann_id += 1
                    jc = np.round(cams[f].to_camera(J) * MM, 3)
                    uv_sh = np.stack([cams[f].fx * jc[:, 0] / jc[:, 2] + cams[f].cx, cams[f].fy * jc[:, 1] / jc[:, 2] + cams[f].cy], axis=1)
                    box = np.round(_amodal_box(scene, a), 2)
                    sh_anns.append({"id": ann_id, "image_id": image_id, "bbox": box.tolist(),
                                    "smpl_param": {"shape": list(actors[a].shape.betas), "pose": np.round(rotvecs[a][f], 6).tolist(),
                                                   "trans": np.round(trans[a][f], 6).tolist(), "gender": _PW3D_GENDER[actors[a].shape.gender]},
                                    "smpl_joint_img": np.column_stack([np.round(uv_sh, 3), jc[:, 2]]).tolist(), "smpl_joint_cam": jc.tolist()})  # fmt: skip
                    sh_kp = np.zeros((24, 3))
                    sh_in = _inside(uv_sh, W, H) & (jc[:, 2] > 0)
                    sh_kp[sh_in, :2] = uv_sh[sh_in]
                    sh_kp[sh_in, 2] = 2
                    ctx.truth.extra.setdefault("3dpw_scorehypo", {}).setdefault(split, []).append(
                        row("3dpw", split, image_id, f"{seq}/image_{f:05d}.jpg", W, H, ann_id, box, sh_kp, 1, "person", image=rel, figure=a))
            seq_doc = {
                "sequence": seq,
                "betas": [np.asarray(act.shape.betas, np.float64) for act in actors],
                "poses": rotvecs,
                "trans": trans,
                "poses_60Hz": [_interpolate_60hz(p) for p in rotvecs],
                "trans_60Hz": [_interpolate_60hz(t) for t in trans],
                "genders": [act.shape.gender for act in actors],
                "poses2d": poses2d,
                "jointPositions": joints,
                "cam_poses": np.stack([c.extrinsic for c in cams]),
                "cam_intrinsics": cams[0].K,
                "campose_valid": valid,
                "img_frame_ids": np.arange(n_frames, dtype=np.int64) * PW3D_IMU_FACTOR,
            }
            defects.plant_3dpw(ctx, split, seq_index, seq_doc, f"3dpw/sequenceFiles/{split}/{seq}.pkl")
            ctx.out.write_pickle(f"3dpw/sequenceFiles/{split}/{seq}.pkl", seq_doc)
        ctx.out.write_json(f"3dpw/annotations/3DPW_{split}.json", {"images": sh_images, "annotations": sh_anns})


# ----------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------

BUILDERS = {
    "coco": build_coco, "aic": build_aic, "mpii": build_mpii, "ap10k": build_ap10k, "apt36k": build_apt36k,
    "ochuman": build_ochuman, "crowdpose": build_crowdpose, "interhand": build_interhand, "3dpw": build_3dpw,
}  # fmt: skip


def _groups(datasets) -> list[str]:
    if datasets is None:
        return list(GROUPS)
    wanted = set()
    for d in datasets:
        d = skeletons.get(d).name if d not in GROUPS else d
        group = next((g for g, members in GROUPS.items() if d in members), None)
        if group is None:
            raise KeyError(f"no demo generator for {d!r}; known: {sorted(DATASETS)}")
        wanted.add(group)
    return [g for g in GROUPS if g in wanted]


def generate_demo(
    out_dir: str | Path = DEFAULT_OUT,
    *,
    seed: int = 0,
    scale: float = 1.0,
    datasets=None,
    return_truth: bool = False,
    keep_buffers: bool = False,
):
    """Write the demo releases under ``out_dir`` and return a summary (and the ground truth).

    The same ``seed`` and ``scale`` give byte-identical files. ``datasets`` restricts the
    generation (COCO-WholeBody comes with COCO: same images); files of the generated datasets
    that this run did not write are removed, so a smaller regeneration leaves no stale images.
    The summary has, per dataset, files, bytes and images/instances per split.
    """
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    root = Path(out_dir)
    if root.is_dir() and any(root.iterdir()) and not (root / defects.DEFECTS_FILE).is_file():
        # regeneration deletes stale files: never do that in a folder the generator did not write
        raise ValueError(f"{root} is not empty and holds no {defects.DEFECTS_FILE}: not a demo folder, refusing to write into it")
    t0 = time.perf_counter()
    out = OutputTree(out_dir)
    truth = Truth()
    ctx = Context(out, int(seed), float(scale), truth, keep_buffers, plan(scale))
    groups = _groups(datasets)
    for g in groups:
        BUILDERS[g](ctx)
    for g in groups:
        out.prune(FOLDERS[g])
    summary = _summary(ctx, groups)
    defects.write_defects(ctx, groups)
    if groups == list(GROUPS):  # the README describes the whole folder: only a full run rewrites it
        from posebh.data.demo.readme import readme

        out.write_text("README.md", readme(summary, ctx))
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    return (summary, truth) if return_truth else summary


_SPLIT_ORDER = ("train", "val", "test", "test-dev", "all")


def _summary(ctx: Context, groups: list[str]) -> dict:
    """Files and bytes per folder; images, clean instances and defects per dataset and split."""
    per: dict[str, dict] = {}
    for g in groups:
        folder = FOLDERS[g]
        files = {k: v for k, v in ctx.out.files.items() if k.startswith(folder + "/")}
        per[g] = {"folder": folder, "files": len(files), "bytes": int(sum(files.values())),
                  "jpeg_files": sum(1 for k in files if k.endswith(".jpg")), "splits": {}}  # fmt: skip
        for ds in GROUPS[g]:
            counts: dict[str, dict] = {}
            for entry in ctx.truth.images.values():
                if ds in entry["datasets"]:
                    counts.setdefault(entry["split"], {"images": 0, "instances": 0, "defects": 0})["images"] += 1
            for r in ctx.truth.instances.get(ds, []):
                if r["split"] in counts and not r.get("_defect"):
                    counts[r["split"]]["instances"] += 1
            for d in ctx.truth.defects:
                if d["dataset"] == ds and d["split"] in counts:
                    counts[d["split"]]["defects"] += 1
            per[g]["splits"][ds] = dict(sorted(counts.items(), key=lambda kv: _SPLIT_ORDER.index(kv[0])))
    return {
        "seed": ctx.seed,
        "scale": ctx.scale,
        "out_dir": str(ctx.out.root),
        "datasets": per,
        "total_files": int(sum(p["files"] for p in per.values())),
        "total_bytes": int(sum(p["bytes"] for p in per.values())),
        "plan": ctx.plan,
    }


def reader_sources(root: str | Path = DEFAULT_OUT) -> dict[str, dict[str, tuple[str, dict]]]:
    """How to read each generated file back: ``{dataset: {split: (format, kwargs)}}``.

    ``posebh.data.read(format, split=split, **kwargs)`` reads it; paths are under ``root``.
    Extra entries: ``coco/test-dev`` (image info), ``detections/<name>``, ``3dpw_scorehypo``.
    """
    r = Path(root)

    def p(*parts: str) -> str:
        return str(r.joinpath(*parts))

    coco_ann = lambda name: p("coco", "annotations", name)  # noqa: E731
    out: dict[str, dict[str, tuple[str, dict]]] = {"coco": {}, "coco_wholebody": {}}
    for s in ("train", "val"):
        images = p("coco", f"{s}2017")
        out["coco"][s] = ("coco", {"annotations": coco_ann(f"person_keypoints_{s}2017.json"), "image_root": images})
        out["coco_wholebody"][s] = ("coco_wholebody", {"annotations": coco_ann(f"coco_wholebody_{s}_v1.0.json"), "image_root": images})
    out["coco"]["test-dev"] = ("coco_image_info", {"annotations": coco_ann("image_info_test-dev2017.json"), "image_root": p("coco", "test2017")})
    out["aic"] = {s: ("aic_raw", {"annotations": p("aic", f, a), "image_root": p("aic", f, i)}) for s, (f, a, i) in AIC_RELEASE.items()}
    mpii = {"image_root": p("mpii", "images")}
    out["mpii"] = {
        "train": ("mpii", {"annotations": p("mpii", "annotations", "mpii_train.json"), **mpii}),
        "val": ("mpii", {"annotations": p("mpii", "annotations", "mpii_val.json"), **mpii, "gt_mat": p("mpii", "annotations", "mpii_gt_val.mat")}),
    }
    out["ap10k"] = {
        s: ("coco", {"dataset": "ap10k", "annotations": p("ap10k", "annotations", f"ap10k-{s}-split1.json"), "image_root": p("ap10k", "data")})
        for s in ("train", "val", "test")
    }
    out["apt36k"] = {"all": ("apt36k", {"annotations": p("apt36k", "apt36k_annotations.json"), "image_root": p(*APT36K_IMAGE_ROOT.split("/"))})}
    out["ochuman"] = {
        s: ("coco", {"dataset": "ochuman", "annotations": p(*f.split("/")), "image_root": p("ochuman", "images")}) for s, f in OCHUMAN_FILES.items()
    }
    out["crowdpose"] = {
        s: ("coco", {"dataset": "crowdpose", "annotations": p("crowdpose", "annotations", f"crowdpose_{s}.json"), "image_root": p("crowdpose", "images")})
        for s in ("val", "test")
    }
    out["interhand"] = {}
    for s, subset in INTERHAND_SUBSETS.items():
        files = {kind: p("interhand", "annotations", subset, f"InterHand2.6M_{s}_{kind}.json") for kind in ("data", "camera", "joint_3d")}
        out["interhand"][s] = ("interhand", {**files, "image_root": p("interhand", "images", s)})
    frames = p("3dpw", "imageFiles")
    out["3dpw"] = {s: ("3dpw_sequences", {"sequences": p("3dpw", "sequenceFiles", s), "image_root": frames}) for s in PW3D_SEQUENCES}
    out["3dpw_scorehypo"] = {s: ("3dpw_scorehypo", {"annotations": p("3dpw", "annotations", f"3DPW_{s}.json"), "image_root": frames}) for s in PW3D_SEQUENCES}
    dets = p("coco", "person_detection_results")
    out["detections"] = {
        "coco_val": ("detections", {"annotations": str(Path(dets) / "COCO_val2017_detections_AP_H_56_person.json")}),
        "coco_test-dev": ("detections", {"annotations": str(Path(dets) / "COCO_test-dev2017_detections_AP_H_609_person.json")}),
        "crowdpose_test": ("detections", {"dataset": "crowdpose", "annotations": p("crowdpose", "annotations", "det_for_crowd_test_0.1_0.5.json")}),
    }
    return out
