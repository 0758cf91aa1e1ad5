"""build_report: every artifact written, self-contained HTML, deterministic output, early input errors."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest

from posebh.reporting import PrototypeInput, ReportInputError, build_report, metrics_summary, tables
from posebh.reporting.report import coerce_histories, coerce_prototypes, coerce_qualitative

from . import make_history, make_metrics, make_prototypes, make_qualitative

PREFIX = "data/08_reporting/report"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    protos, datasets = make_prototypes()
    result = build_report(
        make_metrics(), {"mdt": make_history(), "transfer-interhand": make_history(20, spread=0.5)},
        (protos, datasets), make_qualitative(), out, dvc_prefix=PREFIX,
    )  # fmt: skip
    return out, result


def test_every_artifact_is_written(built):
    out, result = built
    expected = {
        "report.md", "report.html", "metrics.json",
        "figures/per_dataset.png", "figures/training_mdt.png", "figures/training_transfer-interhand.png",
        "figures/qualitative.png", "figures/prototypes_tsne.png",
        "plots/per_dataset.csv", "plots/training_mdt.csv", "plots/training_transfer-interhand.csv",
        "plots/prototypes_tsne.csv",
    }  # fmt: skip
    assert set(result["files"]) == expected
    for rel, path in result["files"].items():
        assert path == out / rel and path.is_file() and path.stat().st_size > 0
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # no temp files left behind


def test_markdown_has_every_table_filled_and_na_for_gaps(built):
    out, _ = built
    md = (out / "report.md").read_text()
    for title in ("Main results", "Table 4", "COCO test-dev submission files", "Table 5", "Table 6", "Table 7",
                  "Additional metrics"):  # fmt: skip
        assert f"## {title}" in md
    assert "| COCO | AP | 77.0 | 77.4 | +0.4 |" in md
    assert "| Average (6 MDT) | mean | 68.3 | 70.5 | +2.2 |" in md
    assert "| Training from scratch | 95.0 | 80.0 | 6.50 | n/a | n/a |" in md  # no 3DPW run for this variant
    assert "testdev/posebh.json" in md
    assert "![Training curves: mdt](figures/training_mdt.png)" in md
    assert "Keypoint heads" not in md  # no SAR rows, no costs


def test_html_is_self_contained(built):
    out, result = built
    html = (out / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert html.count("data:image/png;base64,") == sum(rel.endswith(".png") for rel in result["files"])
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", html)
    assert "<script" not in html and "@import" not in html
    assert '<table id="main">' in html and '<td class="num">+0.4</td>' in html


def test_metrics_json_is_sorted_rounded_and_in_table_units(built):
    out, _ = built
    text = (out / "metrics.json").read_text()
    doc = json.loads(text)
    assert text == json.dumps(doc, indent=2, sort_keys=True) + "\n"
    assert doc["main"]["coco"] == {"baseline": 77.04, "posebh": 77.36, "delta": 0.32}
    assert doc["main"][tables.AVERAGE_KEY]["baseline"] == round((77.04 + 31.81 + 92.83 + 74.49 + 75.92 + 57.42) / 6, 3)
    assert doc["rows"]["posebh"]["mpii"]["PCKh@0.5"] == 93.21
    assert doc["transfer"]["interhand"]["posebh"] == {"AUC": 87.1, "EPE": 3.7, "PCK@0.2": 98.6}
    assert "scratch" not in doc["transfer"]["3dpw"]
    assert doc["testdev"]["posebh"] == {"num_results": 1210}
    assert "NaN" not in text


def test_metrics_summary_drops_missing_and_undefined_values():
    doc = metrics_summary({"rows": {"posebh": {"coco": {"AP": 0.7, "APm": -1.0, "AR": float("nan")}}}})
    assert doc["rows"]["posebh"]["coco"] == {"AP": 70.0}
    assert "delta" not in doc["main"]["coco"]


def test_dvc_plot_entries_match_the_written_files(built):
    out, result = built
    by_id = {k: v for e in result["dvc_plots"] if isinstance(e, dict) for k, v in e.items()}
    images = [e for e in result["dvc_plots"] if isinstance(e, str)]
    loss = by_id["training_mdt_loss"]
    (path, fields), = loss["y"].items()
    assert path == f"{PREFIX}/plots/training_mdt.csv"
    with open(out / "plots/training_mdt.csv", newline="") as f:
        header = next(csv.reader(f))
    assert loss["x"] in header and set(fields) <= set(header) and "lr" not in fields
    assert by_id["training_mdt_lr"]["y"] == {path: ["lr"]}
    bars = by_id["per_dataset"]
    with open(out / "plots/per_dataset.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert bars["x"] in rows[0] and list(bars["y"].values())[0] == ["label"]
    assert {"dataset": "coco", "row": "posebh", "value": "77.36"}.items() <= rows[1].items()
    assert sorted(images) == sorted(f"{PREFIX}/{rel}" for rel in result["files"] if rel.endswith(".png"))


def test_two_builds_are_identical(built, tmp_path):
    out, first = built
    protos, datasets = make_prototypes()
    second = build_report(
        make_metrics(), {"mdt": make_history(), "transfer-interhand": make_history(20, spread=0.5)},
        PrototypeInput(protos, datasets), make_qualitative(), tmp_path, dvc_prefix=PREFIX,
    )  # fmt: skip
    assert set(first["files"]) == set(second["files"])
    for rel in first["files"]:
        assert (out / rel).read_bytes() == (tmp_path / rel).read_bytes(), rel
    assert first["dvc_plots"] == second["dvc_plots"]


def test_empty_inputs_still_give_a_report(tmp_path):
    result = build_report({}, None, None, None, tmp_path)
    assert set(result["files"]) == {"report.md", "report.html", "metrics.json"}
    md = (tmp_path / "report.md").read_text()
    assert "No figures" in md and "| COCO | AP | n/a | n/a | n/a |" in md
    assert json.loads((tmp_path / "metrics.json").read_text()) == {}


def test_sar_rows_and_costs_add_the_head_table(tmp_path):
    m = make_metrics()
    m["rows"]["posebh_sar"] = {"coco": {"AP": 0.761}}
    m["head_cost"] = {"heatmap": {"params": 2_500_000, "flops": 1.2e9}, "sar": {"params": 300_000, "flops": 2e8}}
    build_report(m, None, None, None, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "## Keypoint heads: heatmap vs SAR regression" in md
    assert "| PoseBH [SAR] |" in md.replace(" Δ [SAR] |", "")
    doc = json.loads((tmp_path / "metrics.json").read_text())
    assert doc["main"]["coco"]["posebh_sar"] == 76.1 and doc["head_cost"]["sar"]["params"] == 300_000


@pytest.mark.parametrize(
    ("kwargs", "where"),
    [
        ({"histories": {"mdt": make_history().drop(columns="loss")}}, "histories.mdt"),
        ({"histories": {"../mdt": make_history()}}, "histories.../mdt"),
        ({"histories": {"mdt": [1, 2]}}, "histories.mdt"),
        ({"prototypes": (np.zeros((32, 2, 4)), ("coco", "mpii"))}, "prototypes"),
        ({"prototypes": (np.full((33, 2, 4), np.nan), ("coco", "mpii"))}, "prototypes.array"),
        ({"prototypes": (np.zeros((33, 2, 4)), ("coco", "nope"))}, "prototypes.datasets"),
        ({"qualitative": [{"image": np.zeros((8, 8, 3)), "title": "t", "predictions": {}}]}, "qualitative[0].image"),
        (
            {"qualitative": [{"image": np.zeros((8, 8, 3), np.uint8), "title": "t",
                              "predictions": {"posebh": {"aic": np.zeros((1, 17, 3))}}}]},  # fmt: skip
            "qualitative[0].predictions.posebh.aic",
        ),
        ({"metrics": {"rows": {"posebh": {"coco": {"AP": 77.0}}}}}, "metrics.rows.posebh.coco.AP"),
    ],
)
def test_invalid_input_raises_before_anything_is_written(tmp_path, kwargs, where):
    args = {"metrics": {}, "histories": None, "prototypes": None, "qualitative": None, **kwargs}
    out = tmp_path / "report"
    with pytest.raises(ReportInputError) as e:
        build_report(args["metrics"], args["histories"], args["prototypes"], args["qualitative"], out)
    assert e.value.where == where
    assert not out.exists()


def test_input_coercion_accepts_the_documented_forms():
    protos, datasets = make_prototypes()
    a = coerce_prototypes({"array": protos, "datasets": list(datasets)})
    b = coerce_prototypes((protos, ["COCO".lower(), "mpii"]))
    assert a.datasets == b.datasets == ("coco", "mpii")
    h = make_history().iloc[::-1]
    assert coerce_histories({"s": h})["s"]["step"].is_monotonic_increasing
    q = coerce_qualitative([{"image": np.zeros((8, 8, 3), np.uint8), "title": "t",
                             "predictions": {"posebh": {"wholebody": np.zeros((133, 3))}}}])  # fmt: skip
    assert q[0]["predictions"]["posebh"]["coco_wholebody"].shape == (1, 133, 3)
