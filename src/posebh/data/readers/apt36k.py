"""APT-36K raw release (apt36k_annotations.json): COCO-style with video fields.

Image-root convention: the release's file names are Windows paths with a drive prefix, e.g.
``D:\\Animal_pose\\AP-36k-patr1\\29wolf\\v3c2\\frame7.jpg``. Only the last three components are
meaningful (species folder / clip folder / frame), so ``file_name`` is ``29wolf/v3c2/frame7.jpg``
and the image root is the folder that holds the species folders. Folder names are kept exactly
as released, mis-encoded or non-ASCII ones included (``clip46√``); the species folder, whose
spelling may differ from the category name, is ``extra["species_folder"]``.

Other release quirks: ``is_crowd`` instead of ``iscrowd``; ``video_id`` and ``track_id`` per
annotation (``video_id`` also per image); ``frame_index`` is parsed from ``frame<k>.<ext>`` and
is <NA> when the name does not follow that pattern; category names keep their misspellings
("hourse", "raccon").
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from posebh.data import register_reader
from posebh.data.errors import UnsafePathError
from posebh.data.paths import relative_file_name
from posebh.data.readers.coco import ImageName, instances_from_coco, load_document

#: species folder / clip folder / frame
PATH_COMPONENTS = 3
_SEPARATORS = re.compile(r"[\\/]+")
_FRAME = re.compile(r"^frame(\d+)\.[A-Za-z0-9]+$", re.IGNORECASE)


def apt36k_file_name(raw: Any) -> ImageName:
    """The last three components of a release path, with the species folder and frame index."""
    if not isinstance(raw, str):
        return ImageName("" if raw is None else str(raw), "file_name is not a string")
    parts = [p for p in _SEPARATORS.split(raw) if p]
    kept = "/".join(parts[-PATH_COMPONENTS:])
    if len(parts) < PATH_COMPONENTS:
        return ImageName(raw, f"file name has fewer than {PATH_COMPONENTS} components (species/clip/frame)")
    try:
        name = relative_file_name(kept)
    except UnsafePathError as e:
        return ImageName(raw, f"unsafe file name ({e.problem})")
    if name != kept:
        return ImageName(raw, "unsafe file name (path components do not normalise)")
    m = _FRAME.match(parts[-1])
    return ImageName(name, None, {"species_folder": parts[-PATH_COMPONENTS]}, int(m.group(1)) if m else None)


@register_reader("apt36k")
def read_apt36k(
    *, annotations: str | Path, split: str, dataset: str = "apt36k", image_root: str | Path | None = None
) -> pd.DataFrame:
    """The raw APT-36K annotation file as one table (PoseBH's video-disjoint split is ``prepare``'s job)."""
    doc = load_document(annotations, ("images", "annotations"))
    return instances_from_coco(
        doc,
        split=split,
        dataset=dataset,
        image_root=image_root,
        name_rule=apt36k_file_name,
        crowd_keys=("iscrowd", "is_crowd"),
    )
