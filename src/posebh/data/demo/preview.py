"""A contact sheet of generated images with their keypoints, drawn from what the readers return
(rows named in DEFECTS.json left out).

Reading back through :func:`posebh.data.read` (not the generator's memory) makes the sheet a
visual check of the whole chain: writer, release format, reader, drawing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from posebh.data.demo.defects import DEFECTS_FILE
from posebh.data.demo.generate import DEFAULT_OUT, reader_sources

#: (dataset, split) shown, in order; each contributes the images with the most instances.
PREVIEW = (
    ("coco", "train"), ("coco_wholebody", "train"), ("aic", "train"), ("mpii", "train"), ("ochuman", "val"),
    ("crowdpose", "test"), ("ap10k", "train"), ("apt36k", "all"), ("interhand", "train"), ("3dpw", "train"),
)  # fmt: skip
UPSCALE = 1.5
JPEG_QUALITY = 85


def preview_images(root: str | Path = DEFAULT_OUT, per_dataset: int = 2) -> tuple[list[np.ndarray], list[str]]:
    """RGB images with every instance drawn, and their titles."""
    import cv2

    from posebh import data
    from posebh.data.paths import resolve
    from posebh.visualization import draw_pose

    sources = reader_sources(root)
    planted = json.loads((Path(root) / DEFECTS_FILE).read_text())["defects"]
    images, titles = [], []
    for dataset, split in PREVIEW:
        fmt, kwargs = sources[dataset][split]
        df = data.read(fmt, split=split, **kwargs)
        bad = {d["instance_id"] for d in planted if d["dataset"] == dataset and d["split"] == split}
        df = df[df["issue"].isna() & (df["iscrowd"] == 0) & ~df["instance_id"].isin(bad)]
        counts = df.groupby("file_name").size().sort_values(ascending=False, kind="stable")
        # the busiest image, then images spread over the rest of the list (variety, not repeats)
        picks = np.unique(np.linspace(0, len(counts) - 1, per_dataset + 1)[:per_dataset].round().astype(int))
        for name in counts.index[picks]:
            rows = df[df["file_name"] == name]
            bgr = cv2.imread(str(resolve(kwargs["image_root"], name)))
            rgb = cv2.resize(bgr[..., ::-1], None, fx=UPSCALE, fy=UPSCALE, interpolation=cv2.INTER_LINEAR)
            kps = np.stack(rows["keypoints"].to_numpy()).reshape(len(rows), -1, 3).astype(np.float64)
            kps[..., :2] = (kps[..., :2] + 0.5) * UPSCALE - 0.5
            boxes = np.stack(rows["bbox"].to_numpy()) * UPSCALE
            images.append(draw_pose(rgb, kps, dataset, boxes=boxes, radius=2, thickness=1))
            titles.append(f"{dataset} {split}")
    return images, titles


def write_preview(path: str | Path, root: str | Path = DEFAULT_OUT, per_dataset: int = 2, ncols: int = 5) -> Path:
    """Save the contact sheet as a JPEG (deterministic for a given demo folder)."""
    from posebh.data.demo.writers import OutputTree, encode_jpeg
    from posebh.visualization import contact_sheet

    images, titles = preview_images(root, per_dataset)
    sheet = contact_sheet(images, ncols, titles=titles)
    path = Path(path)
    tree = OutputTree(path.parent)
    tree.write_bytes(path.name, encode_jpeg(sheet, JPEG_QUALITY))
    return path
