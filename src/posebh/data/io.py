"""Low-level readers shared by the format readers: JSON with clear errors, image sizes."""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any

from posebh.data.errors import DataFileError


def load_json(path: str | Path) -> Any:
    """Load a JSON file; every failure names the file and the problem."""
    p = Path(path)
    if not p.is_file():
        raise DataFileError(p, "file not found" if not p.exists() else "not a regular file")
    try:
        with p.open("rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataFileError(p, f"cannot read: {e.strerror or e}") from e
    if not raw.strip():
        raise DataFileError(p, "file is empty")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataFileError(p, f"not UTF-8 text (byte {e.start}: {e.reason})") from e
    # A large annotation file makes millions of small objects; the cyclic collector would
    # rescan them repeatedly while parsing (about 25% of the load time of COCO train).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataFileError(p, f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from e
    except RecursionError:
        raise DataFileError(p, "JSON nested too deeply to parse (hostile or corrupt file)") from None
    finally:
        if gc_was_enabled:
            gc.enable()


def require_keys(obj: Any, keys: tuple[str, ...], path: str | Path, what: str = "top level") -> None:
    if not isinstance(obj, dict):
        raise DataFileError(path, f"expected a JSON object at the {what}, found {type(obj).__name__}")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise DataFileError(path, f"missing key(s) {missing} at the {what}")


def index_by_id(entries: list) -> tuple[dict[int, dict], dict[int, int]]:
    """The objects of a JSON list by their integer ``id`` (the last wins), and the ids that occur
    more than once with their count (annotations on those cannot be attributed to one image)."""
    index: dict[int, dict] = {}
    counts: dict[int, int] = {}
    for e in entries:
        if isinstance(e, dict) and type(e.get("id")) is int:
            index[e["id"]] = e
            counts[e["id"]] = counts.get(e["id"], 0) + 1
    return index, {k: c for k, c in counts.items() if c > 1}


def lookup_image(index: dict[int, dict], duplicates: dict[int, int], image_id: Any) -> tuple[dict, str | None]:
    """The image of an annotation's ``image_id`` ({} if unknown) and, for a repeated id, why it is ambiguous."""
    if type(image_id) is not int:
        return {}, None
    if image_id in duplicates:
        return index.get(image_id, {}), f"image id {image_id} appears {duplicates[image_id]} times in images"
    return index.get(image_id, {}), None


#: The issue of rows whose image size could not be read because no image root was given.
NO_IMAGE_ROOT = "image size unknown (no image_root)"


def image_size_under(image_root: str | Path | None, file_name: str) -> tuple[tuple[int, int] | None, str | None]:
    """(size, problem) of an image under its root: size None when there is no root or the image is
    missing or unreadable; problem set when the name resolves outside the root (e.g. a symlink)."""
    from posebh.data.errors import UnsafePathError
    from posebh.data.paths import resolve

    if image_root is None:
        return None, None
    try:
        return image_size(resolve(image_root, file_name)), None
    except UnsafePathError as e:
        return None, f"unsafe file name ({e.problem})"


def image_size(path: str | Path) -> tuple[int, int] | None:
    """(width, height) from the image header only, or None if the image is missing or unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size
    except (FileNotFoundError, IsADirectoryError, UnidentifiedImageError, OSError, Image.DecompressionBombError):
        return None  # a header claiming billions of pixels is refused like an unreadable one
