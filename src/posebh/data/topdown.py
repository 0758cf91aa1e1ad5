"""Top-down training/evaluation samples from the unified instance table, and the MDT sampler.

The loader yields crops, keypoints in crop pixels, visibility and the dataset index; heatmap
targets are rendered by :class:`posebh.data.codecs.HeatmapCodec` on the training device, per
dataset (DESIGN section 6: no padded targets in the loader).

The dataset's index space is the concatenation of the datasets in ``datasets`` order (the MDT
order, = ``dataset_idx``), each block in table order, so :class:`MultiDatasetSampler` can be
built from :attr:`TopDownDataset.sizes`. ``instance`` in a sample is the row's position in the
table that was passed in.

OpenCV and forked DataLoader workers: calling ``cv2.setNumThreads`` inside a forked worker after
the parent process has used OpenCV's thread pool deadlocks (seen with the pthreads backend of
opencv-python 5). To limit OpenCV's threads, call it in the main process before the workers start.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

from posebh import skeletons
from posebh.data.errors import DataFileError
from posebh.data.paths import resolve
from posebh.data.schema import bbox_array, keypoints_array
from posebh.data.transforms import (
    BOX_PADDING,
    CropParams,
    TopDownAugment,
    affine_matrix,
    box_to_center_scale,
    compose_affine,
    flip_matrix,
    transform_points,
    warp,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Datasets the reference trains with the UDP affine and UDP targets (section 6.1).
REFERENCE_UDP_DATASETS = frozenset({"coco", "mpii"})

# Distinct SeedSequence streams so augmentation and the per-instance jitter never share draws.
_AUG_STREAM, _JITTER_STREAM = 0, 1
_PIXEL_MAX = 255.0


class TopDownDataset(Dataset):
    """One crop per annotated instance, deterministic per (seed, epoch, index).

    ``udp`` names the datasets that use the UDP affine (a set, or a mapping name -> bool);
    ``augment`` is one :class:`TopDownAugment` for all datasets, a mapping per dataset (a missing
    dataset gets no augmentation), or None. Augmentation and centre jitter run only when
    ``train``. ``jitter`` chooses when the centre jitter is drawn: ``"fixed"`` once per instance
    (mmpose 0.x draws it while building its database, so it stays the same every epoch) or
    ``"per_epoch"``.

    ``visible`` is min(1, v). ``outside_crop="keep"`` leaves it at that for joints that the
    augmentation pushed off the crop, as mmpose does: the codec then trains the part of their
    Gaussian that still overlaps the map and gives weight 0 only when the window misses the map.
    ``"zero"`` also zeroes joints outside the crop. ``in_crop`` (returned either way) says the
    keypoint falls on a crop pixel, i.e. within [-0.5, W - 0.5) x [-0.5, H - 0.5).

    Crop points map back to the original image with
    ``transform_points(p, crop_matrix(center, scale, rotation, input_size, udp=udp,
    flip_width=image_width if flipped else None, inverse=True))``; on a flipped sample, channel j
    then holds the skeleton's mirrored keypoint ``flip_index()[j]``.

    :meth:`set_epoch` writes to a shared-memory tensor, so it reaches persistent DataLoader
    workers as long as it is called before the epoch's ``iter(loader)``.
    """

    def __init__(
        self,
        table: pd.DataFrame,
        *,
        image_roots: Mapping[str, str | Path],
        datasets: Sequence[str],
        input_size: tuple[int, int] = (192, 256),
        udp: Mapping[str, bool] | Iterable[str] = REFERENCE_UDP_DATASETS,
        augment: TopDownAugment | Mapping[str, TopDownAugment] | None = None,
        train: bool = False,
        seed: int = 0,
        padding: float = BOX_PADDING,
        jitter: Literal["fixed", "per_epoch"] = "fixed",
        outside_crop: Literal["keep", "zero"] = "keep",
    ):
        self.datasets = list(datasets)
        if len(set(self.datasets)) != len(self.datasets):
            raise ValueError(f"duplicate dataset names in {self.datasets}")
        unknown = sorted(set(table["dataset"].astype(str)) - set(self.datasets))
        if unknown:
            raise ValueError(f"table has rows of datasets {unknown} that are not in datasets={self.datasets}")
        if jitter not in ("fixed", "per_epoch"):
            raise ValueError(f"jitter must be 'fixed' or 'per_epoch', got {jitter!r}")
        if outside_crop not in ("keep", "zero"):
            raise ValueError(f"outside_crop must be 'keep' or 'zero', got {outside_crop!r}")
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.aspect_ratio = self.input_size[0] / self.input_size[1]
        self.train = bool(train)
        self.seed = int(seed)
        self.padding = float(padding)
        self.jitter = jitter
        self.outside_crop = outside_crop
        if isinstance(udp, Mapping):
            udp_names = {name for name, on in udp.items() if on}
        else:
            udp_names = set(udp)
        self.udp = [name in udp_names for name in self.datasets]
        self.augment = [self._augment_for(augment, name) for name in self.datasets]

        names = table["dataset"].astype(str).to_numpy()
        order, keypoints, sizes = [], [], []
        for name in self.datasets:
            skel = skeletons.get(name)
            rows = np.flatnonzero(names == name)
            order.append(rows)
            sizes.append(len(rows))
            kp = keypoints_array(table.iloc[rows]) if len(rows) else np.zeros((0, skel.num_keypoints, 3), np.float32)
            if kp.shape[1] != skel.num_keypoints:
                raise ValueError(f"{name}: rows have {kp.shape[1]} keypoints, the skeleton has {skel.num_keypoints}")
            keypoints.append(kp)
        self.sizes = sizes
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self._rows = np.concatenate(order).astype(np.int64) if order else np.zeros(0, np.int64)
        self._keypoints = keypoints
        self._bbox = bbox_array(table.iloc[self._rows]) if len(self._rows) else np.zeros((0, 4))
        self._files = table["file_name"].astype(str).to_numpy()[self._rows]
        present = {self.datasets[d] for d, n in enumerate(sizes) if n}
        missing = sorted(present - set(image_roots))
        if missing:
            raise KeyError(f"no image root configured for datasets {missing}")
        self._roots = [str(image_roots[name]) if name in image_roots else None for name in self.datasets]
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @staticmethod
    def _augment_for(augment, name: str) -> TopDownAugment | None:
        if augment is None or isinstance(augment, TopDownAugment):
            return augment
        return augment.get(name)

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def skeletons(self) -> list[skeletons.Skeleton]:
        """Per dataset_idx; looked up in the registry, not stored, so the dataset pickles for spawn."""
        return [skeletons.get(name) for name in self.datasets]

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))

    def locate(self, index: int) -> tuple[int, int]:
        """(dataset_idx, position within that dataset) of a concatenation index."""
        d = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return d, int(index - self.offsets[d])

    def image_path(self, index: int) -> Path:
        d, _ = self.locate(index)
        return resolve(self._roots[d], self._files[index])

    def read_image(self, index: int) -> np.ndarray:
        """The BGR image of a sample; raises :class:`DataFileError` naming the file."""
        path = self.image_path(index)
        if not path.is_file():
            raise DataFileError(path, "image not found")
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise DataFileError(path, "cannot decode image (corrupt or unsupported format)")
        return image

    def rng(self, index: int, epoch: int | None = None) -> np.random.Generator:
        epoch = self.epoch if epoch is None else epoch
        return np.random.default_rng([self.seed, _AUG_STREAM, epoch, int(index)])

    def crop_params(self, index: int, image_width: int, epoch: int | None = None) -> CropParams:
        """The crop of one sample: box -> (centre, scale), jitter and augmentation when training."""
        d, local = self.locate(index)
        kp = self._keypoints[d][local].astype(np.float64)
        box = self._bbox[index]
        center, scale = box_to_center_scale(box, self.aspect_ratio, self.padding)
        aug = self.augment[d] if self.train else None
        if aug is None:
            return CropParams(center=center, scale=scale, rotation=0.0, flipped=False, keypoints=kp)
        rng = self.rng(index, epoch)
        jitter_epoch = 0 if self.jitter == "fixed" else (self.epoch if epoch is None else epoch)
        jitter_rng = np.random.default_rng([self.seed, _JITTER_STREAM, jitter_epoch, int(index)])
        center = aug.jitter_center(center, box[2:4], jitter_rng)
        return aug(image_width, kp, center, scale, rng, skeletons.get(self.datasets[d]))

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        d, _ = self.locate(index)
        image = self.read_image(index)
        p = self.crop_params(index, image.shape[1])
        udp = self.udp[d]
        to_crop = affine_matrix(p.center, p.scale, p.rotation, self.input_size, udp=udp)
        pixels = to_crop if not p.flipped else compose_affine(to_crop, flip_matrix(image.shape[1]))
        crop = warp(image, pixels, self.input_size)
        xy = transform_points(p.keypoints[:, :2], to_crop)
        w, h = self.input_size
        in_crop = (xy[:, 0] >= -0.5) & (xy[:, 0] < w - 0.5) & (xy[:, 1] >= -0.5) & (xy[:, 1] < h - 0.5)
        visible = np.minimum(p.keypoints[:, 2], 1.0).clip(0.0, None)
        if self.outside_crop == "zero":
            visible = visible * in_crop
        return {
            "image": torch.from_numpy(normalize(crop)),
            "keypoints": torch.from_numpy(xy.astype(np.float32)),
            "visible": torch.from_numpy(visible.astype(np.float32)),
            "in_crop": torch.from_numpy(in_crop),
            "dataset_idx": d,
            "instance": int(self._rows[index]),
            "center": torch.from_numpy(np.asarray(p.center, np.float64)),
            "scale": torch.from_numpy(np.asarray(p.scale, np.float64)),
            "rotation": float(p.rotation),
            "flipped": bool(p.flipped),
            "image_width": int(image.shape[1]),
            "udp": udp,
        }


#: ImageNet normalisation of every uint8 value, per RGB channel: one table lookup per pixel.
_NORMALIZE_LUT = (
    (np.arange(256)[None, :] / _PIXEL_MAX - np.array(IMAGENET_MEAN)[:, None]) / np.array(IMAGENET_STD)[:, None]
).astype(np.float32)


def normalize(crop_bgr: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 BGR -> 3xHxW float32 RGB, ImageNet-normalised, via a lookup table (3x a float pass)."""
    out = np.empty((3, *crop_bgr.shape[:2]), np.float32)
    for c in range(3):
        np.take(_NORMALIZE_LUT[c], crop_bgr[:, :, 2 - c], out=out[c])
    return out


def collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack a batch; keypoints are grouped per dataset because each has its own K and codec.

    ``targets[d]`` holds ``index`` (positions of dataset d's samples in the batch), ``keypoints``
    (n_d, K_d, 2), ``visible`` and ``in_crop`` (n_d, K_d), for every dataset_idx d in the batch.
    """
    if not samples:
        raise ValueError("cannot collate an empty batch")
    dataset_idx = torch.tensor([s["dataset_idx"] for s in samples], dtype=torch.long)
    targets: dict[int, dict[str, torch.Tensor]] = {}
    for d in sorted(set(dataset_idx.tolist())):
        pos = [i for i, s in enumerate(samples) if s["dataset_idx"] == d]
        targets[d] = {
            "index": torch.tensor(pos, dtype=torch.long),
            "keypoints": torch.stack([samples[i]["keypoints"] for i in pos]),
            "visible": torch.stack([samples[i]["visible"] for i in pos]),
            "in_crop": torch.stack([samples[i]["in_crop"] for i in pos]),
        }
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "dataset_idx": dataset_idx,
        "instance": torch.tensor([s["instance"] for s in samples], dtype=torch.long),
        "center": torch.stack([s["center"] for s in samples]),
        "scale": torch.stack([s["scale"] for s in samples]),
        "rotation": torch.tensor([s["rotation"] for s in samples], dtype=torch.float64),
        "flipped": torch.tensor([s["flipped"] for s in samples], dtype=torch.bool),
        "image_width": torch.tensor([s["image_width"] for s in samples], dtype=torch.long),
        "udp": torch.tensor([s["udp"] for s in samples], dtype=torch.bool),
        "targets": targets,
    }


class MultiDatasetSampler(Sampler[int]):
    """Epoch-seeded order over the concatenation of datasets, sharded for DDP, resumable.

    ``ratios=None`` draws uniformly over the concatenation (a permutation of every index: the
    paper's size-proportional mixing). With ``ratios`` an epoch of ``epoch_size`` draws (default:
    the total size) takes round(ratio_d * epoch_size) samples of dataset d (largest remainder),
    walking fresh permutations of d, then shuffles them together.

    Replica ``rank`` takes every ``num_replicas``-th index of the epoch order. With ``drop_last``
    each replica gets the same whole number of batches (the tail is dropped); without, the order
    wraps around so every replica gets ceil(L / num_replicas) indices.

    ``state_dict(batches_done)`` records the position within the epoch; after
    ``load_state_dict`` the next iteration of that epoch yields exactly the remaining indices. A
    DataLoader reads the sampler ahead of training, so pass the number of batches the loop has
    actually consumed.
    """

    def __init__(
        self,
        dataset_sizes: Sequence[int],
        batch_size: int,
        *,
        ratios: Sequence[float] | None = None,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        drop_last: bool = True,
        epoch_size: int | None = None,
    ):
        self.sizes = [int(n) for n in dataset_sizes]
        if any(n < 0 for n in self.sizes):
            raise ValueError(f"negative dataset size in {self.sizes}")
        if batch_size < 1 or num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"bad batch_size={batch_size}, num_replicas={num_replicas}, rank={rank}")
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        self.total = int(self.offsets[-1])
        if ratios is not None:
            r = np.asarray(ratios, dtype=np.float64)
            if r.shape != (len(self.sizes),) or (r < 0).any() or r.sum() <= 0:
                raise ValueError(f"ratios must be {len(self.sizes)} non-negative numbers with a positive sum")
            if any(ri > 0 and n == 0 for ri, n in zip(r, self.sizes)):
                raise ValueError("a dataset with a positive ratio is empty")
            self.ratios: np.ndarray | None = r / r.sum()
        else:
            self.ratios = None
        self.batch_size = int(batch_size)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.epoch_size = int(epoch_size) if epoch_size is not None else self.total
        self.epoch = 0
        self._start = 0
        self._yielded = 0

    # --- order -----------------------------------------------------------------------------

    def epoch_order(self, epoch: int | None = None) -> np.ndarray:
        """The global (all replicas) order of one epoch."""
        rng = np.random.default_rng([self.seed, self.epoch if epoch is None else epoch])
        if self.ratios is None:
            return self._cycle(rng, np.arange(self.total), self.epoch_size) if self.total else np.zeros(0, np.int64)
        counts = _largest_remainder(self.ratios, self.epoch_size)
        parts = [
            self.offsets[d] + self._cycle(rng, np.arange(n), c) for d, (n, c) in enumerate(zip(self.sizes, counts)) if c
        ]
        return rng.permutation(np.concatenate(parts)) if parts else np.zeros(0, np.int64)

    @staticmethod
    def _cycle(rng: np.random.Generator, pool: np.ndarray, count: int) -> np.ndarray:
        reps = math.ceil(count / len(pool))
        return np.concatenate([rng.permutation(pool) for _ in range(reps)])[:count]

    def per_replica(self) -> int:
        n = self.epoch_size
        if self.drop_last:
            return (n // (self.num_replicas * self.batch_size)) * self.batch_size
        return math.ceil(n / self.num_replicas)

    def replica_indices(self, epoch: int | None = None) -> np.ndarray:
        order = self.epoch_order(epoch)
        per = self.per_replica()
        need = per * self.num_replicas
        if need > len(order):
            order = np.resize(order, need) if len(order) else order
        return order[:need][self.rank :: self.num_replicas].astype(np.int64)

    # --- Sampler protocol --------------------------------------------------------------------

    def __iter__(self) -> Iterator[int]:
        indices = self.replica_indices()
        start = self._start
        self._yielded = start
        for i in range(start, len(indices)):
            self._yielded = i + 1
            yield int(indices[i])
        self._start = 0

    def __len__(self) -> int:
        return max(self.per_replica() - self._start, 0)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch; a new epoch starts from its beginning, the same one keeps a resume point."""
        if int(epoch) != self.epoch:
            self.epoch = int(epoch)
            self._start = 0
            self._yielded = 0

    def state_dict(self, batches_done: int | None = None) -> dict[str, Any]:
        position = self._yielded if batches_done is None else int(batches_done) * self.batch_size
        return {
            "epoch": self.epoch,
            "position": min(position, self.per_replica()),
            "seed": self.seed,
            "num_replicas": self.num_replicas,
            "batch_size": self.batch_size,
            "dataset_sizes": list(self.sizes),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        fixed = {"num_replicas": self.num_replicas, "batch_size": self.batch_size, "dataset_sizes": self.sizes}
        for key, mine in fixed.items():
            if key in state and list(np.atleast_1d(state[key])) != list(np.atleast_1d(mine)):
                raise ValueError(f"cannot resume: {key} was {state[key]}, now {mine}")
        self.seed = int(state.get("seed", self.seed))
        self.epoch = int(state["epoch"])
        self._start = int(state["position"])
        self._yielded = self._start


def _largest_remainder(weights: np.ndarray, total: int) -> np.ndarray:
    """Integer counts summing to ``total`` closest to weights * total."""
    raw = weights * total
    counts = np.floor(raw).astype(np.int64)
    short = total - int(counts.sum())
    if short:
        counts[np.argsort(-(raw - counts), kind="stable")[:short]] += 1
    return counts
