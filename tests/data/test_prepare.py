"""Prepare: APT-36K video-disjoint split, images and detection rows, manifests."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from posebh import data
from posebh.data.prepare import SPLITS, apportion, attach_detections, images_table, manifest, split_apt36k
from posebh.data.schema import COLUMN_NAMES, IMAGE_COLUMNS, make_table
from posebh.data.validation import validate

RATIOS = (0.7, 0.1, 0.2)
#: category -> number of videos (a tiny category of 1, 2 and 3 videos exercises the minimum rule)
VIDEOS = {"dog": 40, "hourse": 23, "raccon": 10, "trio": 3, "pair": 2, "solo": 1}


def _apt_table(videos: dict[str, int] = VIDEOS, frames: int = 4, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = {k: [] for k in ("video_id", "frame_index", "image_id", "category", "track_id")}
    vid, img = 100, 5000
    for cat, n_videos in videos.items():
        for _ in range(n_videos):
            vid += 7
            for f in range(frames):
                img += 1
                for t in range(int(rng.integers(1, 4))):  # 1-3 animals per frame
                    rows["video_id"].append(vid)
                    rows["frame_index"].append(f)
                    rows["image_id"].append(img)
                    rows["category"].append(cat)
                    rows["track_id"].append(t)
    n = len(rows["video_id"])
    kp = np.zeros((n, 17, 3), np.float32)
    kp[..., :2] = 50
    kp[..., 2] = 2
    return make_table(
        {
            **rows,
            "dataset": "apt36k",
            "split": "all",
            "file_name": [f"{c}/v{v}/frame{f}.jpg" for c, v, f in zip(rows["category"], rows["video_id"], rows["frame_index"])],
            "width": 640,
            "height": 480,
            "instance_id": np.arange(n) + 1,
            "bbox": np.tile([10.0, 10.0, 100.0, 80.0], (n, 1)),
            "area": 8000.0,
            "iscrowd": 0,
            "keypoints": kp.reshape(n, -1),
            "num_keypoints": 17,
            "category_id": [sorted(VIDEOS).index(c) + 1 for c in rows["category"]],
        },
        n,
    )


@pytest.fixture(scope="module")
def apt() -> pd.DataFrame:
    return _apt_table()


# ---- apportion ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n", range(0, 101))
def test_apportion_sums_and_stays_within_one(n):
    counts = apportion(n, RATIOS)
    assert sum(counts) == n and min(counts) >= 0
    if n >= 10:  # the minimum-one rule never moves a video here
        for c, r in zip(counts, RATIOS):
            assert abs(c - n * r) <= 1, (n, counts)
    if n >= 3:
        assert min(counts) >= 1


def test_apportion_small_and_exact():
    assert apportion(10, RATIOS) == [7, 1, 2]
    assert apportion(30, RATIOS) == [21, 3, 6]  # 0.7 * 30 is 20.999... in floating point
    assert apportion(1, RATIOS) == [1, 0, 0]
    assert apportion(2, RATIOS) == [1, 0, 1]
    assert apportion(3, RATIOS) == [1, 1, 1]
    assert apportion(5, (0.5, 0.0, 0.5)) == [3, 0, 2]  # zero-ratio split stays empty; tie to the earlier


# ---- split_apt36k ------------------------------------------------------------------------------


def test_split_is_video_disjoint_and_keeps_all_rows(apt):
    out, _ = split_apt36k(apt, ratios=RATIOS, seed=0)
    assert len(out) == len(apt)
    assert set(out["split"]) <= set(SPLITS)
    assert out.groupby("video_id")["split"].nunique().max() == 1
    pd.testing.assert_frame_equal(out.drop(columns="split"), apt.drop(columns="split"))
    assert validate(out).report["checks"]["video_split_disjoint"]["failures"] == 0


def test_split_video_counts_per_category(apt):
    out, _ = split_apt36k(apt, ratios=RATIOS, seed=0)
    videos = out.drop_duplicates("video_id")
    for cat, n in VIDEOS.items():
        got = videos[videos["category"] == cat]["split"].value_counts()
        counts = [int(got.get(s, 0)) for s in SPLITS]
        assert sum(counts) == n
        if n >= 10:
            for c, r in zip(counts, RATIOS):
                assert abs(c - r * n) <= 1, (cat, counts)
        if n >= 3:
            assert min(counts) == 1 if n == 3 else min(counts) >= 1
    solo = videos[videos["category"] == "solo"]["split"].tolist()
    assert solo == ["train"]
    assert sorted(videos[videos["category"] == "pair"]["split"]) == ["test", "train"]


def test_split_is_deterministic_and_seeded(apt):
    a, ca = split_apt36k(apt, seed=0)
    b, cb = split_apt36k(apt, seed=0)
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(ca, cb)
    c, _ = split_apt36k(apt, seed=1)
    assert not a["split"].equals(c["split"])
    assert c.groupby("video_id")["split"].nunique().max() == 1


def test_split_of_a_category_ignores_other_categories(apt):
    full, _ = split_apt36k(apt, seed=3)
    dogs_only, _ = split_apt36k(apt[apt["category"] == "dog"].reset_index(drop=True), seed=3)
    expected = full[full["category"] == "dog"]["split"].reset_index(drop=True)
    pd.testing.assert_series_equal(dogs_only["split"], expected)


def test_split_counts_match_an_independent_count(apt):
    out, counts = split_apt36k(apt, seed=0)
    assert list(counts.columns) == ["split", "category", "videos", "images", "instances"]
    idx = counts.set_index(["split", "category"])
    for split in SPLITS:
        part = out[out["split"] == split]
        for cat in VIDEOS:
            rows = part[part["category"] == cat]
            got = idx.loc[(split, cat)]
            assert got["videos"] == rows["video_id"].nunique()
            assert got["images"] == rows["image_id"].nunique()
            assert got["instances"] == len(rows)
        total = idx.loc[(split, "all")]
        assert total["instances"] == len(part) and total["images"] == part["image_id"].nunique()
    assert counts[counts["category"] == "all"]["instances"].sum() == len(apt)


def test_split_rejects_bad_input(apt):
    with pytest.raises(ValueError, match="ratios"):
        split_apt36k(apt, ratios=(0.7, 0.2, 0.2))
    with pytest.raises(ValueError, match="ratios"):
        split_apt36k(apt, ratios=(0.7, 0.3))
    bad = apt.copy()
    bad.loc[3, "video_id"] = pd.NA
    with pytest.raises(ValueError, match="1 APT-36K rows have no video_id"):
        split_apt36k(bad)


def test_split_empty_table(apt):
    out, counts = split_apt36k(apt.iloc[:0])
    assert len(out) == 0 and len(counts) == 0


# ---- images and detections ---------------------------------------------------------------------


def _instances() -> pd.DataFrame:
    # coco/val images 1, 2 (two people on 1); coco/test image 1 (same id, other split); aic/train image 1
    n = 5
    return make_table(
        {
            "dataset": ["coco", "coco", "coco", "coco", "aic"],
            "split": ["val", "val", "val", "test", "train"],
            "image_id": [1, 1, 2, 1, 1],
            "file_name": ["val2017/1.jpg", "val2017/1.jpg", "val2017/2.jpg", "test2017/1.jpg", "aic/1.jpg"],
            "width": [640, 640, 500, 300, 1920],
            "height": [480, 480, 400, 200, 1080],
            "instance_id": [10, 11, 12, 13, 14],
            "bbox": np.tile([1.0, 2.0, 30.0, 40.0], (n, 1)),
            "area": 100.0,
            "iscrowd": [0, 1, 0, 0, 0],
            "keypoints": [np.tile(np.float32([5, 6, 2]), 17)] * 4 + [np.tile(np.float32([5, 6, 1]), 14)],
            "num_keypoints": 17,
            "category_id": 1,
            "category": "person",
        },
        n,
    )


def test_images_table_is_distinct_images():
    imgs = images_table(_instances())
    assert list(imgs.columns) == [c.name for c in IMAGE_COLUMNS]
    assert list(zip(imgs["dataset"], imgs["split"], imgs["image_id"])) == [
        ("coco", "val", 1), ("coco", "val", 2), ("coco", "test", 1), ("aic", "train", 1)
    ]  # fmt: skip
    assert list(imgs["width"]) == [640, 500, 300, 1920]
    assert imgs.attrs["conflicting_images"] == 0
    bad = _instances()
    bad.loc[1, "width"] = 999
    assert images_table(bad).attrs["conflicting_images"] == 1


def _detections(split: str = "val") -> pd.DataFrame:
    rows = [  # image_id, score, box
        (2, 0.90, [5, 5, 50, 60]),
        (1, 0.30, [0, 0, 10, 20]),
        (1, 0.95, [1, 1, 20, 30]),
        (7, 0.80, [0, 0, 5, 5]),  # unknown image
        (1, 0.01, [0, 0, 3, 3]),  # below min_score 0.05
        (7, 0.02, [0, 0, 5, 5]),  # unknown and below
        (1, 0.30, [2, 2, 10, 10]),  # score tie with row 1
    ]
    return make_table(
        {
            "dataset": "coco",
            "split": split,
            "image_id": [r[0] for r in rows],
            "category_id": 1,
            "bbox": np.array([r[2] for r in rows], np.float64),
            "score": [r[1] for r in rows],
        },
        len(rows),
        data.schema.DETECTION_COLUMNS,
    )


def test_attach_detections():
    imgs = images_table(_instances())
    out = attach_detections(imgs, _detections(), dataset="coco", split="val", min_score=0.05)
    assert list(out.columns) == list(COLUMN_NAMES)
    assert list(out["instance_id"]) == [2, 1, 6, 0]  # image 1 by score (tie in input order), then image 2
    assert list(out["image_id"]) == [1, 1, 1, 2]
    assert list(out["file_name"]) == ["val2017/1.jpg"] * 3 + ["val2017/2.jpg"]
    assert list(out["width"]) == [640, 640, 640, 500]
    np.testing.assert_allclose(out["area"], [600, 200, 100, 3000])
    np.testing.assert_allclose(out.at[3, "bbox"], [5, 5, 50, 60])
    assert [json.loads(e)["det_score"] for e in out["extra"]] == [0.95, 0.30, 0.30, 0.90]
    assert all(len(k) == 51 and not k.any() for k in out["keypoints"])
    assert (out["num_keypoints"] == 0).all() and (out["dataset"] == "coco").all() and (out["split"] == "val").all()
    a = out.attrs
    assert a["detections_in"] == 7 and a["attached"] == 4
    assert a["below_min_score"] == 2 and a["on_unknown_images"] == 1 and a["unknown_image_ids"] == [7]
    assert a["other_dataset_or_split"] == 0
    assert a["attached"] + a["below_min_score"] + a["on_unknown_images"] == a["detections_in"]
    assert a["malformed"] == a["on_flagged_images"] == 0 and a["quarantine_reasons"] == {}
    assert a["images"] == 2 and a["images_without_detections"] == 0
    v = validate(out)
    assert len(v.quarantine) == 0  # detection rows are valid instance rows


def test_attach_detections_other_split_and_default_score():
    imgs = images_table(_instances())
    out = attach_detections(imgs, _detections("test"), dataset="coco", split="test")
    assert list(out["image_id"]) == [1, 1, 1, 1]
    assert out.attrs["on_unknown_images"] == 3 and out.attrs["below_min_score"] == 0
    # val boxes offered for the test images are counted, not attached
    other = attach_detections(imgs, _detections("val"), dataset="coco", split="test")
    assert len(other) == 0 and other.attrs["other_dataset_or_split"] == 7
    empty = attach_detections(imgs, _detections().iloc[:0], dataset="coco", split="val")
    assert len(empty) == 0 and empty.attrs["images_without_detections"] == 2


def test_attach_detections_to_test_dev_image_info(tmp_path):
    info = {
        "images": [
            {"id": 11, "file_name": "000000000011.jpg", "width": 640, "height": 427},
            {"id": 12, "file_name": "000000000012.jpg", "width": 500, "height": 375},
        ],
        "categories": [{"id": 1, "name": "person"}],
    }
    dets = [
        {"image_id": 12, "category_id": 1, "bbox": [1, 2, 30, 40], "score": 0.7},
        {"image_id": 11, "category_id": 1, "bbox": [3, 4, 10, 10], "score": 0.9},
        {"image_id": 99, "category_id": 1, "bbox": [3, 4, 10, 10], "score": 0.9},
    ]
    (tmp_path / "info.json").write_text(json.dumps(info))
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    images = data.read("coco_image_info", annotations=tmp_path / "info.json", split="test-dev")
    detections = data.read("detections", annotations=tmp_path / "dets.json", split="test-dev")
    out = attach_detections(images, detections, dataset="coco", split="test-dev")
    assert list(out["image_id"]) == [11, 12]
    assert list(out["file_name"]) == ["000000000011.jpg", "000000000012.jpg"]
    assert out.attrs["on_unknown_images"] == 1 and out.attrs["unknown_image_ids"] == [99]



def _accounted(a: dict) -> None:
    json.dumps(a, allow_nan=False)
    kinds = ("attached", "other_dataset_or_split", "malformed", "below_min_score", "on_unknown_images", "on_flagged_images")
    assert a["detections_in"] == sum(a[k] for k in kinds), a


def test_attach_detections_rechecks_tables_without_issue():
    """A detections table written before the ``issue`` column (or built by hand) is checked again:
    a NaN score or an empty box is malformed, not silently below the threshold or attached."""
    det = _detections().drop(columns="issue")
    det.at[0, "score"] = np.nan  # on image 2
    det.at[2, "bbox"] = np.array([1.0, 1.0, 0.0, 30.0])  # image 1, the best score
    det.at[6, "bbox"] = np.array([2.0, 2.0, np.inf, 10.0])
    det.at[4, "score"] = np.inf  # would be below min_score
    out = attach_detections(images_table(_instances()), det, dataset="coco", split="val", min_score=0.05)
    a = out.attrs
    _accounted(a)
    assert list(out["instance_id"]) == [1] and a["malformed"] == 4
    assert a["below_min_score"] == 1 and a["on_unknown_images"] == 1
    assert a["quarantine_reasons"] == {
        "detection issue: score is not a finite number": 2,
        "detection issue: bbox width or height is not positive": 1,
        "detection issue: bbox is not 4 finite numbers": 1,
    }
    assert a["quarantine_examples"][0].startswith("row 0 (image 2, bbox [5, 5, 50, 60], score nan): detection issue")
    assert a["images_without_detections"] == 1  # image 2 lost its only box


def test_attach_detections_skips_flagged_images():
    imgs = images_table(_instances())
    imgs.loc[imgs["image_id"] == 2, "issue"] = "image width/height missing and not readable from the image"
    out = attach_detections(imgs, _detections(), dataset="coco", split="val", min_score=0.05)
    a = out.attrs
    _accounted(a)
    assert list(out["image_id"]) == [1, 1, 1] and a["on_flagged_images"] == 1 and a["flagged_images"] == 1
    assert a["quarantine_reasons"] == {"image issue: image width/height missing and not readable from the image": 1}
    # a size that cannot be right flags the image even without an issue
    imgs = images_table(_instances())
    imgs.loc[imgs["image_id"] == 1, "width"] = 0
    out = attach_detections(imgs, _detections(), dataset="coco", split="val", min_score=0.05)
    _accounted(out.attrs)
    assert list(out["image_id"]) == [2] and out.attrs["on_flagged_images"] == 3
    assert out.attrs["quarantine_reasons"] == {"image issue: image width/height 0x480 not positive": 3}
    assert out.attrs["images_without_detections"] == 0 and out.attrs["flagged_images"] == 1


def test_attach_detections_any_flagged_copy_flags_the_image():
    """The prepare node stacks two image tables; a flagged copy of an image id must not hide behind a clean one."""
    clean = images_table(_instances())
    flagged = clean[clean["image_id"] == 1].assign(issue="image id 1 appears 2 times in images")
    out = attach_detections(pd.concat([clean, flagged], ignore_index=True), _detections(), dataset="coco", split="val")
    _accounted(out.attrs)
    assert list(out["image_id"]) == [2] and out.attrs["on_flagged_images"] == 4


# ---- manifest ----------------------------------------------------------------------------------


def test_manifest_counts():
    t = _instances()
    t.at[2, "keypoints"] = np.zeros(51, np.float32)
    t.at[2, "bbox"] = np.array([0.0, 0.0, 9.0, 16.0])  # size 12
    m = manifest(t)
    json.dumps(m)
    val = m["datasets"]["coco"]["val"]
    assert val["images"] == 2 and val["instances"] == 3
    assert val["labelled_keypoints"] == 34 and val["visible_keypoints"] == 34
    assert val["mean_keypoints_per_instance"] == round(34 / 3, 4)
    assert val["instances_without_keypoints"] == 1
    assert val["crowd"] == 1 and val["videos"] == 0
    assert val["box_size_quantiles"]["q0"] == 12.0
    assert val["box_size_quantiles"]["q100"] == round(float(np.sqrt(1200)), 3)
    aic = m["datasets"]["aic"]["train"]
    assert aic["labelled_keypoints"] == 14 and aic["visible_keypoints"] == 0
    assert m["total"] == {"images": 4, "instances": 5}
    assert set(m["datasets"]["coco"]) == {"val", "test"}


def test_manifest_of_split_apt36k(apt):
    out, counts = split_apt36k(apt)
    m = manifest(out)["datasets"]["apt36k"]
    idx = counts.set_index(["split", "category"])
    for s in SPLITS:
        assert m[s]["instances"] == idx.loc[(s, "all"), "instances"]
        assert m[s]["images"] == idx.loc[(s, "all"), "images"]
        assert m[s]["videos"] == idx.loc[(s, "all"), "videos"]
    assert manifest(out.iloc[:0]) == {"datasets": {}, "total": {"images": 0, "instances": 0}}


# ---- real samples ------------------------------------------------------------------------------


def test_real_coco_val_with_detection_boxes(samples):
    from conftest import sample

    gt = data.read("coco", annotations=sample(samples, "coco", "test_coco.json"), split="val")
    dets = data.read("detections", annotations=sample(samples, "coco", "test_coco_det_AP_H_56.json"), split="val")
    raw = json.loads(sample(samples, "coco", "test_coco_det_AP_H_56.json").read_text())
    images = images_table(gt)
    assert sorted(images["image_id"]) == [785, 40083, 196141, 197388]
    out = attach_detections(images, dets, dataset="coco", split="val")
    persons = [d for d in raw if d["category_id"] == 1]
    assert len(out) == len(dets) == len(persons)  # the sample's 118 boxes are all on its 4 images
    assert out.attrs["on_unknown_images"] == 0 and out.attrs["below_min_score"] == 0
    by_image = pd.Series([d["image_id"] for d in persons]).value_counts().sort_index()
    assert out["image_id"].value_counts().sort_index().tolist() == by_image.tolist()
    best = max(persons, key=lambda d: d["score"])
    first_of_image = out[out["image_id"] == best["image_id"]].iloc[0]
    np.testing.assert_allclose(first_of_image["bbox"], best["bbox"])
    v = validate(pd.concat([gt, out.assign(split="val_det")], ignore_index=True))
    assert len(v.quarantine) == 0, v.quarantine[["check", "reason"]].to_string()
    m = manifest(v.clean)["datasets"]["coco"]
    assert m["val"]["instances"] == 14 and m["val"]["images"] == 4
    assert m["val"]["labelled_keypoints"] == 164 + 17 and m["val"]["visible_keypoints"] == 164
    assert m["val_det"]["instances"] == len(persons) and m["val_det"]["labelled_keypoints"] == 0
