"""Report figures as PNG bytes: training curves, per-dataset bars, qualitative panel, prototype t-SNE.

Figures are built on ``matplotlib.figure.Figure`` (no pyplot, so no global backend or figure
state) under matplotlib's default style, and encoded without the "Software" PNG key, so the
same input gives the same bytes. Files are written atomically (:func:`write_bytes_atomic`).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from posebh import skeletons
from posebh.reporting import tables
from posebh.visualization import contact_sheet, draw_pose

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FIG_DPI = 120
#: PNG metadata: matplotlib would otherwise stamp its version, which changes the bytes across installs.
PNG_METADATA = {"Software": None}
#: Loss terms whose median magnitudes differ by more than this get a log y axis.
LOG_SCALE_RATIO = 100.0
#: History columns that are never drawn as loss curves.
#: Columns of a training log that are not loss terms (the engine's bookkeeping columns among them).
NOT_LOSSES = frozenset({"epoch", "step", "iter", "lr", "time", "data_time", "memory", "grad_norm", "skipped",
                        "images_per_s", "step_seconds", "seconds", "loss_scale"})
#: Longest image side in the qualitative panel (keeps the embedded HTML small).
QUAL_MAX_SIDE = 320
QUAL_HEADER = 22
#: mmpose's demo keypoint threshold: weaker cross-skeleton guesses are not drawn.
KEYPOINT_SCORE_THR = 0.3
#: t-SNE: fixed seed; perplexity min(30, (n - 1) / 3), at least 2; needs this many points.
TSNE_RANDOM_STATE = 0
DEFAULT_PERPLEXITY = 30.0
MIN_PERPLEXITY = 2.0
MIN_TSNE_POINTS = 4
#: Keypoints whose prototype centroid is named in the t-SNE plot (shared by several skeletons).
LABELLED_KEYPOINTS = ("nose", "left_wrist", "left_front_paw", "left_knee", "left_ankle", "left_back_paw", "head_top")


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Whole file or nothing (see :mod:`posebh.atomic`)."""
    from posebh.atomic import write_bytes

    return write_bytes(path, data)


@contextlib.contextmanager
def _style():
    """matplotlib defaults, whatever the user's matplotlibrc says (same input, same pixels)."""
    import matplotlib.style

    with matplotlib.style.context("default"):
        yield


def figure_png(fig: Figure, dpi: int = FIG_DPI) -> bytes:
    buf = io.BytesIO()
    with _style():
        fig.savefig(buf, format="png", dpi=dpi, metadata=PNG_METADATA)
    return buf.getvalue()


def image_png(image: np.ndarray) -> bytes:
    """An RGB uint8 array as PNG (Pillow writes no timestamp)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def save_figure(fig: Figure, path: str | Path, dpi: int = FIG_DPI) -> Path:
    return write_bytes_atomic(path, figure_png(fig, dpi))


def _new_figure(figsize: tuple[float, float]) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


# ----------------------------------------------------------------------------------------------
# Training curves
# ----------------------------------------------------------------------------------------------


def loss_columns(history: pd.DataFrame) -> list[str]:
    """Numeric, not all-NaN columns other than :data:`NOT_LOSSES`; ``loss`` (the total) first."""
    cols = [
        c for c in history.columns
        if c not in NOT_LOSSES and pd.api.types.is_numeric_dtype(history[c]) and history[c].notna().any()
    ]  # fmt: skip
    return sorted(cols, key=lambda c: (c != "loss", list(history.columns).index(c)))


def use_log_scale(history: pd.DataFrame, columns: Sequence[str]) -> bool:
    """True when the terms' median magnitudes span more than :data:`LOG_SCALE_RATIO`."""
    medians = []
    for c in columns:
        v = history[c].to_numpy(np.float64)
        v = v[np.isfinite(v) & (v > 0)]
        if v.size:
            medians.append(float(np.median(v)))
    return len(medians) > 1 and max(medians) / min(medians) > LOG_SCALE_RATIO


def training_curves_figure(history: pd.DataFrame, stage: str) -> Figure:
    """Loss terms vs step (log y when they differ by orders of magnitude); lr in a panel below."""
    terms = loss_columns(history)
    has_lr = "lr" in history.columns and history["lr"].notna().any()
    with _style():
        fig = _new_figure((7.0, 4.8 if has_lr else 3.6))
        if has_lr:
            ax, ax_lr = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
        else:
            ax, ax_lr = fig.subplots(), None
        step = history["step"].to_numpy(np.float64)
        for c in terms:
            ax.plot(step, history[c].to_numpy(np.float64), label=c, linewidth=1.2 if c == "loss" else 0.9)
        if use_log_scale(history, terms):
            ax.set_yscale("log")
        ax.set_ylabel("loss")
        ax.set_title(f"Training: {stage}")
        ax.grid(True, alpha=0.3)
        if terms:
            ax.legend(fontsize=7, ncol=min(4, len(terms)), loc="upper right")
        if ax_lr is not None:
            ax_lr.plot(step, history["lr"].to_numpy(np.float64), color="0.3", linewidth=1)
            ax_lr.set_ylabel("lr")
            ax_lr.grid(True, alpha=0.3)
            ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        (ax_lr or ax).set_xlabel("step")
    return fig


# ----------------------------------------------------------------------------------------------
# Per-dataset bars
# ----------------------------------------------------------------------------------------------


def _nan_if_none(v: float | None) -> float:
    return np.nan if v is None else v


def per_dataset_figure(metrics, rows: Sequence[str] | None = None) -> Figure:
    """Grouped bars: each dataset's headline metric, one bar per row (ViTPose++, PoseBH, ...)."""
    from posebh.reporting.report import coerce_metrics

    m = coerce_metrics(metrics)
    rows = tables.ordered_rows(rows if rows is not None else m.rows)
    datasets = tables.bar_datasets(m)
    values = np.array(
        [[_nan_if_none(tables.headline_display(m, r, ds)) for ds in datasets] for r in rows], np.float64
    ).reshape(len(rows), len(datasets))
    keep = ~np.isnan(values).all(axis=1)
    rows = [r for r, k in zip(rows, keep) if k]
    values = values[keep]
    with _style():
        fig = _new_figure((max(6.0, 0.9 * len(datasets) + 2), 3.8))
        ax = fig.subplots()
        x = np.arange(len(datasets))
        width = 0.8 / max(1, len(rows))
        for i, (row, vals) in enumerate(zip(rows, values)):
            pos = x - 0.4 + width * (i + 0.5)
            bars = ax.bar(pos, np.nan_to_num(vals), width, label=tables.row_label(row), color=f"C{i}")
            for b, v in zip(bars, vals):
                b.set_visible(bool(np.isfinite(v)))
                if np.isfinite(v):
                    ax.annotate(tables.format_number(v), (b.get_x() + b.get_width() / 2, v), ha="center",
                                va="bottom", fontsize=6, xytext=(0, 1), textcoords="offset points")
        ax.set_xticks(x, [tables.dataset_label(ds) for ds in datasets], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("headline (AP x100 / PCKh %)")
        ax.set_title("Headline metric per dataset")
        ax.grid(True, axis="y", alpha=0.3)
        if rows:
            ax.legend(fontsize=7)
        finite = values[np.isfinite(values)]
        ax.set_ylim(0, max(100.0, float(finite.max()) * 1.08) if finite.size else 100.0)
    return fig


# ----------------------------------------------------------------------------------------------
# Qualitative panel (Figures 1-4)
# ----------------------------------------------------------------------------------------------


def _fit(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    import cv2

    h, w = image.shape[:2]
    s = min(1.0, max_side / max(h, w))
    if s == 1.0:
        return image, 1.0
    return cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA), s


def _skeleton_order(name: str) -> tuple[int, str]:
    order = list(tables.MAIN_DATASETS)
    return (order.index(name) if name in order else len(order), name)


def _header(text: str, width: int) -> np.ndarray:
    import cv2

    strip = np.full((QUAL_HEADER, width, 3), 255, np.uint8)
    cv2.putText(strip, text, (4, QUAL_HEADER - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def _pad_width(block: np.ndarray, width: int) -> np.ndarray:
    if block.shape[1] == width:
        return block
    pad = np.full((block.shape[0], width - block.shape[1], 3), 255, np.uint8)
    return np.concatenate([block, pad], axis=1)


def qualitative_panel(
    items: Sequence[Mapping],
    rows: Sequence[str] | None = None,
    *,
    max_side: int = QUAL_MAX_SIDE,
    min_score: float = KEYPOINT_SCORE_THR,
) -> np.ndarray:
    """One block per image: a line per skeleton, a column per row (ViTPose++ | PoseBH side by side).

    A skeleton one row did not predict shows the bare image with "(none)" in its title.
    """
    blocks = []
    for item in items:
        image, scale = _fit(np.asarray(item["image"], np.uint8), max_side)
        preds: Mapping[str, Mapping[str, np.ndarray]] = item["predictions"]
        item_rows = [r for r in tables.ordered_rows(preds) if rows is None or r in rows]
        skels = sorted({s for r in item_rows for s in preds[r]}, key=_skeleton_order)
        cells, titles = [], []
        for skel in skels:
            for row in item_rows:
                kps = preds[row].get(skel)
                label = f"{tables.row_label(row)}: {tables.dataset_label(skel)}"
                if kps is None:
                    cells.append(image)
                    titles.append(f"{label} (none)")
                    continue
                kp = np.array(kps, np.float64).reshape(-1, skeletons.get(skel).num_keypoints, 3)
                kp[..., :2] *= scale
                cells.append(draw_pose(image, kp, skel, min_score=min_score))
                titles.append(label)
        if not cells:
            cells, titles = [image], ["(no predictions)"]
        sheet = contact_sheet(cells, ncols=max(1, len(item_rows)), titles=titles)
        blocks.append(np.concatenate([_header(str(item["title"]), sheet.shape[1]), sheet], axis=0))
    if not blocks:
        raise ValueError("qualitative_panel needs at least one item")
    width = max(b.shape[1] for b in blocks)
    return np.concatenate([_pad_width(b, width) for b in blocks], axis=0)


# ----------------------------------------------------------------------------------------------
# Prototype t-SNE (Figure 5)
# ----------------------------------------------------------------------------------------------


def tsne_perplexity(n_points: int) -> float:
    """sklearn needs perplexity < n; the usual 30 is too high for a handful of prototypes."""
    return float(min(DEFAULT_PERPLEXITY, max(MIN_PERPLEXITY, (n_points - 1) / 3)))


def tsne_points(
    prototypes: np.ndarray, datasets: Sequence[str], *, random_state: int = TSNE_RANDOM_STATE
) -> pd.DataFrame:
    """2-D t-SNE of the J*M L2-normalised prototypes: ``x, y, dataset, keypoint, prototype``.

    Prototypes are compared by cosine similarity in the method, so rows are L2-normalised
    first (Euclidean distance on unit vectors is monotone in cosine).
    """
    from sklearn.manifold import TSNE

    protos = np.asarray(prototypes, np.float64)
    space = skeletons.mdt_space(tuple(datasets))
    if protos.ndim != 3 or protos.shape[0] != space.total:
        raise ValueError(f"expected ({space.total}, M, F) prototypes for {space.datasets}, got {protos.shape}")
    j, m, f = protos.shape
    n = j * m
    if n < MIN_TSNE_POINTS:
        raise ValueError(f"t-SNE needs at least {MIN_TSNE_POINTS} prototypes, got {n}")
    flat = protos.reshape(n, f)
    flat = flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), np.finfo(np.float64).tiny)
    emb = TSNE(
        n_components=2, perplexity=tsne_perplexity(n), init="pca", learning_rate="auto",
        random_state=random_state, n_jobs=1,
    ).fit_transform(flat)  # fmt: skip
    owners = [space.owner(g) for g in range(j)]
    return pd.DataFrame({
        "x": emb[:, 0], "y": emb[:, 1],
        "dataset": [owners[i // m][0] for i in range(n)],
        "keypoint": [skeletons.get(owners[i // m][0]).keypoints[owners[i // m][1]] for i in range(n)],
        "prototype": [i % m for i in range(n)],
    })  # fmt: skip


def tsne_figure(points: pd.DataFrame, label_keypoints: Sequence[str] = LABELLED_KEYPOINTS) -> Figure:
    """Scatter coloured by dataset (legend), with the centroids of ``label_keypoints`` named."""
    datasets = list(dict.fromkeys(points["dataset"]))
    with _style():
        fig = _new_figure((6.4, 5.4))
        ax = fig.subplots()
        for i, ds in enumerate(datasets):
            sel = points[points["dataset"] == ds]
            ax.scatter(sel["x"], sel["y"], s=9, color=f"C{i}", alpha=0.75, linewidths=0, label=tables.dataset_label(ds))
            for kp in label_keypoints:
                pts = sel[sel["keypoint"] == kp]
                if len(pts):
                    ax.annotate(kp, (pts["x"].mean(), pts["y"].mean()), fontsize=5, color=f"C{i}", ha="center")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title("t-SNE of keypoint prototypes")
        ax.legend(fontsize=7, markerscale=1.6, loc="best")
    return fig


__all__ = [
    "FIG_DPI",
    "LOG_SCALE_RATIO",
    "TSNE_RANDOM_STATE",
    "write_bytes_atomic",
    "figure_png",
    "image_png",
    "save_figure",
    "loss_columns",
    "use_log_scale",
    "training_curves_figure",
    "per_dataset_figure",
    "qualitative_panel",
    "tsne_perplexity",
    "tsne_points",
    "tsne_figure",
]
