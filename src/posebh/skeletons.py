"""The skeleton registry: the single source of truth for every dataset's keypoint facts.

Each entry is keyed by dataset identity (``apt36k`` and ``ochuman`` have their own entries even
though they reuse the AP-10K and COCO skeletons). Nothing else in the project writes a keypoint
name, a flip pair or an OKS sigma.

The global MDT keypoint space concatenates the skeletons of an ordered list of datasets; PoseBH's
six training sets in paper order give J = 214 (``mdt_space(PAPER_MDT_DATASETS)``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

AreaRule = Literal["annotation", "wh", "0.53wh"]

#: The bounding-box-to-OKS-area factor of the xtcocotools ``use_area=False`` convention.
OKS_BOX_AREA_FACTOR = 0.53


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

# TODO(registry): aic, mpii, ap10k, apt36k, coco_wholebody, crowdpose, ochuman, interhand, 3dpw
