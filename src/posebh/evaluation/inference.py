"""Top-down inference: boxes -> crops -> heatmaps -> keypoints in original image pixels.

This is what every metric consumes (the predictions contract of :mod:`posebh.evaluation.protocols`).
The model is any callable ``heatmap_fn(images (B, 3, H, W)) -> heatmaps (B, K, h, w)``: the MoE
model with a chosen dataset/expert (:func:`make_heatmap_fn`), a split per-dataset model, an
exported session wrapper... Everything the reference's test configs fix per dataset (UDP affine,
decoder, flip test, heatmap shift on flip; posebh-method.md 4.1) comes from
:func:`~posebh.evaluation.protocols.get_protocol`, never from here.

One path for every caller: crops come from :class:`~posebh.data.topdown.TopDownDataset`
(``train=False``: box -> centre/scale with the input aspect and the protocol's padding, 1.25
unless it names another; one affine warp). :func:`predict_image` feeds it an in-memory image
instead of a file, so a table row and an image with the same box give bit-identical keypoints. Per batch: model (``torch.inference_mode``, bf16
autocast on CUDA) -> flip test (mirrored crop, :func:`~posebh.data.codecs.flip_back`, 0.5/0.5
average) -> :class:`~posebh.data.codecs.HeatmapCodec` decode -> inverse crop matrix.

SAR heads: a callable that returns a :class:`~posebh.data.sar_codec.SAROutput` (what
``PoseBH.predict`` and a split SAR model return when ``model.head`` is ``sar``) is decoded by
:class:`~posebh.data.sar_codec.SARCodec` instead, on the same crops and the same inverse crop
matrix; its flip test happens in coordinate space (mirror x, swap left/right, average the two
poses and scores), and the protocol's heatmap decoding and flip shift do not apply.

Not done here: rescoring and OKS-NMS. ``score`` is the mean keypoint score, ``box_score`` the
detector's score (1 for GT boxes); :func:`~posebh.evaluation.protocols.evaluate_dataset` applies
mmpose's post-processing, and the COCO test-dev caller applies
:func:`~posebh.evaluation.postprocess.apply_topdown_postprocess` before writing the submission.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from posebh import skeletons
from posebh.data.codecs import HeatmapCodec, flip_back, flip_test_average
from posebh.data.sar_codec import SARCodec, SAROutput, flip_coordinates, flip_scores, flip_test_average_coordinates
from posebh.data.topdown import TopDownDataset, collate
from posebh.data.transforms import BOX_PADDING, crop_matrix, transform_points
from posebh.evaluation.protocols import DARK_KERNEL, PROTOCOLS, Protocol, evaluate_dataset, get_protocol

if TYPE_CHECKING:
    from posebh.data.readers.mpii import MPIIGroundTruth
    from posebh.models.posebh import PoseBH

log = logging.getLogger(__name__)

#: images -> heatmaps (B, K, h, w), or -> SAROutput for SAR heads
HeatmapFn = Callable[[torch.Tensor], torch.Tensor]

#: Columns of a predictions frame, in order. The contract's eight, plus ``category_id`` (the
#: row's category: AP-10K/APT-36K average AP over species) and ``area`` (mmpose's NMS area: the
#: padded, aspect-fixed crop box, so OKS-NMS does not have to guess the model's input size).
PREDICTION_COLUMNS: tuple[str, ...] = (
    "dataset",
    "split",
    "image_id",
    "instance_id",
    "keypoints",
    "score",
    "box_score",
    "bbox",
    "category_id",
    "area",
)
#: The ``extra`` key that marks a detection-box row (set by ``posebh.data.prepare.attach_detections``).
DET_SCORE = "det_score"
#: Splits never evaluated when the targets are derived from the tables.
TRAIN_SPLITS: frozenset[str] = frozenset({"train", "trainval"})
#: Protocol decoding name -> (codec kind, refinement) of :class:`HeatmapCodec`.
_CODEC_SETTINGS: Mapping[str, tuple[str, str]] = {"udp_dark": ("udp", "dark"), "default": ("msra", "shift")}
#: Metrics computed from the COCO-style loader, which predicts only on usable GT boxes.
_OKS_METRICS = frozenset({"oks", "wholebody", "crowdpose"})


# ----------------------------------------------------------------------------------------------
# Decoding settings
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decoder:
    """The test-time settings of one dataset: affine, decoder, flip test and flip shift."""

    skeleton: str
    udp: bool
    decoding: str
    shift_heatmap: bool
    flip_test: bool
    padding: float = BOX_PADDING

    @classmethod
    def for_dataset(cls, dataset: str, *, flip_test: bool | None = None) -> Decoder:
        proto = get_protocol(dataset)
        return cls(
            skeleton=proto.dataset,
            udp=proto.udp,
            decoding=proto.decoding,
            shift_heatmap=proto.shift_heatmap,
            flip_test=proto.flip_test if flip_test is None else bool(flip_test),
            padding=_protocol_padding(proto),
        )

    def codec(self, input_wh: tuple[int, int], heatmap_wh: tuple[int, int]) -> HeatmapCodec:
        try:
            kind, refine = _CODEC_SETTINGS[self.decoding]
        except KeyError:
            raise ValueError(f"unknown decoding {self.decoding!r}; known: {sorted(_CODEC_SETTINGS)}") from None
        return HeatmapCodec(input_wh, heatmap_wh, kind=kind, refine=refine, blur_kernel=DARK_KERNEL)


def _protocol_padding(proto: Protocol) -> float:
    """The box padding of a protocol; 1.25 (mmpose's default) until the table names another.

    InterHand's reference config pads hand boxes by 1.5 (datasets.md section 1); the protocol
    table is where that fact belongs, so a ``box_padding`` field there is picked up here.
    """
    return float(getattr(proto, "box_padding", BOX_PADDING))


def _shift_for_affine(udp: bool) -> bool:
    """The protocols' flip shift for an affine: mirroring a non-UDP crop moves heatmap pixels by
    one, a UDP crop maps pixel centres onto pixel centres. Every protocol agrees (checked)."""
    shifts = {p.shift_heatmap for p in PROTOCOLS.values() if p.udp == udp}
    if len(shifts) != 1:
        raise ValueError(f"the protocols disagree on shift_heatmap for udp={udp}; pass shift_heatmap")
    return shifts.pop()


# ----------------------------------------------------------------------------------------------
# The shared batch loop
# ----------------------------------------------------------------------------------------------


class _InMemoryTopDown(TopDownDataset):
    """A :class:`TopDownDataset` over one in-memory image: same crops, no file."""

    def __init__(self, image_bgr: np.ndarray, table: pd.DataFrame, **kwargs: Any):
        name = str(table["dataset"].iloc[0]) if len(table) else kwargs["datasets"][0]
        super().__init__(table, image_roots={name: "."}, **kwargs)
        self._image = image_bgr

    def read_image(self, index: int) -> np.ndarray:
        return self._image


def _box_table(rows: pd.DataFrame | None, skeleton: str, *, boxes: np.ndarray | None = None) -> pd.DataFrame:
    """The columns TopDownDataset reads, with the target skeleton and no keypoints.

    Boxes are all inference needs; relabelling lets any skeleton run on any dataset's images.
    """
    k = skeletons.get(skeleton).num_keypoints
    if boxes is None:
        boxes = np.stack(rows["bbox"].to_numpy()).astype(np.float64) if len(rows) else np.zeros((0, 4))
        names = rows["file_name"].astype(str).to_numpy()
    else:
        names = np.full(len(boxes), "<memory>", dtype=object)
    n = len(boxes)
    return pd.DataFrame(
        {
            "dataset": [skeleton] * n,
            "file_name": list(names),
            "bbox": list(np.asarray(boxes, np.float64).reshape(n, 4)),
            "keypoints": [np.zeros(3 * k, np.float32)] * n,
        }
    )


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def _heatmaps(
    heatmap_fn: HeatmapFn,
    images: torch.Tensor,
    decoder: Decoder,
    flip_index: list[int],
    expected: tuple[int, int, int],
    *,
    first: torch.Tensor | None = None,
) -> torch.Tensor:
    """The model's float32 heatmaps, flip-averaged when the protocol says so (``first``: the
    output on ``images`` when already computed)."""
    if first is None:
        with _autocast(images.device):
            first = heatmap_fn(images)
    hm = _check_shape(first, images.shape[0], expected).float()
    if not decoder.flip_test:
        return hm
    with _autocast(images.device):
        mirrored = heatmap_fn(images.flip(-1))
    mirrored = _check_shape(mirrored, images.shape[0], expected).float()
    return flip_test_average(hm, flip_back(mirrored, flip_index, shift=decoder.shift_heatmap))


def _decode(
    heatmap_fn: HeatmapFn, images: torch.Tensor, decoder: Decoder, flip_index: list[int], codec: HeatmapCodec
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keypoints (B, K, 2) in crop pixels and scores (B, K): heatmap or SAR decoding by what the
    model returns."""
    expected = (len(flip_index), codec.heatmap_size[1], codec.heatmap_size[0])
    with _autocast(images.device):
        first = heatmap_fn(images)
    if isinstance(first, SAROutput):
        return _sar_keypoints(heatmap_fn, images, first, decoder, flip_index, codec)
    return codec.decode(_heatmaps(heatmap_fn, images, decoder, flip_index, expected, first=first))


def _sar_keypoints(
    heatmap_fn: HeatmapFn, images: torch.Tensor, first: SAROutput, decoder: Decoder, flip_index: list[int],
    codec: HeatmapCodec,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SAR decoding with the flip test in coordinate space (reference peers.md 2.6)."""
    sar = SARCodec(codec.input_size, codec.heatmap_size)
    xy, scores = sar.decode(*_check_sar(first, images.shape[0], len(flip_index)))
    if not decoder.flip_test:
        return xy, scores
    with _autocast(images.device):
        mirrored = heatmap_fn(images.flip(-1))
    if not isinstance(mirrored, SAROutput):
        raise ValueError(f"heatmap_fn returned a SAROutput, then {type(mirrored).__name__} on the mirrored crops")
    xy_f, scores_f = sar.decode(*_check_sar(mirrored, images.shape[0], len(flip_index)))
    return flip_test_average_coordinates(
        xy, scores, flip_coordinates(xy_f, flip_index, sar.input_size[0]), flip_scores(scores_f, flip_index)
    )


def _check_sar(out: SAROutput, batch: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    logits, offsets = out.logits, out.offsets
    if logits is None or offsets is None or logits.ndim != 4 or tuple(logits.shape[:2]) != (batch, k):
        shape = None if logits is None else tuple(logits.shape)
        raise ValueError(f"SAR logits {shape}; expected (B, K, h, w) with (B, K) = {(batch, k)}")
    return logits.float(), offsets.float()


def _check_shape(hm: torch.Tensor, batch: int, expected: tuple[int, int, int]) -> torch.Tensor:
    if not isinstance(hm, torch.Tensor) or tuple(hm.shape) != (batch, *expected):
        shape = tuple(hm.shape) if isinstance(hm, torch.Tensor) else type(hm).__name__
        raise ValueError(f"heatmap_fn returned {shape}; expected (B, K, h, w) = {(batch, *expected)}")
    return hm


def _run(
    heatmap_fn: HeatmapFn,
    crops: TopDownDataset,
    decoder: Decoder,
    *,
    input_wh: tuple[int, int],
    heatmap_wh: tuple[int, int],
    batch_size: int,
    device: str | torch.device,
    num_workers: int = 0,
    progress: bool = False,
    desc: str = "predict",
) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints (N, K, 3) in original image pixels and crop areas (N,), in ``crops`` row order."""
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    device = torch.device(device)
    skel = skeletons.get(decoder.skeleton)
    k = skel.num_keypoints
    codec = decoder.codec(input_wh, heatmap_wh)
    n = len(crops)
    out = np.zeros((n, k, 3), np.float64)
    areas = np.zeros(n, np.float64)
    if n == 0:
        return out, areas
    loader = DataLoader(
        crops,
        batch_size=int(batch_size),
        shuffle=False,
        num_workers=int(num_workers),
        collate_fn=collate,
        pin_memory=device.type == "cuda",
    )
    flip_index = skel.flip_index()
    with torch.inference_mode(), tqdm(total=n, desc=desc, unit="box", disable=not progress) as bar:
        for batch in loader:
            images = batch["image"].to(device, non_blocking=True)
            xy, scores = _decode(heatmap_fn, images, decoder, flip_index, codec)
            xy, scores = xy.double().cpu().numpy(), scores.double().cpu().numpy()
            rows = batch["instance"].numpy()
            out[rows, :, :2] = _to_image(xy, batch, input_wh)
            out[rows, :, 2] = scores
            scale = batch["scale"].numpy()
            areas[rows] = scale[:, 0] * scale[:, 1]
            bar.update(len(rows))
    return out, areas


def _to_image(xy: np.ndarray, batch: dict[str, Any], input_wh: tuple[int, int]) -> np.ndarray:
    """Crop pixels (B, K, 2) -> original image pixels through each sample's inverse crop matrix."""
    center, scale = batch["center"].numpy(), batch["scale"].numpy()
    rotation = batch["rotation"].numpy()
    udp, flipped, width = batch["udp"].numpy(), batch["flipped"].numpy(), batch["image_width"].numpy()
    inv = np.stack(
        [
            crop_matrix(
                center[i],
                scale[i],
                float(rotation[i]),
                input_wh,
                udp=bool(udp[i]),
                flip_width=int(width[i]) if flipped[i] else None,
                inverse=True,
            )
            for i in range(len(center))
        ]
    )
    return transform_points(xy, inv)


# ----------------------------------------------------------------------------------------------
# Public entry points
# ----------------------------------------------------------------------------------------------


def predict_table(
    heatmap_fn: HeatmapFn,
    table: pd.DataFrame,
    *,
    dataset: str,
    image_roots: Mapping[str, str | Path],
    input_wh: tuple[int, int],
    heatmap_wh: tuple[int, int],
    batch_size: int = 32,
    flip_test: bool | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    num_workers: int = 0,
    padding: float | None = None,
) -> pd.DataFrame:
    """Predict ``dataset``'s keypoints in every box of ``table`` (GT or detection rows).

    ``dataset`` picks the skeleton and the protocol (affine, decoder, flip shift; ``flip_test=None``
    follows the protocol, ``padding=None`` its box padding). The rows' own ``dataset`` column only
    locates their images in ``image_roots``, so the table may come from another dataset
    (cross-skeleton prediction).
    Returns one row per table row, in table order, with :data:`PREDICTION_COLUMNS`: ``dataset`` is
    the predicted skeleton; keypoints are flat (x, y, heatmap peak) in original image pixels;
    ``score`` is the mean keypoint score (not rescored); ``box_score`` is ``extra["det_score"]``
    for detection rows, else 1; ``bbox`` is the input box.
    """
    decoder = Decoder.for_dataset(dataset, flip_test=flip_test)
    if padding is not None:
        decoder = replace(decoder, padding=float(padding))
    name = decoder.skeleton
    table = table.reset_index(drop=True)
    n = len(table)
    k = skeletons.get(name).num_keypoints
    keypoints = np.zeros((n, k, 3), np.float64)
    areas = np.zeros(n, np.float64)
    sources = table["dataset"].astype(str).to_numpy() if n else np.zeros(0, str)
    for source in dict.fromkeys(sources):  # first-seen order
        pos = np.flatnonzero(sources == source)
        root = image_roots.get(source, image_roots.get(_canonical(source)))
        if root is None:
            raise KeyError(f"no image root for {source!r} rows; image_roots has {sorted(image_roots)}")
        crops = TopDownDataset(
            _box_table(table.iloc[pos], name),
            image_roots={name: root},
            datasets=[name],
            input_size=input_wh,
            udp={name: decoder.udp},
            train=False,
            padding=decoder.padding,
        )
        kp, area = _run(
            heatmap_fn,
            crops,
            decoder,
            input_wh=input_wh,
            heatmap_wh=heatmap_wh,
            batch_size=batch_size,
            device=device,
            num_workers=num_workers,
            progress=progress,
            desc=f"predict {name}" + (f" on {source}" if source != name else ""),
        )
        keypoints[pos], areas[pos] = kp, area
    return _predictions_frame(table, name, keypoints, areas)


def _predictions_frame(table: pd.DataFrame, dataset: str, keypoints: np.ndarray, areas: np.ndarray) -> pd.DataFrame:
    n = len(table)
    if n == 0:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in PREDICTION_COLUMNS})
    return pd.DataFrame(
        {
            "dataset": pd.array([dataset] * n, dtype="string"),
            "split": table["split"].astype("string").to_numpy(),
            "image_id": table["image_id"].to_numpy(np.int64),
            "instance_id": table["instance_id"].to_numpy(np.int64),
            "keypoints": list(keypoints.reshape(n, -1)),
            "score": keypoints[..., 2].mean(axis=1),
            "box_score": box_scores(table),
            "bbox": [np.asarray(b, np.float64) for b in table["bbox"]],
            "category_id": table["category_id"].to_numpy(np.int64) if "category_id" in table else np.ones(n, np.int64),
            "area": areas,
        }
    )


def box_scores(table: pd.DataFrame) -> np.ndarray:
    """``extra["det_score"]`` of detection-box rows, 1.0 for ground-truth boxes."""
    if "extra" not in table.columns:
        return np.ones(len(table))
    return np.asarray([float(json.loads(e).get(DET_SCORE, 1.0)) for e in table["extra"]], np.float64)


def is_detection_row(table: pd.DataFrame) -> np.ndarray:
    """(N,) bool: the row is a detector box (its ``extra`` carries ``det_score``), not a GT instance."""
    if "extra" not in table.columns or len(table) == 0:
        return np.zeros(len(table), bool)
    return np.asarray([DET_SCORE in json.loads(e) for e in table["extra"]], bool)


def predict_image(
    heatmap_fn: HeatmapFn,
    image: np.ndarray,
    boxes: np.ndarray | Sequence[Sequence[float]] | None = None,
    *,
    skeleton: str | skeletons.Skeleton,
    input_wh: tuple[int, int],
    heatmap_wh: tuple[int, int],
    udp: bool | None = None,
    decoding: str | None = None,
    flip_test: bool = True,
    shift_heatmap: bool | None = None,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """``skeleton``'s keypoints in each box of one image, through the same path as :func:`predict_table`.

    ``image`` is HxWx3 uint8 RGB; ``boxes`` (N, 4) xywh, or None for one box covering the whole
    image ([0, 0, W, H], padded like any box). ``udp``/``decoding`` (``"udp_dark"`` or
    ``"default"``) default to the skeleton's protocol; ``shift_heatmap`` defaults to the
    protocols' choice for that affine. Returns keypoints (N, K, 3) float64 (x, y, score in image
    pixels) and the boxes used (N, 4) float64.
    """
    name = skeleton.name if isinstance(skeleton, skeletons.Skeleton) else skeletons.get(skeleton).name
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"image must be HxWx3 uint8 RGB, got {img.dtype} {img.shape}")
    h, w = img.shape[:2]
    box = np.array([[0.0, 0.0, w, h]]) if boxes is None else np.asarray(boxes, np.float64).reshape(-1, 4)
    proto = PROTOCOLS.get(name)
    if (udp is None or decoding is None) and proto is None:
        raise ValueError(f"{name} has no protocol; pass udp= and decoding=")
    udp = proto.udp if udp is None else bool(udp)
    decoder = Decoder(
        skeleton=name,
        udp=udp,
        decoding=proto.decoding if decoding is None else decoding,
        shift_heatmap=_shift_for_affine(udp) if shift_heatmap is None else bool(shift_heatmap),
        flip_test=bool(flip_test),
        padding=_protocol_padding(proto) if proto is not None else BOX_PADDING,
    )
    crops = _InMemoryTopDown(
        np.ascontiguousarray(img[:, :, ::-1]),  # TopDownDataset reads BGR, as cv2.imread returns
        _box_table(None, name, boxes=box),
        datasets=[name],
        input_size=input_wh,
        udp={name: udp},
        train=False,
        padding=decoder.padding,
    )
    keypoints, _ = _run(
        heatmap_fn, crops, decoder, input_wh=input_wh, heatmap_wh=heatmap_wh, batch_size=batch_size, device=device
    )
    return keypoints, box


def make_heatmap_fn(
    model: PoseBH, dataset: str, *, expert: str | None = None, prototypes: bool = False
) -> HeatmapFn:
    """The heatmap callable of the MoE model for ``dataset``'s keypoints, in eval mode.

    ``prototypes=False``: head ``dataset`` on expert ``expert`` (default: the dataset's own), what
    the reported numbers use; ``True``: the prototype |cos| heatmap (visualisation, cross-skeleton
    queries). The model must already be on the device the images are sent to.
    """
    model.eval()
    name = skeletons.get(dataset).name
    method = model.prototype_heatmap if prototypes else model.predict

    def heatmap_fn(images: torch.Tensor) -> torch.Tensor:
        return method(images, name, expert=expert)

    heatmap_fn.__qualname__ = f"{'prototype_heatmap' if prototypes else 'predict'}[{name}, expert={expert or name}]"
    return heatmap_fn


# ----------------------------------------------------------------------------------------------
# Evaluation over the protocol table
# ----------------------------------------------------------------------------------------------


def gt_box_rows(gt: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """The GT rows a GT-box run predicts on.

    OKS datasets follow mmpose's COCO-style loader: only rows with labelled joints
    (``num_keypoints > 0`` and some non-zero keypoint), not crowd, with a positive box. The rows
    skipped are ones COCOeval ignores anyway; predicting on them would add false positives.
    PCKh/PCK protocols predict every row (their metrics pair each GT row with its prediction).
    """
    if get_protocol(dataset).metric not in _OKS_METRICS or len(gt) == 0:
        return gt
    kps = np.stack(gt["keypoints"].to_numpy()).astype(np.float64)
    box = np.stack(gt["bbox"].to_numpy()).astype(np.float64)
    keep = (
        (gt["num_keypoints"].to_numpy(np.int64) > 0)
        & (np.abs(kps).max(axis=1) > 0)
        & (gt["iscrowd"].to_numpy(np.int64) == 0)
        & (box[:, 2] > 0)
        & (box[:, 3] > 0)
    )
    return gt[keep]


def _pool(tables: Mapping[Any, pd.DataFrame], dataset: str, split: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(GT rows, detection-box rows) of one (dataset, split) from every table given."""
    name = skeletons.get(dataset).name
    parts = []
    for t in tables.values():
        if t is None or len(t) == 0:
            continue
        names = t["dataset"].astype(str)
        canonical = names.map({d: _canonical(d) for d in names.unique()})
        sel = t[((canonical == name) & (t["split"].astype(str) == split)).to_numpy()]
        if len(sel):
            parts.append(sel)
    if not parts:
        return pd.DataFrame(), pd.DataFrame()
    rows = pd.concat(parts, ignore_index=True)
    det = is_detection_row(rows)
    # the same row may arrive through two tables (a per-dataset table and the assembled one);
    # instance_id is unique within (dataset, split), so a repeat is the same instance
    gt, boxes = (rows[m].drop_duplicates(["instance_id"]).reset_index(drop=True) for m in (~det, det))
    return gt, boxes


def _canonical(dataset: str) -> str:
    """The registry name of a dataset; an unknown name is kept (it then matches nothing)."""
    try:
        return skeletons.get(dataset).name
    except KeyError:
        return dataset


def _detection_rows(tables: Mapping[Any, pd.DataFrame], dataset: str, split: str) -> pd.DataFrame:
    """Detection boxes of (dataset, split); else those of a dataset whose protocol names the same
    detection file for that split (COCO-WholeBody val runs on COCO val's person boxes)."""
    _, det = _pool(tables, dataset, split)
    if len(det):
        return det
    wanted = get_protocol(dataset).detections.get(split)
    if wanted is None:
        return det
    for other in PROTOCOLS.values():
        if other.dataset != get_protocol(dataset).dataset and other.detections.get(split) == wanted:
            _, det = _pool(tables, other.dataset, split)
            if len(det):
                log.info("%s/%s: using the %s detection boxes (same file %s)", dataset, split, other.dataset, wanted)
                return det
    return det


def evaluation_targets(tables: Mapping[Any, pd.DataFrame]) -> list[tuple[str, str, str]]:
    """(dataset, split, box source) for every protocol with rows in ``tables``.

    Detection protocols: each split their protocol names a detection file for that has boxes
    (COCO val and test-dev, COCO-WholeBody val). GT-box protocols: every split except
    :data:`TRAIN_SPLITS` that has GT rows.
    """
    present: dict[str, set[str]] = {}
    for t in tables.values():
        if t is None or len(t) == 0:
            continue
        for d, s in t[["dataset", "split"]].astype(str).drop_duplicates().itertuples(index=False):
            present.setdefault(_canonical(d), set()).add(s)
    out = []
    for proto in PROTOCOLS.values():
        if proto.boxes == "detections":
            with_boxes = [s for s in proto.detections if len(_detection_rows(tables, proto.dataset, s))]
            out += [(proto.dataset, s, "detections") for s in with_boxes]
        else:
            out += [(proto.dataset, s, "gt") for s in sorted(present.get(proto.dataset, ())) if s not in TRAIN_SPLITS]
    return out


def target_keys(targets: Sequence[tuple[str, str, str]]) -> list[str]:
    """Result keys: the dataset name, or ``dataset/split`` when a dataset is run on several splits."""
    counts: dict[str, int] = {}
    for d, _, _ in targets:
        counts[d] = counts.get(d, 0) + 1
    return [d if counts[d] == 1 else f"{d}/{s}" for d, s, _ in targets]


def evaluate_model(
    heatmap_fn_for: Callable[[str], HeatmapFn],
    tables: Mapping[str | tuple[str, str], pd.DataFrame],
    *,
    image_roots: Mapping[str, str | Path],
    input_wh: tuple[int, int],
    heatmap_wh: tuple[int, int],
    datasets: Sequence[tuple[str, str, str]] | None = None,
    mpii_gt: MPIIGroundTruth | None = None,
    batch_size: int = 32,
    flip_test: bool | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    num_workers: int = 0,
) -> tuple[dict[str, dict[str, float | int]], dict[str, pd.DataFrame]]:
    """Predict and evaluate each (dataset, split, box source) with its protocol.

    ``tables`` are unified instance tables under any keys (catalog names or (dataset, split)
    pairs); their rows are pooled and selected by the ``dataset`` and ``split`` columns. Rows whose
    ``extra`` has ``det_score`` are detection boxes, all others ground truth. ``datasets=None``
    evaluates :func:`evaluation_targets`. GT-box runs predict on :func:`gt_box_rows`; detection
    runs on the detection rows. A (dataset, split) without ground truth (COCO test-dev) gets
    predictions only. ``heatmap_fn_for(dataset)`` returns the model callable for that dataset.

    Returns ``(metrics, predictions)`` keyed by :func:`target_keys`: ``metrics[key]`` is
    :func:`~posebh.evaluation.protocols.evaluate_dataset`'s dict, ``predictions[key]`` the raw
    predictions (not rescored or NMS-ed).
    """
    targets = list(evaluation_targets(tables) if datasets is None else datasets)
    metrics: dict[str, dict[str, float | int]] = {}
    predictions: dict[str, pd.DataFrame] = {}
    for key, (dataset, split, source) in zip(target_keys(targets), targets):
        name = get_protocol(dataset).dataset
        if source not in ("gt", "detections"):
            raise ValueError(f"box source must be 'gt' or 'detections', got {source!r}")
        gt, _ = _pool(tables, name, split)
        rows = gt_box_rows(gt, name) if source == "gt" else _detection_rows(tables, name, split)
        if len(rows) == 0:
            raise ValueError(f"{name}/{split}: no {source} boxes in the tables given")
        log.info("%s: %d %s boxes", key, len(rows), source)
        pred = predict_table(
            heatmap_fn_for(name),
            rows,
            dataset=name,
            image_roots=image_roots,
            input_wh=input_wh,
            heatmap_wh=heatmap_wh,
            batch_size=batch_size,
            flip_test=flip_test,
            device=device,
            progress=progress,
            num_workers=num_workers,
        )
        predictions[key] = pred
        if len(gt) == 0:
            log.info("%s: no ground truth (e.g. COCO test-dev); predictions only", key)
            continue
        metrics[key] = evaluate_dataset(
            name, gt, pred, mpii_gt=mpii_gt if get_protocol(name).metric == "pckh" else None, split=split
        )
    return metrics, predictions


__all__ = [
    "PREDICTION_COLUMNS",
    "Decoder",
    "HeatmapFn",
    "predict_table",
    "predict_image",
    "make_heatmap_fn",
    "box_scores",
    "is_detection_row",
    "gt_box_rows",
    "evaluation_targets",
    "target_keys",
    "evaluate_model",
]
