"""The skeleton registry: the single source of truth for every dataset's keypoint facts.

Each entry is keyed by dataset identity (``apt36k`` and ``ochuman`` have their own entries even
though they reuse the AP-10K and COCO skeletons). Nothing else in the project writes a keypoint
name, a flip pair or an OKS sigma.

The global MDT keypoint space concatenates the skeletons of an ordered list of datasets; PoseBH's
six training sets in paper order give J = 214 (``mdt_space(PAPER_MDT_DATASETS)``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Literal

AreaRule = Literal["annotation", "wh", "0.53wh"]

#: The bounding-box-to-OKS-area factor of the xtcocotools ``use_area=False`` convention.
OKS_BOX_AREA_FACTOR = 0.53


def oks_area(bbox, area_rule: str):
    """OKS area of (..., 4) xywh boxes under an ``area_rule``; w*h for ``wh`` and ``annotation``.

    ``0.53wh`` is xtcocotools' ``use_area=False`` rule (AIC, CrowdPose, 3DPW); ``annotation``
    datasets use the release's own area and fall back to w*h only where the release has none.
    """
    import numpy as np

    bbox = np.asarray(bbox, np.float64)
    wh = bbox[..., 2] * bbox[..., 3]
    return OKS_BOX_AREA_FACTOR * wh if area_rule == "0.53wh" else wh


@dataclass(frozen=True)
class Skeleton:
    name: str
    keypoints: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    sigmas: tuple[float, ...] | None  # None where the metric is not OKS (InterHand)
    links: tuple[tuple[int, int], ...]  # 0-based drawing links
    upper_body: tuple[int, ...]
    lower_body: tuple[int, ...]
    joint_weights: tuple[float, ...] | None = None
    #: how the OKS area is obtained when evaluating this dataset
    area_rule: AreaRule = "annotation"
    #: named slices of the keypoint vector (COCO-WholeBody parts); {"body": (0, 17), ...}
    parts: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    #: the category name the release uses for its instances
    category: str = "person"

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoints)

    def flip_index(self) -> list[int]:
        """Permutation that maps keypoint i to its mirrored counterpart."""
        perm = list(range(self.num_keypoints))
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    def side(self, i: int) -> Literal["left", "right", "center"]:
        """Body side read from the keypoint name; drawing colours use it, mirroring uses flip_pairs."""
        name = self.keypoints[i]
        if name.startswith("left_"):
            return "left"
        if name.startswith("right_"):
            return "right"
        return "center"

    def part_slice(self, part: str) -> slice:
        """Slice of a named part (COCO-WholeBody ``face``, ``left_hand``...) of the keypoint vector."""
        try:
            lo, hi = self.parts[part]
        except KeyError:
            raise KeyError(f"skeleton {self.name!r} has no part {part!r}; parts: {sorted(self.parts)}") from None
        return slice(lo, hi)

    def index(self, name: str) -> int:
        try:
            return self.keypoints.index(name)
        except ValueError:
            raise KeyError(f"skeleton {self.name!r} has no keypoint {name!r}") from None


SKELETONS: dict[str, Skeleton] = {}


def register(skeleton: Skeleton) -> Skeleton:
    _check(skeleton)
    SKELETONS[skeleton.name] = skeleton
    return skeleton


def get(name: str) -> Skeleton:
    try:
        return SKELETONS[ALIASES.get(name, name)]
    except KeyError:
        raise KeyError(f"unknown skeleton {name!r}; known: {sorted(SKELETONS)}") from None


#: Command-line spellings accepted for registry names.
ALIASES = {"wholebody": "coco_wholebody", "pw3d": "3dpw", "interhand2.6m": "interhand", "ap36k": "apt36k"}


def _check(s: Skeleton) -> None:
    k = s.num_keypoints
    if len(set(s.keypoints)) != k:
        raise ValueError(f"{s.name}: duplicate keypoint names")
    for seq_name in ("sigmas", "joint_weights"):
        seq = getattr(s, seq_name)
        if seq is not None and len(seq) != k:
            raise ValueError(f"{s.name}: {len(seq)} {seq_name} for {k} keypoints")
    seen: set[int] = set()
    for a, b in s.flip_pairs:
        if not (0 <= a < k and 0 <= b < k) or a == b or a in seen or b in seen:
            raise ValueError(f"{s.name}: bad flip pair ({a}, {b})")
        seen.update((a, b))
    for a, b in s.links:
        if not (0 <= a < k and 0 <= b < k):
            raise ValueError(f"{s.name}: link ({a}, {b}) out of range")
    for i in (*s.upper_body, *s.lower_body):
        if not 0 <= i < k:
            raise ValueError(f"{s.name}: body-part index {i} out of range")
    for part, (lo, hi) in s.parts.items():
        if not 0 <= lo < hi <= k:
            raise ValueError(f"{s.name}: part {part} slice ({lo}, {hi}) out of range")


# ----------------------------------------------------------------------------------------------
# The global MDT keypoint space
# ----------------------------------------------------------------------------------------------

#: PoseBH's six training datasets in the paper's (and the official code's) dataset-index order.
PAPER_MDT_DATASETS: tuple[str, ...] = ("coco", "aic", "mpii", "ap10k", "apt36k", "coco_wholebody")


@dataclass(frozen=True)
class MDTSpace:
    """Global keypoint indexing over an ordered list of datasets (the prototype rows)."""

    datasets: tuple[str, ...]
    offsets: tuple[int, ...]
    sizes: tuple[int, ...]

    @property
    def total(self) -> int:
        return self.offsets[-1] + self.sizes[-1] if self.datasets else 0

    def dataset_index(self, dataset: str) -> int:
        try:
            return self.datasets.index(dataset)
        except ValueError:
            raise KeyError(f"dataset {dataset!r} is not in the MDT space {self.datasets}") from None

    def slice(self, dataset: str) -> slice:
        i = self.dataset_index(dataset)
        return slice(self.offsets[i], self.offsets[i] + self.sizes[i])

    def global_index(self, dataset: str, local: int) -> int:
        i = self.dataset_index(dataset)
        if not 0 <= local < self.sizes[i]:
            raise IndexError(f"keypoint {local} out of range for {dataset} ({self.sizes[i]} keypoints)")
        return self.offsets[i] + local

    def owner(self, global_index: int) -> tuple[str, int]:
        """(dataset, local keypoint index) of a global keypoint index."""
        for name, off, size in zip(self.datasets, self.offsets, self.sizes):
            if off <= global_index < off + size:
                return name, global_index - off
        raise IndexError(f"global keypoint {global_index} out of range (J = {self.total})")

    def names(self) -> list[str]:
        """Qualified names ``dataset/keypoint`` in global order."""
        return [f"{d}/{n}" for d in self.datasets for n in get(d).keypoints]


def mdt_space(datasets: tuple[str, ...] | list[str]) -> MDTSpace:
    datasets = tuple(get(d).name for d in datasets)
    if len(set(datasets)) != len(datasets):
        raise ValueError(f"duplicate dataset in MDT list {datasets}")
    sizes = tuple(get(d).num_keypoints for d in datasets)
    offsets, run = [], 0
    for s in sizes:
        offsets.append(run)
        run += s
    return MDTSpace(datasets, tuple(offsets), sizes)


# ----------------------------------------------------------------------------------------------
# Registry entries (release order; facts from the official metainfo, see reference/datasets.md)
# ----------------------------------------------------------------------------------------------

COCO_KEYPOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
COCO_SIGMAS = (
    0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062,
    0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
)  # fmt: skip
COCO_FLIP_PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))
COCO_LINKS = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
    (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)  # fmt: skip
COCO_JOINT_WEIGHTS = (1, 1, 1, 1, 1, 1, 1, 1.2, 1.2, 1.5, 1.5, 1, 1, 1.2, 1.2, 1.5, 1.5)

register(Skeleton(
    name="coco",
    keypoints=COCO_KEYPOINTS,
    flip_pairs=COCO_FLIP_PAIRS,
    sigmas=COCO_SIGMAS,
    links=COCO_LINKS,
    upper_body=tuple(range(0, 11)),
    lower_body=tuple(range(11, 17)),
    joint_weights=COCO_JOINT_WEIGHTS,
))  # fmt: skip

register(replace(get("coco"), name="ochuman"))


def _complement(keypoints: tuple[str, ...], ids: tuple[int, ...]) -> tuple[int, ...]:
    """Lower body of a body-only skeleton: every keypoint the official metainfo does not call upper."""
    return tuple(i for i in range(len(keypoints)) if i not in ids)


AIC_KEYPOINTS = (
    "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "head_top", "neck",
)  # fmt: skip
AIC_UPPER = (0, 1, 2, 3, 4, 5, 12, 13)
register(Skeleton(
    name="aic",
    keypoints=AIC_KEYPOINTS,
    flip_pairs=((0, 3), (1, 4), (2, 5), (6, 9), (7, 10), (8, 11)),
    sigmas=(
        0.01388152, 0.01515228, 0.01057665, 0.01417709, 0.01497891, 0.01402144, 0.03909642,
        0.03686941, 0.01981803, 0.03843971, 0.03412318, 0.02415081, 0.01291456, 0.01236173,
    ),
    links=(
        (2, 1), (1, 0), (0, 13), (13, 3), (3, 4), (4, 5), (8, 7), (7, 6), (6, 9), (9, 10),
        (10, 11), (12, 13), (0, 6), (3, 9),
    ),
    upper_body=AIC_UPPER,
    lower_body=_complement(AIC_KEYPOINTS, AIC_UPPER),
    joint_weights=(1, 1.2, 1.5) * 4 + (1, 1),
    area_rule="0.53wh",
))  # fmt: skip

MPII_KEYPOINTS = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "pelvis",
    "thorax", "upper_neck", "head_top", "right_wrist", "right_elbow", "right_shoulder",
    "left_shoulder", "left_elbow", "left_wrist",
)  # fmt: skip
MPII_UPPER = tuple(range(7, 16))
register(Skeleton(
    name="mpii",
    keypoints=MPII_KEYPOINTS,
    flip_pairs=((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13)),
    sigmas=(
        0.089, 0.083, 0.107, 0.107, 0.083, 0.089, 0.026, 0.026, 0.026, 0.026, 0.062, 0.072,
        0.179, 0.179, 0.072, 0.062,
    ),
    links=(
        (0, 1), (1, 2), (2, 6), (6, 3), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9), (8, 12),
        (12, 11), (11, 10), (8, 13), (13, 14), (14, 15),
    ),
    upper_body=MPII_UPPER,
    lower_body=_complement(MPII_KEYPOINTS, MPII_UPPER),
    joint_weights=(1.5, 1.2, 1, 1, 1.2, 1.5, 1, 1, 1, 1, 1.5, 1.2, 1, 1, 1.2, 1.5),
))  # fmt: skip

AP10K_KEYPOINTS = (
    "left_eye", "right_eye", "nose", "neck", "root_of_tail", "left_shoulder", "left_elbow",
    "left_front_paw", "right_shoulder", "right_elbow", "right_front_paw", "left_hip",
    "left_knee", "left_back_paw", "right_hip", "right_knee", "right_back_paw",
)  # fmt: skip
#: The official metainfo's upper set; it leaves out right_front_paw (10), an upstream quirk kept
#: so the half-body transform matches PoseBH.
AP10K_UPPER = (0, 1, 2, 3, 5, 6, 7, 8, 9)
register(Skeleton(
    name="ap10k",
    keypoints=AP10K_KEYPOINTS,
    flip_pairs=((0, 1), (5, 8), (6, 9), (7, 10), (11, 14), (12, 15), (13, 16)),
    sigmas=(
        0.025, 0.025, 0.026, 0.035, 0.035, 0.079, 0.072, 0.062, 0.079, 0.072, 0.062, 0.107,
        0.087, 0.089, 0.107, 0.087, 0.089,
    ),
    links=(
        (0, 1), (0, 2), (1, 2), (2, 3), (3, 4), (3, 5), (5, 6), (6, 7), (3, 8), (8, 9), (9, 10),
        (4, 11), (11, 12), (12, 13), (4, 14), (14, 15), (15, 16),
    ),
    upper_body=AP10K_UPPER,
    lower_body=_complement(AP10K_KEYPOINTS, AP10K_UPPER),
    joint_weights=COCO_JOINT_WEIGHTS,
    category="animal",
))  # fmt: skip
register(replace(get("ap10k"), name="apt36k"))

_FINGERS = ("thumb", "forefinger", "middle_finger", "ring_finger", "pinky_finger")
#: COCO-WholeBody hand order: root, then each finger base (1) to tip (4).
WHOLEBODY_HAND = ("hand_root", *(f"{f}{j}" for f in _FINGERS for j in range(1, 5)))
WHOLEBODY_FOOT = (
    "left_big_toe", "left_small_toe", "left_heel", "right_big_toe", "right_small_toe", "right_heel",
)  # fmt: skip
WHOLEBODY_FACE = tuple(f"face-{i}" for i in range(68))
WHOLEBODY_PARTS = MappingProxyType(
    {"body": (0, 17), "foot": (17, 23), "face": (23, 91), "left_hand": (91, 112), "right_hand": (112, 133)}
)
_LH, _RH = WHOLEBODY_PARTS["left_hand"][0], WHOLEBODY_PARTS["right_hand"][0]
WHOLEBODY_FOOT_SIGMAS = (0.068, 0.066, 0.066, 0.092, 0.094, 0.094)
WHOLEBODY_FACE_SIGMAS = (
    0.042, 0.043, 0.044, 0.043, 0.040, 0.035, 0.031, 0.025, 0.020, 0.023, 0.029, 0.032, 0.037, 0.038,
    0.043, 0.041, 0.045, 0.013, 0.012, 0.011, 0.011, 0.012, 0.012, 0.011, 0.011, 0.013, 0.015, 0.009,
    0.007, 0.007, 0.007, 0.012, 0.009, 0.008, 0.016, 0.010, 0.017, 0.011, 0.009, 0.011, 0.009, 0.007,
    0.013, 0.008, 0.011, 0.012, 0.010, 0.034, 0.008, 0.008, 0.009, 0.008, 0.008, 0.007, 0.010, 0.008,
    0.009, 0.009, 0.009, 0.007, 0.007, 0.008, 0.011, 0.008, 0.008, 0.008, 0.010, 0.008,
)  # fmt: skip
WHOLEBODY_HAND_SIGMAS = (
    0.029, 0.022, 0.035, 0.037, 0.047, 0.026, 0.025, 0.024, 0.035, 0.018, 0.024, 0.022, 0.026,
    0.017, 0.021, 0.021, 0.032, 0.020, 0.019, 0.022, 0.031,
)  # fmt: skip
WHOLEBODY_FACE_FLIP_PAIRS = (
    (23, 39), (24, 38), (25, 37), (26, 36), (27, 35), (28, 34), (29, 33), (30, 32), (40, 49),
    (41, 48), (42, 47), (43, 46), (44, 45), (54, 58), (55, 57), (59, 68), (60, 67), (61, 66),
    (62, 65), (63, 70), (64, 69), (71, 77), (72, 76), (73, 75), (78, 82), (79, 81), (83, 87),
    (84, 86), (88, 90),
)  # fmt: skip


def _hand_links(root: int) -> tuple[tuple[int, int], ...]:
    """Root to each finger's base, then base to tip, for a hand laid out as WHOLEBODY_HAND."""
    links = []
    for f in range(len(_FINGERS)):
        chain = (root, *range(root + 1 + 4 * f, root + 5 + 4 * f))
        links += zip(chain[:-1], chain[1:])
    return tuple(links)


# Lower body = COCO legs (11-16) plus the six foot points; face and hands belong to neither set.
WHOLEBODY_KEYPOINTS = (
    COCO_KEYPOINTS + WHOLEBODY_FOOT + WHOLEBODY_FACE
    + tuple(f"left_{n}" for n in WHOLEBODY_HAND) + tuple(f"right_{n}" for n in WHOLEBODY_HAND)
)  # fmt: skip
register(Skeleton(
    name="coco_wholebody",
    keypoints=WHOLEBODY_KEYPOINTS,
    flip_pairs=(
        COCO_FLIP_PAIRS + ((17, 20), (18, 21), (19, 22)) + WHOLEBODY_FACE_FLIP_PAIRS
        + tuple((_LH + i, _RH + i) for i in range(len(WHOLEBODY_HAND)))
    ),
    sigmas=COCO_SIGMAS + WHOLEBODY_FOOT_SIGMAS + WHOLEBODY_FACE_SIGMAS + WHOLEBODY_HAND_SIGMAS * 2,
    links=(
        COCO_LINKS + ((15, 17), (15, 18), (15, 19), (16, 20), (16, 21), (16, 22))
        + _hand_links(_LH) + _hand_links(_RH)
    ),
    upper_body=tuple(range(0, 11)),
    lower_body=(*range(11, 17), *range(*WHOLEBODY_PARTS["foot"])),
    joint_weights=(1.0,) * len(WHOLEBODY_KEYPOINTS),
    parts=WHOLEBODY_PARTS,
))  # fmt: skip

CROWDPOSE_KEYPOINTS = (
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    "head", "neck",
)  # fmt: skip
CROWDPOSE_UPPER = (0, 1, 2, 3, 4, 5, 12, 13)
register(Skeleton(
    name="crowdpose",
    keypoints=CROWDPOSE_KEYPOINTS,
    flip_pairs=((0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11)),
    sigmas=(0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089, 0.079, 0.079),
    links=(
        (10, 8), (8, 6), (11, 9), (9, 7), (6, 7), (0, 6), (1, 7), (0, 1), (0, 2), (1, 3), (2, 4),
        (3, 5), (12, 13), (1, 13), (0, 13),
    ),
    upper_body=CROWDPOSE_UPPER,
    lower_body=_complement(CROWDPOSE_KEYPOINTS, CROWDPOSE_UPPER),
    # mmpose's odd list, only used when use_different_joint_weights is set
    joint_weights=(0.2, 0.2, 0.2, 1.3, 1.5, 0.2, 1.3, 1.5, 0.2, 0.2, 0.5, 0.2, 0.2, 0.5),
    area_rule="0.53wh",
))  # fmt: skip

#: InterHand2.6M's single-hand order: each finger tip (4) to base (1), wrist last.
INTERHAND_KEYPOINTS = (*(f"{f}{j}" for f in _FINGERS for j in range(4, 0, -1)), "wrist")
register(Skeleton(
    name="interhand",
    keypoints=INTERHAND_KEYPOINTS,
    flip_pairs=(),
    sigmas=None,
    links=(
        (20, 3), (3, 2), (2, 1), (1, 0), (20, 7), (7, 6), (6, 5), (5, 4), (20, 11), (11, 10),
        (10, 9), (9, 8), (20, 15), (15, 14), (14, 13), (13, 12), (20, 19), (19, 18), (18, 17),
        (17, 16),
    ),
    upper_body=(),
    lower_body=(),
    category="hand",
))  # fmt: skip

PW3D_KEYPOINTS = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
    "right_collar", "jaw", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_thumb", "right_thumb",
)  # fmt: skip
PW3D_UPPER = (3, 6, 9, *range(12, 24))
register(Skeleton(
    name="3dpw",
    keypoints=PW3D_KEYPOINTS,
    flip_pairs=((1, 2), (4, 5), (7, 8), (10, 11), (13, 14), (16, 17), (18, 19), (20, 21), (22, 23)),
    sigmas=(
        0.107, 0.107, 0.107, 0.107, 0.087, 0.087, 0.107, 0.089, 0.089, 0.107, 0.089, 0.089,
        0.079, 0.079, 0.079, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.062, 0.062,
    ),
    links=(
        (7, 4), (4, 1), (8, 5), (5, 2), (1, 0), (2, 0), (0, 3), (3, 6), (6, 9), (9, 12),
        (12, 15), (12, 16), (12, 17), (16, 18), (17, 19), (18, 20), (19, 21), (20, 22), (21, 23),
        (7, 10), (8, 11), (16, 13), (17, 14),
    ),
    upper_body=PW3D_UPPER,
    lower_body=_complement(PW3D_KEYPOINTS, PW3D_UPPER),
    joint_weights=(1, 1, 1, 1, 1.2, 1.2, 1, 1.5, 1.5, 1, 1.5, 1.5, 1, 1, 1, 1, 1, 1, 1.2, 1.2, 1.5, 1.5, 1.5, 1.5),
    area_rule="0.53wh",
))  # fmt: skip
