"""``posebh predict``: any dataset's keypoints on any image with a trained checkpoint.

Cross-skeleton prediction is the point: ``--skeleton ap10k`` on a photo of a person runs the AP-10K
expert and head (reference posebh-method.md 4.2, the released route); ``--prototypes`` queries the
skeleton's keypoints through the prototype heatmap instead of the head (the prototype route,
visualisation only). Cropping, flip test and decoding are
:func:`posebh.evaluation.inference.predict_image`'s, with the skeleton's protocol
(:func:`posebh.evaluation.protocols.get_protocol`), so a prediction here equals the one the metrics
see for the same box.

Checkpoints: a whole PoseBH (:func:`posebh.models.checkpoints.save_model`), one per-dataset file of
a split (:func:`posebh.models.export.save_split`; ``--prototypes`` then reads ``prototypes.pt`` next
to it), or an official ViTPose++/PoseBH checkpoint (imported with the paper's six datasets).

Results are in the COCO results format, ``[{image_id, category_id, keypoints, score, bbox}]``;
``score`` is mmpose's rescoring (box score x mean keypoint score above 0.2). No OKS-NMS is applied:
the boxes are the caller's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from posebh import skeletons

#: The skeletons the command is documented for (any registered skeleton is accepted).
PREDICT_SKELETONS: tuple[str, ...] = ("coco", "aic", "mpii", "ap10k", "apt36k", "wholebody", "interhand", "3dpw")
#: Skeletons no multi-dataset model has: they come from a transfer checkpoint.
TRANSFER_SKELETONS = frozenset({"interhand", "3dpw"})
#: Detection boxes below this score are skipped (mmpose's top-down demo ``--bbox-thr``).
DEFAULT_MIN_SCORE = 0.3
#: COCO's person category: the results' category when the boxes carry none.
DEFAULT_CATEGORY_ID = 1


class PredictError(ValueError):
    """A user-facing problem with the inputs of ``posebh predict`` (one line, no traceback)."""


# ----------------------------------------------------------------------------------------------
# What a checkpoint can predict
# ----------------------------------------------------------------------------------------------


@dataclass
class Predictor:
    """A loaded checkpoint and how to get a heatmap callable for a skeleton from it."""

    source: str
    kind: str  # "posebh", "official" or "split"
    #: skeletons with a heatmap head; ``prototype_skeletons``: those the prototypes cover
    skeletons: tuple[str, ...]
    prototype_skeletons: tuple[str, ...]
    input_wh: tuple[int, int]
    heatmap_wh: tuple[int, int]
    make_fn: Callable[[str, bool, str | None], Callable]
    #: the one expert a split file carries (None: any of ``skeletons``)
    fixed_expert: str | None = None

    def expert_for(self, skeleton: str, expert: str | None = None) -> str:
        return self.fixed_expert or _skeleton_name(expert or skeleton)

    def heatmap_fn(self, skeleton: str, *, prototypes: bool = False, expert: str | None = None) -> Callable:
        name = _skeleton_name(skeleton)
        available = self.prototype_skeletons if prototypes else self.skeletons
        if name not in available:
            what = "prototypes cover" if prototypes else "heads predict"
            hint = ""
            if name in TRANSFER_SKELETONS:
                hint = f"; {name} keypoints need a transfer checkpoint (a model trained on {name})"
            elif self.kind == "split" and not prototypes:
                hint = f"; use the whole PoseBH checkpoint or the {name} split file"
            raise PredictError(f"{self.source}: no {name} keypoints; its {what}: {', '.join(available) or 'none'}{hint}")
        if expert is not None:
            expert = _skeleton_name(expert)
            if self.kind == "split":
                raise PredictError(f"{self.source}: a split file has one expert; --expert needs the whole model")
            if expert not in self.skeletons:
                raise PredictError(f"{self.source}: no expert {expert!r}; experts: {', '.join(self.skeletons)}")
        return self.make_fn(name, prototypes, expert)


def _skeleton_name(name: str) -> str:
    try:
        return skeletons.get(name).name
    except KeyError:
        known = sorted(set(PREDICT_SKELETONS) | set(skeletons.SKELETONS))
        raise PredictError(f"unknown skeleton {name!r}; known: {', '.join(known)}") from None


def load_predictor(checkpoint: str | Path, *, device: str = "cpu", need_prototypes: bool = False) -> Predictor:
    """Read ``checkpoint`` once (``weights_only=True``) and wrap whatever it holds."""
    import torch

    from posebh.evaluation.inference import make_heatmap_fn
    from posebh.models import checkpoints as ck
    from posebh.models import export

    path = Path(checkpoint)
    payload = ck.read_checkpoint(path)
    kind = ck.payload_kind(payload)
    dev = torch.device(device)
    if kind in (ck.FORMAT, "official"):
        if kind == ck.FORMAT:
            model = ck.model_from_payload(payload, path)
        else:
            model, _ = ck.official_from_payload(payload, path)
        model = model.to(dev).eval()

        def make(name: str, prototypes: bool, expert: str | None):
            return make_heatmap_fn(model, name, expert=expert, prototypes=prototypes)

        return Predictor(str(path), kind, model.datasets, model.datasets, model.config.input_wh,
                         model.config.heatmap_wh, make)
    if kind == export.SPLIT_FORMAT:
        per = export.per_dataset_from_payload(payload, path).to(dev).eval()
        query = None
        proto_path = path.parent / export.PROTOTYPES_FILE
        if need_prototypes:
            if not proto_path.is_file():
                raise PredictError(f"{path}: --prototypes needs {export.PROTOTYPES_FILE} next to the split file "
                                   f"(written by posebh export); not found in {path.parent}")
            query = export.load_prototype_query(proto_path).to(dev).eval()

        def make(name: str, prototypes: bool, expert: str | None):
            if prototypes:
                return lambda images: query(per.features(images), name)
            return per

        return Predictor(str(path), "split", (per.dataset,), query.datasets if query is not None else (),
                         per.input_wh, per.heatmap_wh, make, fixed_expert=per.expert)
    if kind == export.PROTOTYPES_FORMAT:
        raise PredictError(f"{path}: this is the prototypes file of a split model; pass a per-dataset file "
                           f"(e.g. {path.parent / ('coco' + export.SPLIT_SUFFIX)}) with --prototypes")
    raise PredictError(f"{path}: not a posebh, split or official ViTPose++/PoseBH checkpoint")


# ----------------------------------------------------------------------------------------------
# Boxes
# ----------------------------------------------------------------------------------------------


def parse_boxes(values: Sequence[str] | str) -> list[list[float]]:
    """``"x,y,w,h"`` strings (several per string separated by ``;`` or spaces) -> xywh boxes."""
    if isinstance(values, str):
        values = [values]
    boxes = []
    for value in values:
        for part in value.replace(";", " ").split():
            try:
                box = [float(v) for v in part.split(",")]
            except ValueError:
                raise PredictError(f"bad box {part!r}: expected x,y,w,h numbers") from None
            if len(box) != 4 or not all(np.isfinite(box)):
                raise PredictError(f"bad box {part!r}: expected 4 finite numbers x,y,w,h")
            if box[2] <= 0 or box[3] <= 0:
                raise PredictError(f"bad box {part!r}: width and height must be positive")
            boxes.append(box)
    return boxes


def image_id_of(image_path: Path) -> int | None:
    """COCO-style id from the file name (``000000000785.jpg`` -> 785), None if not all digits."""
    return int(image_path.stem) if image_path.stem.isdigit() else None


def detection_boxes(path: str | Path, image_id: int, *, min_score: float = DEFAULT_MIN_SCORE):
    """(boxes (N, 4), scores (N,), category ids (N,)) of ``image_id`` in a COCO detection-results file.

    A malformed box of another image is ignored; one of this image raises, naming the file.
    """
    from posebh.data.readers.detections import read_detections

    det = read_detections(annotations=path, split="predict", category_id=None)
    det = det[det["image_id"].to_numpy() == image_id]
    flagged = det["issue"].dropna()
    if len(flagged):
        raise PredictError(f"{path}: {len(flagged)} detection(s) of image {image_id} are malformed: {flagged.iat[0]}")
    sel = det[det["score"].to_numpy() >= min_score]
    boxes = np.stack(sel["bbox"].to_numpy()).astype(np.float64) if len(sel) else np.zeros((0, 4))
    return boxes, sel["score"].to_numpy(np.float64), sel["category_id"].to_numpy(np.int64)


# ----------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------


def read_rgb(path: str | Path) -> np.ndarray:
    import cv2

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise PredictError(f"{path}: not a readable image")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def write_rgb(path: str | Path, image: np.ndarray) -> Path:
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        ok = cv2.imwrite(str(path), np.ascontiguousarray(image[:, :, ::-1]))
    except cv2.error:
        ok = False
    if not ok:
        raise PredictError(f"{path}: could not write the image (use a .png or .jpg name)")
    return path


def coco_results(keypoints: np.ndarray, boxes: np.ndarray, scores: np.ndarray, image_id: int | str,
                 category_ids: Sequence[int]) -> list[dict[str, Any]]:
    """COCO keypoint results: one dict per instance, keypoints flat (x, y, score)."""
    return [
        {
            "image_id": image_id,
            "category_id": int(category_ids[i]),
            "keypoints": [float(v) for v in keypoints[i].reshape(-1)],
            "score": float(scores[i]),
            "bbox": [float(v) for v in boxes[i]],
        }
        for i in range(len(keypoints))
    ]


def results_json(results: Sequence[dict[str, Any]]) -> str:
    """A JSON list with one instance per line; NaN/inf are refused (they are not JSON)."""
    body = ",\n".join(json.dumps(r, allow_nan=False) for r in results)
    return f"[\n{body}\n]\n" if results else "[]\n"


def predict(
    image_path: str | Path,
    *,
    checkpoint: str | Path,
    skeleton: str,
    boxes: Sequence[Sequence[float]] | None = None,
    detections: str | Path | None = None,
    min_score: float = DEFAULT_MIN_SCORE,
    image_id: int | None = None,
    prototypes: bool = False,
    expert: str | None = None,
    out_image: str | Path | None = None,
    out_json: str | Path | None = None,
    device: str = "cpu",
    flip_test: bool = True,
) -> dict[str, Any]:
    """Predict ``skeleton``'s keypoints on one image and optionally write the drawing and the JSON.

    Boxes: ``boxes`` (xywh), or the ``detections`` of this image (by ``image_id``, else the id in
    the file name) with score >= ``min_score``, or else the whole image. Returns a dict with
    ``keypoints`` (N, K, 3), ``boxes`` (N, 4), ``scores`` (N,), ``results`` (COCO format) and the
    paths written.
    """
    from posebh.evaluation.inference import predict_image
    from posebh.evaluation.postprocess import VIS_THR, rescore
    from posebh.evaluation.protocols import get_protocol
    from posebh.visualization import draw_pose

    image_path = Path(image_path)
    name = _skeleton_name(skeleton)
    if boxes is not None and detections is not None:
        raise PredictError("give boxes or a detections file, not both")
    image = read_rgb(image_path)
    image_id = image_id if image_id is not None else image_id_of(image_path)
    category_ids: Sequence[int] | None = None
    box_scores = None
    if detections is not None:
        if image_id is None:
            raise PredictError(f"cannot tell the image id of {image_path.name} from its name; pass image_id "
                               "(--image-id) to pick its detections")
        box_arr, box_scores, category_ids = detection_boxes(detections, image_id, min_score=min_score)
    elif boxes is not None:
        box_arr = np.asarray(boxes, np.float64).reshape(-1, 4)
    else:
        box_arr = None

    predictor = load_predictor(checkpoint, device=device, need_prototypes=prototypes)
    heatmap_fn = predictor.heatmap_fn(name, prototypes=prototypes, expert=expert)
    proto = get_protocol(name)
    if box_arr is not None and len(box_arr) == 0:
        keypoints = np.zeros((0, skeletons.get(name).num_keypoints, 3))
        used = np.zeros((0, 4))
    else:
        keypoints, used = predict_image(
            heatmap_fn, image, box_arr, skeleton=name, input_wh=predictor.input_wh,
            heatmap_wh=predictor.heatmap_wh, udp=proto.udp, decoding=proto.decoding,
            shift_heatmap=proto.shift_heatmap, flip_test=flip_test, device=device,
        )
    n = len(keypoints)
    box_scores = np.ones(n) if box_scores is None else np.asarray(box_scores, np.float64)
    scores = rescore(keypoints[..., 2], box_scores, VIS_THR) if n else np.zeros(0)
    categories = [DEFAULT_CATEGORY_ID] * n if category_ids is None else [int(c) for c in category_ids]
    results = coco_results(keypoints, used, scores, image_id if image_id is not None else image_path.stem, categories)

    written_image = written_json = None
    if out_image is not None:
        drawn = draw_pose(image, keypoints, name, boxes=used, scores=scores, min_score=VIS_THR)
        written_image = write_rgb(out_image, drawn)
    if out_json is not None:
        written_json = Path(out_json)
        written_json.parent.mkdir(parents=True, exist_ok=True)
        written_json.write_text(results_json(results))
    return {
        "image": str(image_path),
        "checkpoint": str(checkpoint),
        "checkpoint_kind": predictor.kind,
        "skeleton": name,
        "mode": "prototypes" if prototypes else "head",
        "expert": predictor.expert_for(name, expert),
        "instances": n,
        "keypoints": keypoints,
        "boxes": used,
        "scores": scores,
        "results": results,
        "out_image": None if written_image is None else str(written_image),
        "out_json": None if written_json is None else str(written_json),
    }


def default_outputs(image_path: str | Path, skeleton: str, *, prototypes: bool = False,
                    out: str | Path | None = None) -> tuple[Path, Path]:
    """(image, JSON) paths: ``out`` and ``out`` with ``.json``, or ``<stem>.<skeleton>[.proto].png``
    in the current folder."""
    if out is None:
        tag = f"{Path(image_path).stem}.{_skeleton_name(skeleton)}{'.proto' if prototypes else ''}"
        out = Path(f"{tag}.png")
    out = Path(out)
    return out, out.with_suffix(".json")
