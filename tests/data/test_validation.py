"""Validation: planted defects land in quarantine with their check and reason; good rows pass untouched."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from posebh.data.schema import COLUMN_NAMES, make_table
from posebh.data.validation import CHECKS, TableValidationError, render_report_markdown, validate

W, H = 640, 480


def _rows(dataset: str, k: int, n: int, split: str, start: int, **extra) -> pd.DataFrame:
    rng = np.random.default_rng(start)
    kp = np.zeros((n, k, 3), np.float32)
    kp[..., 0] = rng.uniform(0, W, (n, k))
    kp[..., 1] = rng.uniform(0, H, (n, k))
    kp[..., 2] = rng.integers(0, 3, (n, k))
    kp[kp[..., 2] == 0, :2] = 0
    cols = dict(
        dataset=dataset,
        split=split,
        image_id=start + np.arange(n),
        file_name=[f"{dataset}/{split}/{start + i:06d}.jpg" for i in range(n)],
        width=W,
        height=H,
        instance_id=start + np.arange(n),
        bbox=np.tile([10.0, 20.0, 100.0, 200.0], (n, 1)),
        area=np.full(n, 1000.0),
        iscrowd=0,
        keypoints=kp.reshape(n, -1),
        num_keypoints=(kp[..., 2] > 0).sum(1),
        category_id=1,
        category="person",
    )
    cols.update(extra)
    return make_table(cols, n)


@pytest.fixture
def good() -> pd.DataFrame:
    coco = _rows("coco", 17, 30, "val", 0)
    aic = _rows("aic", 14, 20, "train", 1000)
    apt = _rows(
        "apt36k", 17, 30, "train", 2000,
        video_id=np.repeat([1, 2, 3], 10), frame_index=np.tile(np.arange(10), 3), track_id=1, category="dog",
    )  # fmt: skip
    apt.loc[20:, "split"] = "test"  # video 3 in test: disjoint from videos 1, 2
    table = pd.concat([coco, aic, apt], ignore_index=True)
    # Edge cases that must stay clean: within the 5 % tolerance, unlabelled far outside, on the border.
    kp = table.at[0, "keypoints"].copy()
    kp[0:3] = (W + 0.04 * W, -0.04 * H, 2)
    kp[3:6] = (9000, 9000, 0)
    kp[6:9] = (W, H, 1)
    table.at[0, "keypoints"] = kp
    return table


def _set_kp(table: pd.DataFrame, row: int, j: int, values) -> None:
    kp = table.at[row, "keypoints"].copy()
    kp[3 * j : 3 * j + 3] = values
    table.at[row, "keypoints"] = kp


def _plant(table: pd.DataFrame) -> tuple[pd.DataFrame, dict[int, tuple[str, str]]]:
    """Plant one defect per row; returns the table and {row: (check, text expected in the reason)}."""
    t = table.copy()
    planted: dict[int, tuple[str, str]] = {}
    _set_kp(t, 1, 9, (100, 100, 3))
    planted[1] = ("visibility_values", "visibility 3 at keypoint 9 (left_wrist)")
    t.at[2, "bbox"] = np.array([10.0, 20.0, 0.0, 50.0])
    planted[2] = ("bbox_positive", "width 0")
    t.at[3, "keypoints"] = t.at[3, "keypoints"][:48].copy()
    planted[3] = ("keypoint_count", "48 keypoint values, expected 51")
    _set_kp(t, 4, 15, (5000, 100, 2))
    planted[4] = ("keypoints_inside_image", "(5000.0, 100.0)")
    t.at[5, "instance_id"] = t.at[6, "instance_id"]  # row 5 comes first: row 6 is the duplicate
    planted[6] = ("unique_instance_id", f"instance_id {t.at[6, 'instance_id']} repeats")
    t.at[7, "file_name"] = "../x.jpg"
    planted[7] = ("file_name_safe", "'../x.jpg'")
    _set_kp(t, 8, 2, (np.nan, 10, 2))
    planted[8] = ("keypoints_finite", "keypoint 2 (right_eye) is (nan, 10, 2)")
    t.at[9, "issue"] = "bbox given as corners could not be converted"
    planted[9] = ("reader_issue", "bbox given as corners could not be converted")
    t.at[10, "dataset"] = "foo"
    planted[10] = ("dataset_known", "'foo'")
    t.at[11, "bbox"] = np.array([np.nan, 20.0, 10.0, 10.0])
    planted[11] = ("bbox_finite", "[nan, 20, 10, 10]")
    t.at[12, "width"] = 0
    planted[12] = ("image_size_positive", "width 0")
    # APT-36K: video 1 (rows 50..59) mostly in train; move two of its rows to val.
    t.loc[[58, 59], "split"] = "val"
    planted[58] = ("video_split_disjoint", "video 1 of apt36k spans splits train (8 rows), val (2 rows)")
    planted[59] = planted[58]
    return t, planted


def test_planted_defects_are_quarantined_with_check_and_reason(good):
    table, planted = _plant(good)
    v = validate(table)
    q = v.quarantine.set_index("row")
    assert sorted(q.index) == sorted(planted)
    for row, (check, text) in planted.items():
        assert q.at[row, "check"] == check, (row, q.at[row, "check"], q.at[row, "reason"])
        assert text in q.at[row, "reason"], (row, q.at[row, "reason"])
    # quarantined rows keep their original content
    for row in planted:
        assert q.at[row, "instance_id"] == table.at[row, "instance_id"]
        np.testing.assert_array_equal(q.at[row, "keypoints"], table.at[row, "keypoints"])


def test_good_rows_pass_untouched(good):
    table, planted = _plant(good)
    v = validate(table)
    expected = table.drop(index=list(planted)).reset_index(drop=True)
    assert len(v.clean) == len(table) - len(planted)
    assert list(v.clean.columns) == list(table.columns)
    pd.testing.assert_frame_equal(v.clean, expected)
    # the first of the duplicated pair and the majority-split rows of the shared video stay clean
    assert 5 in set(table.index) - set(planted)
    assert (v.clean["instance_id"] == table.at[5, "instance_id"]).sum() == 1


def test_clean_table_passes_completely(good):
    v = validate(good)
    assert len(v.quarantine) == 0
    pd.testing.assert_frame_equal(v.clean, good)
    assert v.report["success"] and v.report["gx"]["success"]
    assert all(c["failures"] == 0 for c in v.report["checks"].values())


def test_report_counts_add_up(good):
    table, planted = _plant(good)
    r = validate(table).report
    json.dumps(r)  # JSON-able
    assert r["rows_in"] == len(table)
    assert r["clean"] + r["quarantined"] == r["rows_in"]
    assert r["quarantined"] == len(planted)
    assert sum(d["rows_in"] for d in r["datasets"].values()) == len(table)
    for name, d in r["datasets"].items():
        assert d["rows_in"] == (table["dataset"] == name).sum()
        assert d["clean"] + d["quarantined"] == d["rows_in"]
        assert sum(s["rows_in"] for s in d["splits"].values()) == d["rows_in"]
        assert sum(s["quarantined"] for s in d["splits"].values()) == d["quarantined"]
    assert r["datasets"]["apt36k"]["splits"]["val"] == {"rows_in": 2, "clean": 0, "quarantined": 2}
    expected_counts = pd.Series([c for c, _ in planted.values()]).value_counts()
    for check in CHECKS:
        assert r["checks"][check]["failures"] == expected_counts.get(check, 0), check
    assert r["checks"]["visibility_values"]["examples"][0].startswith("row 1 (coco/val")
    by_type = {(e["check"], e["column"]): e for e in r["expectations"]}
    assert by_type[("visibility_values", "keypoints_bad_visibility")]["unexpected_count"] == 1
    assert by_type[("visibility_values", "keypoints_bad_visibility")]["success"] is False
    assert by_type[("dataset_known", "dataset")]["type"] == "expect_column_values_to_be_in_set"
    assert all(e["success"] for e in r["expectations"] if e["level"] == "table")


def test_several_failures_in_one_row_are_joined(good):
    t = good.copy()
    _set_kp(t, 3, 0, (100, 100, 7))
    t.at[3, "file_name"] = "/abs/path.jpg"
    q = validate(t).quarantine
    assert len(q) == 1
    assert q.at[0, "check"] == "file_name_safe;visibility_values"
    assert "'/abs/path.jpg'" in q.at[0, "reason"] and "visibility 7" in q.at[0, "reason"]


def test_keypoint_tolerance_is_a_fraction_of_the_image(good):
    t = good.copy()
    _set_kp(t, 5, 0, (W + 20, 100, 2))  # 20 px = 3.1 % of 640
    assert len(validate(t, keypoint_tolerance=0.05).quarantine) == 0
    q = validate(t, keypoint_tolerance=0.02).quarantine
    assert list(q["row"]) == [0, 5]  # row 0 holds a keypoint 4 % outside
    assert set(q["check"]) == {"keypoints_inside_image"}


def test_unknown_dataset_is_not_also_a_keypoint_count_failure(good):
    t = good.copy()
    t.at[3, "dataset"] = "foo"
    t.at[3, "keypoints"] = np.zeros(30, np.float32)
    q = validate(t).quarantine
    assert list(q["check"]) == ["dataset_known"]


def test_video_tie_keeps_train(good):
    t = good.copy()
    t.loc[55:59, "split"] = "val"  # video 1: 5 rows train, 5 rows val
    q = validate(t).quarantine
    assert sorted(q["row"]) == [55, 56, 57, 58, 59]
    assert "stay in train" in q.at[0, "reason"]


def test_missing_video_id_in_apt36k(good):
    t = good.copy()
    t["video_id"] = t["video_id"].astype("Int64")
    t.at[52, "video_id"] = pd.NA
    q = validate(t).quarantine
    assert list(q["row"]) == [52] and q.at[0, "check"] == "video_id_present"
    assert len(validate(t, video_disjoint_datasets=()).quarantine) == 0


def test_empty_table(good):
    empty = good.iloc[:0]
    v = validate(empty)
    assert len(v.clean) == 0 and len(v.quarantine) == 0
    assert list(v.quarantine.columns) == [*COLUMN_NAMES, "check", "reason", "row"]
    assert v.report["rows_in"] == 0 and v.report["datasets"] == {}
    assert "0 rows in" in render_report_markdown(v.report)


def test_table_level_failures_raise(good):
    with pytest.raises(TableValidationError, match="area"):
        validate(good.drop(columns=["area"]))
    bad = good.copy()
    bad["width"] = bad["width"].astype("float64")
    with pytest.raises(TableValidationError, match="width"):
        validate(bad)


def test_markdown_summary(good):
    table, planted = _plant(good)
    r = validate(table, name="demo").report
    md = render_report_markdown(r, top=len(CHECKS))
    assert md.startswith("# Validation report: demo")
    assert f"{len(table)} rows in: {len(table) - len(planted)} clean, {len(planted)} quarantined" in md
    for name in ("coco", "aic", "apt36k", "foo"):
        assert f"## {name}" in md
    assert "| val | 2 | 0 | 2 |" in md
    assert "| video_split_disjoint | 2 |" in md
    assert "visibility 3 at keypoint 9 (left_wrist)" in md
    short = render_report_markdown(r, top=2)
    reasons = short.split("## coco")[1].split("## ")[0].split("| failed check |")[1].strip().splitlines()
    assert len(reasons) == 2 + 2  # rest of the header, rule line, the top 2
