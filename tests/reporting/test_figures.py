"""Figures: valid, byte-stable PNGs; log scale when losses differ by orders; t-SNE coloured by dataset."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from posebh.reporting import figures
from posebh.visualization import SIDE_COLORS

from . import make_history, make_metrics, make_prototypes, make_qualitative

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(PNG_SIGNATURE)
    with Image.open(io.BytesIO(data)) as im:
        im.verify()
    with Image.open(io.BytesIO(data)) as im:
        return im.size


def test_loss_columns_skip_bookkeeping_and_empty_terms():
    h = make_history()
    h["cps"] = np.nan  # a term not logged in this stage
    h["grad_norm"] = 1.0
    assert figures.loss_columns(h) == ["loss", "heatmap", "prototypes", "phm"]


@pytest.mark.parametrize(("spread", "scale"), [(1e-6, "log"), (0.5, "linear")])
def test_training_curves_use_log_scale_only_for_terms_of_different_magnitude(spread, scale):
    fig = figures.training_curves_figure(make_history(spread=spread), "mdt")
    loss_ax, lr_ax = fig.axes
    assert loss_ax.get_yscale() == scale
    assert sorted(t.get_text() for t in loss_ax.get_legend().get_texts()) == ["heatmap", "loss", "phm", "prototypes"]
    assert lr_ax.get_ylabel() == "lr"


def test_training_curves_without_lr_have_one_panel():
    fig = figures.training_curves_figure(make_history().drop(columns="lr"), "stage1")
    assert len(fig.axes) == 1


def test_figures_are_plausible_pngs_and_byte_stable():
    h = make_history()
    a = figures.figure_png(figures.training_curves_figure(h, "mdt"))
    b = figures.figure_png(figures.training_curves_figure(h, "mdt"))
    assert a == b
    w, hgt = _png_size(a)
    assert 400 <= w <= 2000 and 300 <= hgt <= 1500
    assert b"Software" not in a and b"matplotlib" not in a
    bars = figures.figure_png(figures.per_dataset_figure(make_metrics()))
    w, hgt = _png_size(bars)
    assert 600 <= w <= 3000 and 300 <= hgt <= 1500


def test_per_dataset_bars_have_one_series_per_row():
    fig = figures.per_dataset_figure(make_metrics())
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["ViTPose++", "PoseBH"]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels[:6] == ["COCO", "AIC", "MPII", "AP-10K", "APT-36K", "COCO-WholeBody"]
    assert "OCHuman val" in labels and "CrowdPose" in labels
    posebh_bars = ax.containers[1]
    coco = posebh_bars[0]
    assert coco.get_height() == pytest.approx(77.36)
    val = posebh_bars[labels.index("OCHuman val")]
    assert not val.get_visible()  # PoseBH has no OCHuman val number: no bar


@pytest.mark.parametrize(("n", "expected"), [(4, 2.0), (10, 3.0), (61, 20.0), (1000, 30.0)])
def test_tsne_perplexity_is_adapted_and_below_the_point_count(n, expected):
    assert figures.tsne_perplexity(n) == expected
    assert figures.tsne_perplexity(n) < n


def test_tsne_points_label_every_prototype_with_its_dataset_and_keypoint():
    protos, datasets = make_prototypes(m=2)
    pts = figures.tsne_points(protos, datasets)
    assert len(pts) == 33 * 2
    assert pts["dataset"].value_counts().to_dict() == {"coco": 17 * 2, "mpii": 16 * 2}
    assert pts.loc[0, "keypoint"] == "nose" and pts.loc[1, "keypoint"] == "nose"
    assert pts.loc[34, "keypoint"] == "right_ankle"  # first MPII joint
    assert pts["prototype"].tolist()[:4] == [0, 1, 0, 1]
    assert np.isfinite(pts[["x", "y"]].to_numpy()).all()
    again = figures.tsne_points(protos, datasets)
    np.testing.assert_array_equal(pts[["x", "y"]].to_numpy(), again[["x", "y"]].to_numpy())


def test_tsne_figure_colours_by_dataset_with_a_legend():
    protos, datasets = make_prototypes(m=2)
    fig = figures.tsne_figure(figures.tsne_points(protos, datasets))
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["COCO", "MPII"]
    colours = [tuple(np.round(c.get_facecolor()[0][:3], 4)) for c in ax.collections]
    assert len(ax.collections) == 2 and colours[0] != colours[1]
    assert [len(c.get_offsets()) for c in ax.collections] == [34, 32]
    assert "nose" in {t.get_text() for t in ax.texts}


def test_tsne_rejects_prototypes_that_do_not_match_the_datasets():
    protos, _ = make_prototypes()
    with pytest.raises(ValueError, match="33"):
        figures.tsne_points(protos[:-1], ("coco", "mpii"))


def _coloured(region: np.ndarray) -> int:
    """Pixels that are not grey (pose drawings are coloured; titles are black on white)."""
    r = region.astype(int)
    return int(((np.abs(r[..., 0] - r[..., 1]) > 30) | (np.abs(r[..., 1] - r[..., 2]) > 30)).sum())


def test_qualitative_panel_puts_rows_side_by_side_and_skeletons_on_lines():
    items = make_qualitative()
    panel = figures.qualitative_panel(items)
    assert panel.dtype == np.uint8 and panel.ndim == 3
    h, w = panel.shape[:2]
    top, bottom = panel[figures.QUAL_HEADER : (h + figures.QUAL_HEADER) // 2], panel[(h + figures.QUAL_HEADER) // 2 :]
    left, right = slice(0, w // 2), slice(w // 2, w)
    assert _coloured(top[:, left]) > 0 and _coloured(top[:, right]) > 0  # COCO: both rows
    assert _coloured(bottom[:, left]) == 0  # AIC: baseline did not predict it
    assert _coloured(bottom[:, right]) > 0
    assert (panel.reshape(-1, 3) == SIDE_COLORS["left"]).all(axis=1).any()


def test_qualitative_panel_downscales_large_images_and_keypoints():
    items = make_qualitative(h=480, w=640)
    panel = figures.qualitative_panel(items, max_side=160)
    assert panel.shape[1] < 2 * 160 + 40
    assert _coloured(panel) > 0
    assert figures.image_png(panel) == figures.image_png(figures.qualitative_panel(items, max_side=160))
