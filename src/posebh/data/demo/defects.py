"""Planted defects: a handful of bad rows per dataset, on purpose, listed in ``DEFECTS.json``.

Real releases have bad rows (a visibility of 3, a zero-width box, a duplicated id, a path with
``..``); the ingest pipeline must quarantine exactly those and nothing else. Each planter edits a
release document just before it is written, marks the ground-truth row, and records one entry:
dataset, split, file, the row's ``instance_id`` as the reader assigns it, a locator in the
release's own terms, the defect, and the validation check expected to catch it (``reader_issue``
when the reader itself cannot convert the row).

Edits never mutate shared lists in place (COCO and COCO-WholeBody share annotation values).
"""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING

import numpy as np

from posebh import skeletons

if TYPE_CHECKING:  # pragma: no cover
    from posebh.data.demo.generate import Context

DEFECTS_FILE = "DEFECTS.json"
#: Visibility value outside {0, 1, 2} (COCO family) used by the planted rows.
BAD_VISIBILITY = 3
#: A "far outside" keypoint sits at this multiple of the image width.
FAR_OUTSIDE_FACTOR = 4


def _record(ctx: Context, dataset: str, split: str, file: str, instance_id: int, defect: str, check: str, description: str, *, mark: bool = True, **locator) -> None:
    """One DEFECTS.json entry; ``mark`` also flags the first clean truth row with that id."""
    ctx.truth.defects.append({
        "dataset": dataset, "split": split, "file": file, "instance_id": int(instance_id), "defect": defect,
        "check": check, "description": description, "locator": locator,
    })  # fmt: skip
    if not mark:
        return
    for r in ctx.truth.instances.get(dataset, []):
        if r["split"] == split and r["instance_id"] == instance_id and not r.get("_defect"):
            r["_defect"] = defect
            break


def _pick(rng: np.random.Generator, items: list, n: int, taken: set) -> list:
    """``n`` distinct items not yet used by another defect, in a seeded random order."""
    free = [i for i in range(len(items)) if i not in taken]
    chosen = [int(i) for i in rng.choice(free, size=min(n, len(free)), replace=False)]
    taken.update(chosen)
    return chosen


def _labelled_index(keypoints: list, rng: np.random.Generator) -> int:
    v = np.asarray(keypoints[2::3], np.float64)
    idx = np.flatnonzero(v > 0)
    return int(rng.choice(idx)) if len(idx) else 0


def _set_keypoint(ann: dict, key: str, k: int, x=None, v=None) -> None:
    kps = list(ann[key])
    if x is not None:
        kps[3 * k] = x
    if v is not None:
        kps[3 * k + 2] = v
    ann[key] = kps


def _coco_like(ctx: Context, dataset: str, split: str, doc: dict, file: str, rng: np.random.Generator, kinds: tuple[str, ...], taken: set | None = None, kp_key: str = "keypoints") -> None:
    """Plant ``kinds`` of defects in a COCO-style document (non-crowd annotations only)."""
    anns = doc["annotations"]
    taken = set() if taken is None else taken
    crowd_key = "is_crowd" if dataset == "apt36k" else "iscrowd"
    taken.update(i for i, a in enumerate(anns) if a.get(crowd_key))
    width = {im["id"]: im["width"] for im in doc["images"]}
    for kind in kinds:
        if kind == "duplicate_id":
            i, j = sorted(_pick(rng, anns, 2, taken))
            original, dup = anns[j]["id"], anns[i]["id"]
            anns[j] = dict(anns[j], id=dup)
            _mark_renamed(ctx, dataset, split, original, dup)
            _record(ctx, dataset, split, file, dup, "duplicate_id", "unique_instance_id",
                    f"annotation id {dup} used twice; the second occurrence (file position {j}) is the bad row",
                    mark=False, annotation_id=dup, occurrence=2, position=j)  # fmt: skip
            continue
        (i,) = _pick(rng, anns, 1, taken)
        ann = anns[i]
        aid = ann["id"]
        if kind == "visibility":
            k = _labelled_index(ann[kp_key], rng)
            _set_keypoint(ann, kp_key, k, v=BAD_VISIBILITY)
            _record(ctx, dataset, split, file, aid, "visibility_3", "visibility_values", f"keypoint {k} of {kp_key!r} has visibility 3", annotation_id=aid, keypoint=k)
        elif kind == "zero_width":
            ann["bbox"] = [ann["bbox"][0], ann["bbox"][1], 0 * ann["bbox"][2], ann["bbox"][3]]
            _record(ctx, dataset, split, file, aid, "zero_width_box", "bbox_positive", "bbox width is 0", annotation_id=aid)
        elif kind == "zero_height":
            ann["bbox"] = [ann["bbox"][0], ann["bbox"][1], ann["bbox"][2], 0 * ann["bbox"][3]]
            _record(ctx, dataset, split, file, aid, "zero_height_box", "bbox_positive", "bbox height is 0", annotation_id=aid)
        elif kind == "short_keypoints":
            ann[kp_key] = list(ann[kp_key])[:-3]
            _record(ctx, dataset, split, file, aid, "keypoint_count", "reader_issue", f"{kp_key!r} is one keypoint short", annotation_id=aid)
        elif kind == "far_outside":
            k = _labelled_index(ann[kp_key], rng)
            far = FAR_OUTSIDE_FACTOR * width[ann["image_id"]]
            _set_keypoint(ann, kp_key, k, x=type(ann[kp_key][3 * k])(far))
            _record(ctx, dataset, split, file, aid, "keypoint_far_outside", "keypoints_inside_image",
                    f"keypoint {k} at x = {far}, far outside the image", annotation_id=aid, keypoint=k)  # fmt: skip
        else:  # pragma: no cover - a planter asked for an unknown kind
            raise ValueError(kind)


def _mark_renamed(ctx: Context, dataset: str, split: str, old_id: int, new_id: int) -> None:
    """The truth row of a re-numbered annotation carries the id the file now gives it."""
    for r in ctx.truth.instances.get(dataset, []):
        if r["split"] == split and r["instance_id"] == old_id:
            r["instance_id"] = new_id
            r["_defect"] = "duplicate_id"
            r["_occurrence"] = 2
            break


def _unsafe_image(ctx: Context, dataset: str, split: str, doc: dict, file: str, rng: np.random.Generator, taken: set, make_name) -> None:
    """Give one image a file name that escapes the image root; every annotation on it is bad."""
    anns = doc["annotations"]
    per_image: dict[int, list[int]] = {}
    for i, a in enumerate(anns):
        per_image.setdefault(a["image_id"], []).append(i)
    candidates = [im for im in doc["images"] if per_image.get(im["id"]) and not taken & set(per_image[im["id"]])]
    image = candidates[int(rng.integers(len(candidates)))]
    bad = make_name(image["file_name"])
    pos = doc["images"].index(image)
    doc["images"][pos] = dict(image, file_name=bad)
    for i in per_image[image["id"]]:
        taken.add(i)
        _record(ctx, dataset, split, file, anns[i]["id"], "unsafe_file_name", "reader_issue", f"image file name {bad!r} escapes the image root",
                annotation_id=anns[i]["id"], image_id=image["id"], file_name=bad)  # fmt: skip


def plant_coco(ctx: Context, docs: dict, wb_docs: dict) -> None:
    rng = ctx.rng("coco", "defects")
    taken = {"train": set(), "val": set()}
    _unsafe_image(ctx, "coco", "train", docs["train"], "coco/annotations/person_keypoints_train2017.json", rng, taken["train"], lambda n: f"../train2017/{n}")
    _coco_like(ctx, "coco", "train", docs["train"], "coco/annotations/person_keypoints_train2017.json", rng,
               ("visibility", "zero_width", "short_keypoints", "duplicate_id"), taken["train"])  # fmt: skip
    _coco_like(ctx, "coco", "val", docs["val"], "coco/annotations/person_keypoints_val2017.json", rng, ("far_outside",), taken["val"])
    wb_rng = ctx.rng("coco_wholebody", "defects")
    for split, kinds in (("train", ("face_short",)), ("val", ("hand_visibility",))):
        doc = wb_docs[split]
        file = f"coco/annotations/coco_wholebody_{split}_v1.0.json"
        valid = [i for i, a in enumerate(doc["annotations"]) if a.get("face_valid" if kinds[0] == "face_short" else "lefthand_valid")]
        i = valid[int(wb_rng.integers(len(valid)))]
        ann = doc["annotations"][i]
        if kinds[0] == "face_short":
            ann["face_kpts"] = list(ann["face_kpts"])[:-3]
            _record(ctx, "coco_wholebody", split, file, ann["id"], "keypoint_count", "reader_issue", "'face_kpts' is one point short", annotation_id=ann["id"])
        else:
            k = _labelled_index(ann["lefthand_kpts"], wb_rng)
            _set_keypoint(ann, "lefthand_kpts", k, v=float(BAD_VISIBILITY))
            _record(ctx, "coco_wholebody", split, file, ann["id"], "visibility_3", "visibility_values", f"left-hand point {k} has visibility 3.0",
                    annotation_id=ann["id"], keypoint=skeletons.get("coco_wholebody").parts["left_hand"][0] + k)  # fmt: skip


def plant_aic(ctx: Context, split: str, records: list[dict], file: str) -> None:
    rng = ctx.rng("aic", "defects", split)
    humans = [(r, h) for r, rec in enumerate(records) for h in sorted(rec["human_annotations"])]
    kinds = ("raw_visibility_0", "inverted_box", "short_keypoints") if split == "train" else ("far_outside",)
    taken: set = set()
    for kind in kinds:
        (i,) = _pick(rng, humans, 1, taken)
        r, human = humans[i]
        rec = records[r]
        truth = next(t for t in ctx.truth.instances["aic"] if t["split"] == split and t["extra"]["image_hash"] == rec["image_id"] and t["extra"]["human"] == human)
        kps = list(rec["keypoint_annotations"][human])
        if kind == "raw_visibility_0":
            k = int(rng.integers(len(kps) // 3))
            kps[3 * k + 2] = 0
            check, text = "reader_issue", f"keypoint {k} has raw visibility 0 (raw AIC uses 1, 2, 3)"
        elif kind == "inverted_box":
            x1, y1, x2, y2 = rec["human_annotations"][human]
            rec["human_annotations"] = dict(rec["human_annotations"], **{human: [x2, y1, x1, y2]})
            check, text = "bbox_positive", "corner box with x2 < x1"
        elif kind == "short_keypoints":
            kps = kps[:-3]
            check, text = "reader_issue", "keypoint list is one keypoint short"
        else:
            vis = [k for k in range(len(kps) // 3) if kps[3 * k + 2] in (1, 2)]
            k = vis[int(rng.integers(len(vis)))]
            kps[3 * k] = int(FAR_OUTSIDE_FACTOR * truth["width"])
            check, text = "keypoints_inside_image", f"keypoint {k} far outside the image"
        rec["keypoint_annotations"] = dict(rec["keypoint_annotations"], **{human: kps})
        defect = {"short_keypoints": "keypoint_count", "far_outside": "keypoint_far_outside"}.get(kind, kind)
        _record(ctx, "aic", split, file, truth["instance_id"], defect, check, text, image_id=rec["image_id"], human=human)


def plant_mpii(ctx: Context, split: str, entries: list[dict], file: str) -> None:
    rng = ctx.rng("mpii", "defects", split)
    taken: set = set()
    if split == "train":
        (i,) = _pick(rng, entries, 1, taken)
        bad = f"../images/{entries[i]['image']}"
        entries[i] = dict(entries[i], image=bad)
        _record(ctx, "mpii", split, file, i + 1, "unsafe_file_name", "reader_issue", f"image {bad!r} escapes the image root", position=i, image=bad)
        (i,) = _pick(rng, entries, 1, taken)
        entries[i] = dict(entries[i], joints=entries[i]["joints"][:-1])
        _record(ctx, "mpii", split, file, i + 1, "keypoint_count", "reader_issue", "15 joints for 16 joints_vis", position=i, image=entries[i]["image"])
    else:
        (i,) = _pick(rng, entries, 1, taken)
        vis = [k for k, v in enumerate(entries[i]["joints_vis"]) if v]
        k = vis[int(rng.integers(len(vis)))]
        joints = [list(j) for j in entries[i]["joints"]]
        width = next(t["width"] for t in ctx.truth.instances["mpii"] if t["split"] == split and t["instance_id"] == i + 1)
        joints[k][0] = float(FAR_OUTSIDE_FACTOR * width)
        entries[i] = dict(entries[i], joints=joints)
        _record(ctx, "mpii", split, file, i + 1, "keypoint_far_outside", "keypoints_inside_image", f"joint {k} far outside the image", position=i, image=entries[i]["image"], joint=k)


def plant_ap10k(ctx: Context, docs: dict) -> None:
    rng = ctx.rng("ap10k", "defects")
    _coco_like(ctx, "ap10k", "train", docs["train"], "ap10k/annotations/ap10k-train-split1.json", rng, ("visibility", "zero_height", "duplicate_id"))
    _coco_like(ctx, "ap10k", "val", docs["val"], "ap10k/annotations/ap10k-val-split1.json", rng, ("far_outside",))


def plant_apt36k(ctx: Context, doc: dict) -> None:
    rng = ctx.rng("apt36k", "defects")
    file = "apt36k/apt36k_annotations.json"
    taken: set = set()
    _unsafe_image(ctx, "apt36k", "all", doc, file, rng, taken, lambda n: "\\".join(n.split("\\")[:-3] + ["..", "..", n.split("\\")[-1]]))
    _coco_like(ctx, "apt36k", "all", doc, file, rng, ("duplicate_id", "visibility"), taken)


def plant_ochuman(ctx: Context, split: str, doc: dict, file: str) -> None:
    _coco_like(ctx, "ochuman", split, doc, file, ctx.rng("ochuman", "defects", split), ("far_outside",) if split == "val" else ("visibility",))


def plant_crowdpose(ctx: Context, split: str, doc: dict, file: str) -> None:
    _coco_like(ctx, "crowdpose", split, doc, file, ctx.rng("crowdpose", "defects", split), ("zero_width",) if split == "val" else ("visibility",))


def plant_interhand(ctx: Context, split: str, data: dict, file: str) -> None:
    if split != "train":
        return
    rng = ctx.rng("interhand", "defects")
    sk = skeletons.get("interhand")
    anns = data["annotations"]
    from posebh.data.demo.generate import INTERHAND_SIDES

    n_sides = len(INTERHAND_SIDES)
    i = int(rng.integers(len(anns)))
    hand = "left" if anns[i]["hand_type"] == "left" else "right"
    side = INTERHAND_SIDES.index(hand)
    root = side * sk.num_keypoints + sk.index("wrist")
    anns[i] = dict(anns[i], joint_valid=[[0] if j == root else list(v) for j, v in enumerate(anns[i]["joint_valid"])])
    _record(ctx, "interhand", split, file, n_sides * anns[i]["id"] + side, "root_invalid", "reader_issue",
            f"{hand} wrist invalid: the whole {hand} hand becomes invalid (no valid joint)", annotation_id=anns[i]["id"], hand=hand)  # fmt: skip
    others = [j for j in range(len(anns)) if j != i]
    j = others[int(rng.integers(len(others)))]
    anns[j] = dict(anns[j], joint_valid=anns[j]["joint_valid"][:-1])
    named = INTERHAND_SIDES if anns[j]["hand_type"] == "interacting" else (anns[j]["hand_type"],)
    for hand in named:
        _record(ctx, "interhand", split, file, n_sides * anns[j]["id"] + INTERHAND_SIDES.index(hand), "keypoint_count", "reader_issue",
                f"joint_valid has {len(anns[j]['joint_valid'])} entries for {n_sides * sk.num_keypoints} joints", annotation_id=anns[j]["id"], hand=hand)  # fmt: skip


def plant_3dpw(ctx: Context, split: str, seq_index: int, seq: dict, file: str) -> None:
    if split != "train" or seq_index != 0:
        return
    rng = ctx.rng("3dpw", "defects")
    n = len(seq["cam_poses"])
    frame = int(rng.integers(1, n - 1))
    positions = seq["jointPositions"][0].copy()
    positions[frame, : 3 * 3] = np.nan
    seq["jointPositions"] = [positions] + list(seq["jointPositions"][1:])
    from posebh.data.demo.generate import PW3D_ACTOR_STRIDE, PW3D_IMAGE_ID_STRIDE

    iid = (seq_index * PW3D_IMAGE_ID_STRIDE + frame) * PW3D_ACTOR_STRIDE
    _record(ctx, "3dpw", split, file, iid, "nan_joints", "reader_issue", f"actor 0 has NaN joint positions at frame {frame}",
            sequence=seq["sequence"], actor=0, frame=frame)  # fmt: skip


def write_defects(ctx: Context, groups: list[str]) -> None:
    """DEFECTS.json, merged with entries of datasets this run did not regenerate."""
    from posebh.data.demo.generate import GROUPS

    regenerated = {d for g in groups for d in GROUPS[g]}
    path = ctx.out.path(DEFECTS_FILE)
    kept = []
    if path.is_file():
        try:
            kept = [d for d in json.loads(path.read_text())["defects"] if d["dataset"] not in regenerated]
        except (ValueError, KeyError, TypeError):
            kept = []
    entries = sorted(kept + ctx.truth.defects, key=lambda d: (d["dataset"], d["split"], d["instance_id"], d["defect"]))
    ctx.out.write_bytes(DEFECTS_FILE, (json.dumps({"seed": ctx.seed, "scale": ctx.scale, "defects": entries}, indent=1) + "\n").encode())
