"""3DPW: the official sequence pickles and the ScoreHypo / 3DCrowdNet json PoseBH starts from.

Both readers give one row per (actor, image) with the 24 SMPL joints projected into the image by
:func:`posebh.data.pw3d.smpl_instances`, and keep the camera-frame joints and intrinsics in
``extra`` so the prepare step can re-project with its own parameters
(:func:`posebh.data.pw3d.reproject_3dpw`).

Sequence pickles (``3dpw_sequences``): frames whose ``campose_valid`` is false for an actor are
not instances of that actor (the camera pose is unreliable there); they are not rows, and their
count is reported in ``df.attrs["invalid_campose_frames"]`` (total) and
``df.attrs["invalid_campose_frames_by_sequence"]`` so nothing disappears silently.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from posebh import skeletons
from posebh.data import register_reader
from posebh.data.errors import DataFileError, UnsafePathError
from posebh.data.io import image_size_under, index_by_id, load_json, lookup_image, require_keys
from posebh.data.paths import relative_file_name
from posebh.data.projection import intrinsics_from_K, project_pinhole, world_to_camera
from posebh.data.pw3d import (
    DATASET,
    DEFAULT_BOX_PADDING,
    DEFAULT_MIN_DEPTH,
    INTRINSICS_KEY,
    JOINTS_CAM_KEY,
    RELEASE_BBOX_KEY,
    issues_for,
    smpl_instances,
)
from posebh.data.io import NO_IMAGE_ROOT
from posebh.data.safe_pickle import safe_load
from posebh.data.schema import ISSUE_SEPARATOR, concat, make_table

#: image_id = sequence index * FRAME_ID_STRIDE + frame (3DPW sequences have < 2000 frames)
FRAME_ID_STRIDE = 100_000
#: instance_id = image_id * ACTOR_ID_STRIDE + actor (3DPW has at most 2 actors)
ACTOR_ID_STRIDE = 10
#: decimals kept for camera-frame joints in ``extra``; the keypoints are computed from the
#: rounded values so a later re-projection reproduces them exactly
JOINTS_CAM_DECIMALS = 6
SEQUENCE_KEYS = ("sequence", "jointPositions", "cam_poses", "cam_intrinsics", "campose_valid")
SCOREHYPO_JOINTS_CAM = "smpl_joint_cam"
SCOREHYPO_JOINTS_IMG = "smpl_joint_img"
_FRAME_NUMBER = re.compile(r"(\d+)\D*$")


def frame_file_name(sequence: str, frame: int) -> str:
    """The official image path of a frame, relative to ``imageFiles``."""
    return f"{sequence}/image_{frame:05d}.jpg"


def _sequence_files(sequences) -> list[Path]:
    if isinstance(sequences, (str, Path)) and Path(sequences).is_dir():
        files = sorted(Path(sequences).glob("*.pkl"))
        if not files:
            raise DataFileError(sequences, "no .pkl sequence files in this folder")
        return files
    if isinstance(sequences, (str, Path)):
        return [Path(sequences)]
    return sorted((Path(s) for s in sequences), key=lambda p: p.stem)


def _numeric(value, key: str, path: Path) -> np.ndarray:
    """``value`` as float64, or a DataFileError naming the file and the key (strings, ragged lists)."""
    try:
        return np.asarray(value, np.float64)
    except (TypeError, ValueError) as e:
        raise DataFileError(path, f"{key!r} is not numeric ({type(e).__name__}: {e})") from None


def _per_actor(seq: dict, key: str, path: Path, n_frames: int, width: int | None) -> list[np.ndarray]:
    value = seq[key]
    if not isinstance(value, (list, tuple)) or not value:
        raise DataFileError(path, f"{key!r} must be a non-empty list over actors")
    out = []
    for a, v in enumerate(value):
        arr = _numeric(v, key, path)
        shape = (n_frames,) if width is None else (n_frames, width)
        if arr.shape != shape:
            raise DataFileError(path, f"{key!r}[{a}] has shape {arr.shape}, expected {shape}")
        out.append(arr)
    return out


def _instance_extra(joints_cam: np.ndarray, intrinsics: np.ndarray, **fields) -> dict:
    """The fields :func:`reproject_3dpw` reads; non-finite joints are stored as null (strict JSON)."""
    finite = np.isfinite(joints_cam).all()
    return {JOINTS_CAM_KEY: joints_cam.tolist() if finite else None, INTRINSICS_KEY: intrinsics.tolist(), **fields}


@register_reader("3dpw_sequences")
def read_3dpw_sequences(
    *,
    sequences,
    split: str,
    dataset: str = DATASET,
    image_root: str | Path | None = None,
    box_padding: float = DEFAULT_BOX_PADDING,
    min_depth: float = DEFAULT_MIN_DEPTH,
) -> pd.DataFrame:
    """Read official ``sequenceFiles/<split>/*.pkl`` (a folder, one file, or a list of files).

    Sequences are numbered in file-name order; ``video_id`` is that number, ``frame_index`` the
    image frame and ``track_id`` the actor. Image sizes come from each sequence's first frame
    under ``image_root`` (the ``imageFiles`` folder); without it, the image bounds are not
    checked and the rows carry an issue.
    """
    k = skeletons.get(DATASET).num_keypoints
    tables, invalid_by_seq = [], {}
    for seq_index, path in enumerate(_sequence_files(sequences)):
        seq = safe_load(path)
        if not isinstance(seq, dict):
            raise DataFileError(path, f"expected a dict, found {type(seq).__name__}")
        missing = [key for key in SEQUENCE_KEYS if key not in seq]
        if missing:
            raise DataFileError(path, f"missing key(s) {missing}")
        name = str(seq["sequence"])
        cam_poses = _numeric(seq["cam_poses"], "cam_poses", path)
        if cam_poses.ndim != 3 or cam_poses.shape[1:] != (4, 4):
            raise DataFileError(path, f"'cam_poses' has shape {cam_poses.shape}, expected (N, 4, 4)")
        n_frames = len(cam_poses)
        if n_frames >= FRAME_ID_STRIDE:
            raise DataFileError(path, f"{n_frames} frames exceed the image-id stride {FRAME_ID_STRIDE}")
        K = _numeric(seq["cam_intrinsics"], "cam_intrinsics", path)
        if K.shape != (3, 3):
            raise DataFileError(path, f"'cam_intrinsics' has shape {K.shape}, expected (3, 3)")
        positions = _per_actor(seq, "jointPositions", path, n_frames, 3 * k)
        valid = _per_actor(seq, "campose_valid", path, n_frames, None)
        if len(valid) != len(positions):
            raise DataFileError(path, f"{len(valid)} campose_valid entries for {len(positions)} actors")
        if len(positions) >= ACTOR_ID_STRIDE:
            raise DataFileError(path, f"{len(positions)} actors exceed the instance-id stride {ACTOR_ID_STRIDE}")
        genders = list(seq.get("genders", []))
        usable = np.stack(valid).astype(bool)  # (actors, frames)
        invalid_by_seq[name] = int((~usable).sum())

        frames, actors = np.nonzero(usable.T)  # frame order, then actor
        n = len(frames)
        world = np.stack(positions).astype(np.float64)[actors, frames].reshape(n, k, 3)
        E = cam_poses[frames]
        joints_cam = np.round(world_to_camera(world, E[:, None, :3, :3], E[:, None, :3, 3]), JOINTS_CAM_DECIMALS)
        joints_ok = np.isfinite(joints_cam).all(axis=(1, 2))

        seq_issue = []
        try:
            safe_name = relative_file_name(name)
            if "/" in safe_name:
                raise UnsafePathError(name, "sequence name contains a path separator")
        except UnsafePathError as e:
            seq_issue.append(f"unsafe sequence name: {e.problem}")
        size = image_size_under(image_root, frame_file_name(name, 0))[0] if not seq_issue else None
        if size is None:
            seq_issue.append(NO_IMAGE_ROOT if image_root is None else "first frame image missing or unreadable")
        W, H = size or (0, 0)

        intr = np.round(np.stack(intrinsics_from_K(K)), JOINTS_CAM_DECIMALS)
        inst = smpl_instances(
            np.where(joints_ok[:, None, None], joints_cam, 0.0),
            intr,
            W or np.inf,
            H or np.inf,
            box_padding=box_padding,
            min_depth=min_depth,
        )
        image_ids = seq_index * FRAME_ID_STRIDE + frames
        issues = issues_for([ISSUE_SEPARATOR.join(seq_issue) or None] * n, joints_ok, inst.num_keypoints)
        extra = [
            _instance_extra(
                joints_cam[r],
                intr,
                sequence=name,
                actor=int(actors[r]),
                gender=str(genders[actors[r]]) if actors[r] < len(genders) else None,
            )
            for r in range(n)
        ]
        tables.append(
            make_table(
                {
                    "dataset": dataset,
                    "split": split,
                    "image_id": image_ids,
                    "file_name": [frame_file_name(name, int(f)) for f in frames],
                    "width": W,
                    "height": H,
                    "instance_id": image_ids * ACTOR_ID_STRIDE + actors,
                    "bbox": np.where(joints_ok[:, None], inst.bbox, 0.0),
                    "area": np.where(joints_ok, inst.area, 0.0),
                    "iscrowd": 0,
                    "keypoints": np.where(joints_ok[:, None], inst.keypoints, np.nan),
                    "num_keypoints": np.where(joints_ok, inst.num_keypoints, 0),
                    "category_id": 1,
                    "category": skeletons.get(DATASET).category,
                    "video_id": np.full(n, seq_index),
                    "frame_index": frames,
                    "track_id": actors,
                    "extra": extra,
                    "issue": issues,
                },
                n,
            )
        )
    df = concat(tables)
    df.attrs["invalid_campose_frames"] = int(sum(invalid_by_seq.values()))
    df.attrs["invalid_campose_frames_by_sequence"] = invalid_by_seq
    return df


@register_reader("3dpw_scorehypo")
def read_3dpw_scorehypo(
    *,
    annotations: str | Path,
    split: str,
    dataset: str = DATASET,
    image_root: str | Path | None = None,
    box_padding: float = DEFAULT_BOX_PADDING,
    min_depth: float = DEFAULT_MIN_DEPTH,
) -> pd.DataFrame:
    """Read ScoreHypo's ``3DPW_{train,test}.json`` (COCO-like, per-image camera).

    ``smpl_joint_cam`` is projected with the image's ``cam_param`` (focal, princpt); where the
    file also has ``smpl_joint_img`` the largest pixel difference to it is kept in ``extra``
    (``joint_img_max_difference``). The row's box is the release's own ``bbox`` (the GT box
    PoseBH trains and evaluates with) when it is positive, else the joint box; ``extra``
    ``bbox_source`` says which. ``video_id`` numbers the sequences in name order.
    """
    path = Path(annotations)
    d = load_json(path)
    require_keys(d, ("images", "annotations"), path)
    if not isinstance(d["images"], list) or not isinstance(d["annotations"], list):
        raise DataFileError(path, "'images' and 'annotations' must be lists")
    images, repeated = index_by_id(d["images"])
    anns = d["annotations"]
    skel = skeletons.get(DATASET)
    k, n = skel.num_keypoints, len(anns)
    seq_names = sorted({str(img.get("sequence")) for img in images.values()})
    seq_index = {s: i for i, s in enumerate(seq_names)}

    joints_cam = np.zeros((n, k, 3))
    intr = np.ones((n, 4))
    W, H = np.zeros(n, np.int64), np.zeros(n, np.int64)
    ok = np.zeros(n, bool)
    issues: list[list[str]] = [[] for _ in range(n)]
    rows: list[dict] = []
    size_cache: dict[str, tuple[int, int] | None] = {}
    for i, ann in enumerate(anns):
        ann = ann if isinstance(ann, dict) else {}
        img, ambiguous = lookup_image(images, repeated, ann.get("image_id"))
        row = {"image_id": -1, "file_name": "", "video_id": None, "frame_index": None, "instance_id": -1}
        rows.append(row)
        if not ann or not img:
            issues[i].append(f"image {ann.get('image_id')!r} not in images" if ann else "malformed annotation entry")
            continue
        if ambiguous:
            issues[i].append(ambiguous)
        row["instance_id"] = ann.get("id") if isinstance(ann.get("id"), int) else -1
        row["image_id"] = img["id"] if isinstance(img["id"], int) else -1
        sequence, raw_name = str(img.get("sequence")), str(img.get("file_name", ""))
        try:
            row["file_name"] = relative_file_name(f"{sequence}/{raw_name}")
        except UnsafePathError as e:
            row["file_name"] = f"{sequence}/{raw_name}"
            issues[i].append(f"unsafe file name: {e.problem}")
        row["video_id"] = seq_index[sequence]
        m = _FRAME_NUMBER.search(Path(raw_name).stem)
        row["frame_index"] = int(m.group(1)) if m else None
        try:
            cp = img["cam_param"]
            intr[i, :2] = np.asarray(cp["focal"], np.float64).reshape(2)
            intr[i, 2:] = np.asarray(cp["princpt"], np.float64).reshape(2)
            joints_cam[i] = np.asarray(ann[SCOREHYPO_JOINTS_CAM], np.float64).reshape(k, 3)
            ok[i] = np.isfinite(joints_cam[i]).all() and np.isfinite(intr[i]).all()
        except (KeyError, TypeError, ValueError) as e:
            issues[i].append(f"camera or {SCOREHYPO_JOINTS_CAM} unusable ({type(e).__name__}: {e})")
            continue
        w, h = img.get("width"), img.get("height")
        if isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0:
            W[i], H[i] = w, h
        else:
            name = row["file_name"]
            if name not in size_cache:
                size_cache[name] = image_size_under(image_root, name)[0]
            if size_cache[name] is None:
                issues[i].append("image size unknown")
            else:
                W[i], H[i] = size_cache[name]

    inst = smpl_instances(
        np.where(ok[:, None, None], joints_cam, 0.0),
        np.where(ok[:, None], intr, 1.0),
        np.where(W > 0, W, np.inf),
        np.where(H > 0, H, np.inf),
        box_padding=box_padding,
        min_depth=min_depth,
    )
    uv, depth = project_pinhole(joints_cam, *(intr[:, j, None] for j in range(4)))
    comparable = ok[:, None] & (depth > 0) & np.isfinite(uv).all(axis=-1)
    bbox = np.where(ok[:, None], inst.bbox, 0.0)
    extra = []
    for i, ann in enumerate(anns):
        ann = ann if isinstance(ann, dict) else {}
        e = _instance_extra(joints_cam[i], intr[i]) if ok[i] else {}
        e["bbox_source"] = "joints"
        release_box = _positive_box(ann.get("bbox"))
        if release_box is not None:
            bbox[i] = release_box
            e["bbox_source"] = "release"
            e[RELEASE_BBOX_KEY] = release_box.tolist()
        if ok[i] and SCOREHYPO_JOINTS_IMG in ann:
            e["joint_img_max_difference"] = _max_difference(ann[SCOREHYPO_JOINTS_IMG], uv[i], comparable[i], k)
        extra.append(e)

    issue_col = issues_for([ISSUE_SEPARATOR.join(m) or None for m in issues], ok, inst.num_keypoints)
    image_ids = np.asarray([r["image_id"] for r in rows], np.int64)
    return make_table(
        {
            "dataset": dataset,
            "split": split,
            "image_id": image_ids,
            "file_name": [r["file_name"] for r in rows],
            "width": W,
            "height": H,
            "instance_id": np.asarray([r["instance_id"] for r in rows], np.int64),
            "bbox": bbox,
            "area": np.where(ok, skeletons.oks_area(bbox, skel.area_rule), 0.0),
            "iscrowd": 0,
            "keypoints": np.where(ok[:, None], inst.keypoints, np.nan),
            "num_keypoints": np.where(ok, inst.num_keypoints, 0),
            "category_id": 1,
            "category": skel.category,
            "video_id": pd.array([r["video_id"] for r in rows], dtype="Int64"),
            "frame_index": pd.array([r["frame_index"] for r in rows], dtype="Int64"),
            "extra": extra,
            "issue": issue_col,
        },
        n,
    )


def _positive_box(box) -> np.ndarray | None:
    try:
        b = np.asarray(box, np.float64).reshape(4)
    except (TypeError, ValueError):
        return None
    return b if np.isfinite(b).all() and b[2] > 0 and b[3] > 0 else None


def _max_difference(joint_img, uv: np.ndarray, labelled: np.ndarray, k: int) -> float | None:
    """Largest pixel distance between the release's projection and ours (joints in front)."""
    try:
        ref = np.asarray(joint_img, np.float64).reshape(k, 3)[:, :2]
    except (TypeError, ValueError):
        return None
    if not labelled.any():
        return None
    return float(np.linalg.norm(ref[labelled] - uv[labelled], axis=1).max())
