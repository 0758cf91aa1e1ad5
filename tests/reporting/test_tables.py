"""Tables: hand-checked averages and differences, one number format, n/a for gaps, clear input errors."""

from __future__ import annotations

import math

import pytest

from posebh.reporting import ReportInputError, coerce_metrics, tables
from posebh.reporting.tables import NA

from . import make_metrics


@pytest.fixture
def metrics():
    return make_metrics()


def test_main_table_average_is_the_mean_of_the_six_headlines(metrics):
    t = tables.main_table(metrics)
    avg_label = tables.dataset_label(tables.AVERAGE_KEY)
    # hand calculation from the fixture, in print units (AP x100; MPII PCKh already %)
    baseline = (77.04 + 31.81 + 92.83 + 74.49 + 75.92 + 57.42) / 6
    posebh = (77.36 + 32.08 + 93.21 + 75.03 + 87.24 + 57.91) / 6
    assert t.values.loc[avg_label, "ViTPose++"] == pytest.approx(baseline)
    assert t.values.loc[avg_label, "PoseBH"] == pytest.approx(posebh)
    assert t.frame.loc[avg_label, "ViTPose++"] == "68.3"
    assert t.frame.loc[avg_label, "PoseBH"] == "70.5"
    assert t.frame.loc[avg_label, "Δ"] == "+2.2"
    assert list(t.frame.index) == [
        "COCO", "AIC", "MPII", "AP-10K", "APT-36K", "COCO-WholeBody", avg_label,
    ]  # fmt: skip
    assert t.frame.loc["MPII", "Metric"] == "PCKh@0.5"
    assert t.frame.loc["COCO-WholeBody", "Metric"] == "whole-body AP"


def test_main_table_prints_ap_x100_and_delta_of_printed_numbers(metrics):
    t = tables.main_table(metrics)
    assert t.frame.loc["COCO", "ViTPose++"] == "77.0"
    assert t.frame.loc["COCO", "PoseBH"] == "77.4"
    assert t.frame.loc["COCO", "Δ"] == "+0.4"  # 77.4 - 77.0, although the raw gap is 0.32
    assert t.frame.loc["MPII", "PoseBH"] == "93.2"  # PCKh is not multiplied again
    assert t.frame.loc["APT-36K", "Δ"] == "+11.3"


def test_missing_dataset_prints_na_and_voids_the_average(metrics):
    del metrics["rows"]["posebh"]["aic"]
    t = tables.main_table(metrics)
    assert t.frame.loc["AIC", "PoseBH"] == NA
    assert t.frame.loc["AIC", "Δ"] == NA
    assert t.frame.loc["AIC", "ViTPose++"] == "31.8"
    avg = tables.dataset_label(tables.AVERAGE_KEY)
    assert t.frame.loc[avg, "PoseBH"] == NA and math.isnan(t.values.loc[avg, "PoseBH"])
    assert t.frame.loc[avg, "ViTPose++"] == "68.3"


@pytest.mark.parametrize(
    ("a", "b", "text"),
    [(77.04, 77.36, "+0.4"), (77.36, 77.04, "-0.4"), (77.04, 77.01, "0.0"), (None, 77.0, NA), (77.0, math.nan, NA)],
)
def test_format_delta(a, b, text):
    assert tables.format_delta(a, b) == text


def test_number_formats_follow_the_metric_kind():
    assert tables.metric_kind("AP", "coco") == "fraction"
    assert tables.metric_kind("Head", "mpii") == "percent"  # MPII parts are percentages too
    assert tables.metric_kind("EPE", "interhand") == "pixels"
    assert tables.metric_kind("num_gt", "coco") == "count"
    assert tables.display_value(0.7734, "fraction") == pytest.approx(77.34)
    assert tables.display_value(92.8, "percent") == 92.8
    assert tables.display_value(-1.0, "fraction") is None  # pycocotools' "undefined"
    assert tables.format_number(77.34) == "77.3"
    assert tables.format_number(3.7, tables.PIXEL_DECIMALS) == "3.70"
    assert tables.format_number(-0.04) == "0.0"
    assert tables.format_number(None) == NA and tables.format_number(math.nan) == NA


def test_coco_table_and_testdev_files(metrics):
    t = tables.coco_table(metrics)
    val = t.frame[t.frame["Split"] == "val"]
    assert list(val.columns) == ["Split", "AP", "AP50", "AP75", "APm", "APl", "AR"]
    assert val.loc["PoseBH", "AP50"] == "92.4"  # 0.7736 + 0.15
    testdev = t.frame[t.frame["Split"] == tables.TESTDEV]
    assert (testdev[["AP", "AR"]] == NA).all().all()  # no server numbers yet
    files = tables.testdev_table(metrics)
    assert files.frame.loc["PoseBH", "Results file"] == "testdev/posebh.json"
    assert files.frame.loc["PoseBH", "Results"] == "1210"


def test_testdev_numbers_fill_in_when_the_server_results_are_added(metrics):
    metrics["rows"]["posebh"]["coco/test-dev"] = {"AP": 0.766, "AR": 0.817}
    t = tables.coco_table(metrics)
    row = t.frame[(t.frame["Split"] == tables.TESTDEV) & (t.frame.index == "PoseBH")]
    assert row["AP"].item() == "76.6" and row["AR"].item() == "81.7"


def test_ochuman_table_has_val_test_and_occluded(metrics):
    t = tables.ochuman_table(metrics)
    assert t.frame.loc["ViTPose++", "test AP"] == "82.6"
    assert t.frame.loc["ViTPose++", "val AP (occluded)"] == "40.0"
    assert t.frame.loc["PoseBH", "test AP (occluded)"] == "42.5"
    assert t.frame.loc["PoseBH", "val AP"] == NA


def test_comparison_table_has_our_rows_and_the_paper_rows(metrics):
    t = tables.comparison_table(metrics)
    assert t.frame.index[:2].tolist() == ["ViTPose++", "PoseBH"]
    assert "PoseBH-B (paper)" in t.frame.index
    assert t.frame.loc["PoseBH-B (paper)", "APT-36K"] == "87.2"
    assert t.values.loc["ViTPose++-B (paper)", "Average (6 MDT)"] == pytest.approx(
        (77.0 + 31.8 + 92.8 + 74.5 + 75.9 + 57.4) / 6
    )
    assert any("APT-36K" in n for n in t.notes)
    assert "PoseBH-B (paper)" not in tables.comparison_table(metrics, include_paper=False).frame.index


def test_transfer_table_rows_units_and_gaps(metrics):
    t = tables.transfer_table(metrics)
    assert t.frame.index[:4].tolist() == [
        "ViTPose++ fine-tuning", "Training from scratch", "From an AIC-only model", "PoseBH",
    ]  # fmt: skip
    assert t.frame.loc["PoseBH", "InterHand PCK@0.2"] == "98.6"
    assert t.frame.loc["PoseBH", "InterHand EPE (px)"] == "3.70"
    assert t.frame.loc["PoseBH", "3DPW AP"] == "83.6"
    assert t.frame.loc["Training from scratch", "3DPW AP"] == NA


def test_extras_table(metrics):
    t = tables.extras_table(metrics)
    crowd = t.frame[t.frame.index == "CrowdPose"].set_index("Metric")
    assert crowd.loc["AP (hard)", "PoseBH"] == "63.0"
    assert t.frame[t.frame["Metric"] == "PCKh@0.1"].loc["MPII", "ViTPose++"] == "39.1"
    px = t.frame[t.frame["Metric"] == tables.metric_label("pixel_error")]
    assert px.index.tolist() == ["AIC", "AP-10K", "APT-36K"]
    assert px.loc["AIC", "PoseBH"] == "6.25"


def test_sar_rows_add_head_columns_and_the_head_table(metrics):
    assert tables.head_table(metrics) is None  # one head, no costs
    assert "PoseBH [SAR]" not in tables.main_table(metrics).frame.columns
    metrics["rows"]["posebh_sar"] = {"coco": {"AP": 0.7601}}
    metrics["head_cost"] = {"heatmap": {"params": 2_500_000, "flops": 1.25e9}, "sar": {"params": 310_000, "flops": 2e8}}
    main = tables.main_table(metrics)
    assert main.frame.loc["COCO", "PoseBH [SAR]"] == "76.0"
    assert main.frame.loc["COCO", "ViTPose++ [SAR]"] == NA
    metrics["rows"]["baseline_sar"] = {
        "mpii": {"PCKh@0.1": 41.25, "PCKh@0.5": 88.0, "pixel_error": 5.0}, "aic": {"pixel_error": 3.0}}
    heads = tables.head_table(metrics)
    assert heads.frame.index.tolist() == ["ViTPose++", "PoseBH", "ViTPose++", "PoseBH"]
    assert heads.frame["Head"].tolist() == ["heatmap", "heatmap", "SAR", "SAR"]
    sar_base = heads.frame.iloc[2]
    assert sar_base["Params (M)"] == "0.31" and heads.frame.iloc[0]["GFLOPs"] == "1.25"
    assert sar_base["MPII PCKh@0.1"] == "41.2" and sar_base["MPII PCKh@0.5"] == "88.0"
    assert sar_base["mean pixel error (px)"] == "4.00"  # (5.0 + 3.0) / 2: the datasets that report it
    assert heads.frame.iloc[3]["COCO AP"] == "76.0" and sar_base["COCO AP"] == NA
    assert heads.frame.iloc[1]["MPII PCKh@0.1"] == "39.1" and heads.frame.iloc[1]["mean pixel error (px)"] == "6.25"
    assert tables.row_label("posebh_sar") == "PoseBH (SAR head)"
    assert tables.ordered_rows(["posebh_sar", "posebh", "baseline_sar", "baseline"]) == [
        "baseline", "posebh", "baseline_sar", "posebh_sar",
    ]  # fmt: skip


def test_markdown_and_html_rendering():
    m = {"rows": {"posebh": {"coco": {"AP": 0.5}}}}
    t = tables.main_table(m)
    md = t.to_markdown().splitlines()
    assert md[0].startswith("| Dataset | Metric | ViTPose++ | PoseBH | Δ |")
    assert md[1] == "|:---|:---|---:|---:|---:|"
    assert "| COCO | AP | n/a | 50.0 | n/a |" in md
    html = tables.extras_table({"rows": {"a|b<i>": {"coco": {"pixel_error": 1.0}}}})
    assert "a\\|b<i>" in html.to_markdown()
    assert "a|b&lt;i&gt;" in html.to_html() and "<i>" not in html.to_html()


def test_aliases_and_split_keys_are_canonical():
    m = coerce_metrics({"rows": {"posebh": {"wholebody": {"wholebody_AP": 0.6}, "coco/val": {"AP": 0.7}}}})
    assert set(m.rows["posebh"]) == {"coco_wholebody", "coco"}
    assert m.value("posebh", "coco", "AP") == 0.7


@pytest.mark.parametrize(
    ("metrics", "where", "words"),
    [
        ({"rows": {"posebh": {"coco": {"AP": 77.3}}}}, "metrics.rows.posebh.coco.AP", "multiplied"),
        ({"rows": {"posebh": {"cocoo": {"AP": 0.7}}}}, "metrics.rows.posebh.cocoo", "unknown skeleton"),
        ({"rows": {"posebh": {"coco": {"AP": "0.7"}}}}, "metrics.rows.posebh.coco.AP", "expected a number"),
        ({"rows": {"posebh": {"coco": {"AP": 0.7}, "coco/val": {"AP": 0.7}}}}, "metrics.rows.posebh.coco/val", "same dataset"),
        ({"rows": {"posebh": {"interhand": {"EPE": -2.0}}}}, "metrics.rows.posebh.interhand.EPE", "negative"),
        ({"row": {}}, "metrics", "unknown section"),
        ({"rows": []}, "metrics.rows", "mapping"),
        ({"transfer": {"coco": {}}}, "metrics.transfer.coco", "not a transfer task"),
        ({"testdev": {"posebh": {"results_file": "x.json"}}}, "metrics.testdev.posebh", "num_results"),
        ({"head_cost": {"sar": {"params": 10}}}, "metrics.head_cost.sar", "flops"),
    ],
)
def test_invalid_metrics_raise_a_clear_error(metrics, where, words):
    with pytest.raises(ReportInputError) as e:
        coerce_metrics(metrics)
    assert e.value.where == where
    assert words in str(e.value)


def test_empty_metrics_render_all_na():
    for t in tables.all_tables({}):
        numeric = [c for c in t.frame.columns if t.values[c].dtype.kind == "f"]
        assert (t.frame[numeric].drop(index=[i for i in t.frame.index if "(paper)" in i]) == NA).all().all(), t.key
