"""COCO-family readers against the real samples, field by field, plus the documented formats that
have no real sample (APT-36K, test-dev image info) written into tmp_path, and bad input.

Expected values are computed here from the raw JSON with plain Python, never with the readers'
helpers, so a conversion bug cannot cancel itself out."""

import importlib
import json
import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from posebh import data, skeletons
from posebh.data.errors import DataFileError
from posebh.data.schema import COLUMN_NAMES, DETECTION_COLUMNS, IMAGE_COLUMNS, bbox_array, extra_dicts, keypoints_array
from conftest import sample

WHOLEBODY_PARTS = ("keypoints", "foot_kpts", "face_kpts", "lefthand_kpts", "righthand_kpts")


def load(path):
    return json.loads(path.read_text(encoding="utf-8"))


def write_json(path, obj):
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return path


def check_against_raw(df, raw, dataset, *, area=None, num_keypoints=None):
    """Every column of every row equals what the raw COCO-style document says."""
    images = {im["id"]: im for im in raw["images"]}
    categories = {c["id"]: c["name"] for c in raw["categories"]}
    anns = raw["annotations"]
    assert len(df) == len(anns)
    assert list(df.columns) == list(COLUMN_NAMES)
    assert (df["dataset"] == dataset).all() and (df["split"] == "val").all()
    k = skeletons.get(dataset).num_keypoints
    kps = keypoints_array(df)
    boxes = bbox_array(df)
    assert kps.shape == (len(anns), k, 3)
    for i, a in enumerate(anns):
        row = df.iloc[i]
        im = images[a["image_id"]]
        assert row["instance_id"] == a["id"]
        assert row["image_id"] == a["image_id"]
        assert row["file_name"] == im["file_name"]
        assert (row["width"], row["height"]) == (im["width"], im["height"])
        assert boxes[i].tolist() == [float(x) for x in a["bbox"]]
        expected_area = area(a) if area else a["area"]
        assert row["area"] == pytest.approx(expected_area, rel=1e-12)
        assert row["iscrowd"] == a.get("iscrowd", 0)
        assert kps[i].reshape(-1).tolist() == [float(np.float32(x)) for x in a["keypoints"]]
        assert row["num_keypoints"] == (num_keypoints(a) if num_keypoints else a["num_keypoints"])
        assert row["category_id"] == a["category_id"]
        assert row["category"] == categories[a["category_id"]]
        assert pd.isna(row["video_id"]) and pd.isna(row["frame_index"]) and pd.isna(row["track_id"])
        assert pd.isna(row["issue"])


def visibility_counts(df):
    return Counter(keypoints_array(df)[..., 2].reshape(-1).astype(int).tolist())


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------


def test_formats_are_registered_with_their_tables():
    for module in ("coco", "aic", "wholebody", "apt36k", "detections"):
        importlib.import_module(f"posebh.data.readers.{module}")
    tables = data.READER_TABLES
    for name in ("coco", "aic", "aic_raw", "coco_wholebody", "apt36k"):
        assert tables[name] == "instances"
    assert tables["coco_image_info"] == "images"
    assert tables["detections"] == "detections"


# ---------------------------------------------------------------------------------------------
# COCO and the datasets that share its format
# ---------------------------------------------------------------------------------------------


def test_coco_sample_field_by_field(samples):
    path = sample(samples, "coco", "test_coco.json")
    raw = load(path)
    df = data.read("coco", annotations=path, split="val")
    check_against_raw(df, raw, "coco")
    assert (df["extra"] == "{}").all()
    assert visibility_counts(df) == {2: 164, 1: 17, 0: 57}
    for a, n in zip(raw["annotations"], df["num_keypoints"]):
        assert n == sum(1 for v in a["keypoints"][2::3] if v > 0)


def test_ochuman_sample_field_by_field(samples):
    path = sample(samples, "ochuman", "test_ochuman.json")
    df = data.read("coco", annotations=path, split="val", dataset="ochuman")
    check_against_raw(df, load(path), "ochuman")
    assert visibility_counts(df) == {2: 66, 1: 7, 0: 12}
    assert df["area"].tolist() == [float(a["area"]) for a in load(path)["annotations"]]


def test_ap10k_sample_species_and_background(samples):
    path = sample(samples, "ap10k", "test_ap10k.json")
    raw = load(path)
    df = data.read("coco", annotations=path, split="val", dataset="ap10k")
    check_against_raw(df, raw, "ap10k")
    species = {c["id"]: c["name"] for c in raw["categories"]}
    background = {im["id"]: im["background"] for im in raw["images"]}
    assert len(species) == 54
    for a, row, extra in zip(raw["annotations"], df.itertuples(), extra_dicts(df)):
        assert row.category == species[a["category_id"]]
        assert extra == {"background": background[a["image_id"]]}
        assert row.area == a["bbox"][2] * a["bbox"][3]
    assert set(visibility_counts(df)) <= {0, 2}


def test_crowdpose_sample_area_crowd_index_and_release_count(samples):
    path = sample(samples, "crowdpose", "test_crowdpose.json")
    raw = load(path)
    assert all("area" not in a for a in raw["annotations"])
    df = data.read("coco", annotations=path, split="val", dataset="crowdpose")
    check_against_raw(
        df,
        raw,
        "crowdpose",
        area=lambda a: 0.53 * a["bbox"][2] * a["bbox"][3],
        num_keypoints=lambda a: sum(1 for v in a["keypoints"][2:36:3] if v > 0),
    )
    crowd = {im["id"]: im["crowdIndex"] for im in raw["images"]}
    for a, extra in zip(raw["annotations"], extra_dicts(df)):
        assert extra["crowdIndex"] == crowd[a["image_id"]]
        assert "first 12" in extra["num_keypoints_rule"]
        assert "release_area" not in extra and "area_from" not in extra
    # the rule matters on this sample: some persons have head or neck labelled
    all14 = [sum(1 for v in a["keypoints"][2::3] if v > 0) for a in raw["annotations"]]
    assert all14 != df["num_keypoints"].tolist()


def test_aic_converted_sample(samples):
    path = sample(samples, "aic", "test_aic.json")
    raw = load(path)
    df = data.read("aic", annotations=path, split="val")
    check_against_raw(df, raw, "aic", area=lambda a: 0.53 * a["bbox"][2] * a["bbox"][3])
    urls = {im["id"]: im["url"] for im in raw["images"]}
    assert [e["url"] for e in extra_dicts(df)] == [urls[a["image_id"]] for a in raw["annotations"]]


# ---------------------------------------------------------------------------------------------
# AIC raw release
# ---------------------------------------------------------------------------------------------


def test_aic_raw_equals_mmpose_conversion(samples):
    """Raw records 1..3 are mmpose's images 1..3 and humans 1..3 of each are its instances in order
    (mmpose numbers them 4..12, we number them 1..9): everything but the instance id matches."""
    raw_path = sample(samples, "aic", "aic_raw_format_3imgs.json")
    conv_path = sample(samples, "aic", "test_aic.json")
    raw = data.read("aic_raw", annotations=raw_path, split="val", image_root=raw_path.parent)
    conv = data.read("aic", annotations=conv_path, split="val")
    assert len(raw) == len(conv) == 9
    for col in ("dataset", "split", "image_id", "file_name", "width", "height", "area", "iscrowd",
                "num_keypoints", "category_id", "category"):  # fmt: skip
        assert raw[col].tolist() == conv[col].tolist(), col
    np.testing.assert_array_equal(bbox_array(raw), bbox_array(conv))
    np.testing.assert_array_equal(keypoints_array(raw), keypoints_array(conv))
    assert raw["instance_id"].tolist() == list(range(1, 10))
    assert (conv["instance_id"] - raw["instance_id"]).nunique() == 1
    assert raw["issue"].isna().all()


def test_aic_raw_conversion_rules_from_raw_records(samples):
    raw_path = sample(samples, "aic", "aic_raw_format_3imgs.json")
    records = load(raw_path)
    df = data.read("aic_raw", annotations=raw_path, split="val", image_root=raw_path.parent)
    flip = {1: 2, 2: 1, 3: 0}
    i = 0
    for r, rec in enumerate(records):
        for h in sorted(rec["human_annotations"], key=lambda s: int(s[len("human"):])):
            row, extra = df.iloc[i], extra_dicts(df.iloc[[i]])[0]
            x1, y1, x2, y2 = rec["human_annotations"][h]
            assert bbox_array(df.iloc[[i]])[0].tolist() == [x1, y1, x2 - x1, y2 - y1]
            kp = rec["keypoint_annotations"][h]
            expected = [v for j in range(0, len(kp), 3) for v in (kp[j], kp[j + 1], flip[kp[j + 2]])]
            assert row["keypoints"].tolist() == expected
            assert row["num_keypoints"] == sum(1 for v in kp[2::3] if v != 3)
            assert row["image_id"] == r + 1 and row["file_name"] == rec["image_id"] + ".jpg"
            assert extra == {"image_hash": rec["image_id"], "url": rec["url"], "human": h}
            i += 1
    assert i == len(df)


def test_aic_raw_missing_image_and_numeric_human_order(tmp_path, samples):
    real = sample(samples, "aic", "aic_raw_format_3imgs.json")
    rec = load(real)[0]
    kp = [10, 20, 1] * 14
    missing = {
        "url": "u",
        "image_id": "0" * 40,
        "keypoint_annotations": {"human10": kp, "human2": kp, "human1": kp[:-3] + [5, 5, 7]},
        "human_annotations": {"human10": [0, 0, 5, 5], "human2": [0, 0, 4, 4], "human1": [0, 0, 3, 3]},
    }
    path = write_json(tmp_path / "raw.json", [rec, missing])
    df = data.read("aic_raw", annotations=path, split="train", image_root=real.parent)
    assert len(df) == 6
    assert df["issue"].iloc[:3].isna().all()
    tail = df.iloc[3:]
    assert [e["human"] for e in extra_dicts(tail)] == ["human1", "human2", "human10"]
    assert (tail["width"] == 0).all() and (tail["height"] == 0).all()
    assert tail["issue"].str.contains("image not found or unreadable").all()
    assert "raw visibility [7.0]" in tail["issue"].iloc[0]
    assert tail["image_id"].tolist() == [2, 2, 2] and tail["instance_id"].tolist() == [4, 5, 6]


def test_aic_raw_needs_image_root_and_a_list(tmp_path):
    path = write_json(tmp_path / "raw.json", {"not": "a list"})
    with pytest.raises(ValueError, match="image_root"):
        data.read("aic_raw", annotations=path, split="val")
    with pytest.raises(DataFileError, match="raw.json.*JSON list"):
        data.read("aic_raw", annotations=path, split="val", image_root=tmp_path)


# ---------------------------------------------------------------------------------------------
# COCO-WholeBody
# ---------------------------------------------------------------------------------------------


def map_part_v(v):
    return 1.0 if 0 < v < 2 and v != int(v) else float(v)


def test_wholebody_parts_land_in_their_slots(samples):
    path = sample(samples, "coco_wholebody", "test_coco_wholebody.json")
    raw = load(path)
    df = data.read("coco_wholebody", annotations=path, split="val")
    assert len(df) == len(raw["annotations"])
    kps = keypoints_array(df)
    assert kps.shape[1:] == (133, 3)
    flags = {"foot_kpts": "foot_valid", "face_kpts": "face_valid", "lefthand_kpts": "lefthand_valid",
             "righthand_kpts": "righthand_valid"}  # fmt: skip
    saw_fraction = saw_invalid = 0
    for i, (a, extra) in enumerate(zip(raw["annotations"], extra_dicts(df))):
        start = 0
        fractions = 0
        for key in WHOLEBODY_PARTS:
            lst = a[key]
            k = len(lst) // 3
            got = kps[i, start : start + k]
            valid = a[flags[key]] if key in flags else True
            if not valid:
                saw_invalid += 1
                assert not got.any()
            else:
                xy = [float(np.float32(x)) for j, x in enumerate(lst) if j % 3 != 2]
                assert got[:, :2].reshape(-1).tolist() == xy
                expected_v = [map_part_v(v) for v in lst[2::3]] if key != "keypoints" else [float(v) for v in lst[2::3]]
                assert got[:, 2].tolist() == expected_v
                fractions += sum(1 for v in lst[2::3] if v != int(v)) if key != "keypoints" else 0
            start += k
        assert start == 133
        assert df["num_keypoints"].iloc[i] == int((kps[i, :, 2] > 0).sum())
        assert extra["num_keypoints_body"] == a["num_keypoints"]
        for key in ("face_box", "lefthand_box", "righthand_box"):
            assert extra[key] == a[key]
        for flag in flags.values():
            assert extra[flag] == a[flag]
        assert extra.get("part_v_fractional", 0) == fractions
        saw_fraction += fractions
    assert saw_fraction > 0 and saw_invalid > 0
    assert df["issue"].isna().all()
    assert set(np.unique(kps[..., 2]).tolist()) <= {0.0, 1.0, 2.0}
    coco = data.read("coco", annotations=sample(samples, "coco", "test_coco.json"), split="val")
    for col in ("bbox", "area", "instance_id", "image_id", "file_name"):
        assert [np.asarray(x).tolist() for x in df[col]] == [np.asarray(x).tolist() for x in coco[col]]


def test_wholebody_bad_part_list_is_an_issue(tmp_path, samples):
    raw = load(sample(samples, "coco_wholebody", "test_coco_wholebody.json"))
    i = next(i for i, a in enumerate(raw["annotations"]) if a["face_valid"])
    raw["annotations"][i]["face_kpts"] = raw["annotations"][i]["face_kpts"][:-3]
    df = data.read("coco_wholebody", annotations=write_json(tmp_path / "wb.json", raw), split="val")
    assert len(df) == len(raw["annotations"])
    assert df["issue"].iloc[i] == "face_kpts has 201 values, expected 204"
    assert df["issue"].drop(index=i).isna().all()
    assert len(df["keypoints"].iloc[i]) == 399


# ---------------------------------------------------------------------------------------------
# APT-36K (no real sample: a file in the documented schema)
# ---------------------------------------------------------------------------------------------


def apt36k_doc():
    kp = [float(v) for j in range(17) for v in (10 + j, 20 + j, 2)]
    cats = [{"id": 1, "name": "hourse", "supercategory": "Equidae", "keypoints": [], "skeleton": []},
            {"id": 29, "name": "wolf", "supercategory": "Canidae", "keypoints": [], "skeleton": []}]  # fmt: skip
    images = [
        {"id": 1, "file_name": "D:\\Animal_pose\\AP-36k-patr1\\29wolf\\v3c2\\frame7.jpg", "width": 1920,
         "height": 1080, "video_id": 11},
        {"id": 2, "file_name": "D:\\Animal_pose\\AP-36k-patr2\\2hourse\\clip46√\\frame12.jpg", "width": 1280,
         "height": 720, "video_id": 12},
        {"id": 3, "file_name": "E:\\apt\\2hourse\\video11_clip6_frame╬╩╠Γ\\still.png", "width": 640,
         "height": 480, "video_id": 13},
    ]  # fmt: skip
    anns = [
        {"id": 101, "image_id": 1, "category_id": 29, "bbox": [1, 2, 30, 40], "area": 1200.0, "is_crowd": 0,
         "keypoints": kp, "num_keypoints": 17, "video_id": 11, "track_id": 1},
        {"id": 102, "image_id": 2, "category_id": 1, "bbox": [5, 6, 10, 20], "is_crowd": 1, "keypoints": kp,
         "num_keypoints": 17, "video_id": 12, "track_id": 2},
        {"id": 103, "image_id": 3, "category_id": 1, "bbox": [0, 0, 8, 8], "area": 64, "is_crowd": 0,
         "keypoints": kp, "num_keypoints": 17, "video_id": 13, "track_id": 1},
    ]  # fmt: skip
    return {"license": [{"id": 1, "name": "x"}], "info": {}, "categories": cats, "images": images, "annotations": anns}


def test_apt36k_release_conventions(tmp_path):
    doc = apt36k_doc()
    df = data.read("apt36k", annotations=write_json(tmp_path / "apt36k_annotations.json", doc), split="all")
    assert df["dataset"].eq("apt36k").all()
    assert df["file_name"].tolist() == ["29wolf/v3c2/frame7.jpg", "2hourse/clip46√/frame12.jpg",
                                        "2hourse/video11_clip6_frame╬╩╠Γ/still.png"]  # fmt: skip
    assert df["category"].tolist() == ["wolf", "hourse", "hourse"]
    assert [e["species_folder"] for e in extra_dicts(df)] == ["29wolf", "2hourse", "2hourse"]
    assert df["frame_index"].tolist()[:2] == [7, 12] and pd.isna(df["frame_index"].iloc[2])
    assert df["video_id"].tolist() == [11, 12, 13]
    assert df["track_id"].tolist() == [1, 2, 1]
    assert df["iscrowd"].tolist() == [0, 1, 0]
    assert df["area"].tolist() == [1200.0, 200.0, 64.0]
    assert [e.get("area_from") for e in extra_dicts(df)] == [None, "wh", None]
    assert df["issue"].isna().all()
    assert keypoints_array(df).shape == (3, 17, 3)
    for e in extra_dicts(df):
        assert "is_crowd" not in e and "video_id" not in e and "track_id" not in e


def test_apt36k_short_or_escaping_paths_are_issues(tmp_path):
    doc = apt36k_doc()
    doc["images"][0]["file_name"] = "frame7.jpg"
    doc["images"][1]["file_name"] = "D:\\x\\..\\..\\frame1.jpg"
    df = data.read("apt36k", annotations=write_json(tmp_path / "a.json", doc), split="all")
    assert df["file_name"].tolist()[:2] == ["frame7.jpg", "D:\\x\\..\\..\\frame1.jpg"]
    assert "fewer than 3 components" in df["issue"].iloc[0]
    assert "unsafe file name" in df["issue"].iloc[1]
    assert pd.isna(df["issue"].iloc[2])


def test_apt36k_video_id_disagreement_is_an_issue(tmp_path):
    doc = apt36k_doc()
    doc["annotations"][0]["video_id"] = 99
    df = data.read("apt36k", annotations=write_json(tmp_path / "a.json", doc), split="all")
    assert "video_id 99 differs" in df["issue"].iloc[0]
    assert df["issue"].iloc[1:].isna().all()


# ---------------------------------------------------------------------------------------------
# Image info (test-dev) and detections
# ---------------------------------------------------------------------------------------------


def test_coco_image_info_without_annotations(tmp_path, samples):
    raw = load(sample(samples, "coco", "test_coco.json"))
    testdev = {k: v for k, v in raw.items() if k != "annotations"}
    df = data.read("coco_image_info", annotations=write_json(tmp_path / "image_info_test-dev2017.json", testdev),
                   split="test-dev")  # fmt: skip
    assert list(df.columns) == [c.name for c in IMAGE_COLUMNS]
    assert df["image_id"].tolist() == [im["id"] for im in raw["images"]]
    assert df["file_name"].tolist() == [im["file_name"] for im in raw["images"]]
    assert df["width"].tolist() == [im["width"] for im in raw["images"]]
    assert df["height"].tolist() == [im["height"] for im in raw["images"]]
    assert (df["split"] == "test-dev").all() and (df["dataset"] == "coco").all()
    assert df["issue"].isna().all()
    with pytest.raises(DataFileError, match="annotations"):
        data.read("coco", annotations=tmp_path / "image_info_test-dev2017.json", split="test-dev")


def test_image_size_falls_back_to_the_image_header(tmp_path, samples):
    root = sample(samples, "coco", "000000000785.jpg").parent
    raw = load(sample(samples, "coco", "test_coco.json"))
    for im in raw["images"]:
        del im["width"], im["height"]
    path = write_json(tmp_path / "nosize.json", raw)
    df = data.read("coco_image_info", annotations=path, split="val", image_root=root)
    assert df["width"].tolist() == [640, 500, 640, 640] and df["issue"].isna().all()
    without_root = data.read("coco_image_info", annotations=path, split="val")
    assert (without_root["width"] == 0).all() and without_root["issue"].str.contains("width/height").all()


def check_detections(df, raw, dataset):
    assert list(df.columns) == [c.name for c in DETECTION_COLUMNS]
    assert len(df) == len(raw)
    assert (df["dataset"] == dataset).all()
    assert df["image_id"].tolist() == [d["image_id"] for d in raw]
    assert df["category_id"].tolist() == [d["category_id"] for d in raw]
    assert df["score"].tolist() == [d["score"] for d in raw]
    assert bbox_array(df).tolist() == [d["bbox"] for d in raw]
    assert df["issue"].isna().all()


def test_detection_samples(samples):
    coco = sample(samples, "coco", "test_coco_det_AP_H_56.json")
    raw = load(coco)
    assert len(raw) == 118
    check_detections(data.read("detections", annotations=coco, split="val"), raw, "coco")
    crowd = sample(samples, "crowdpose", "test_crowdpose_det_AP_40.json")
    check_detections(data.read("detections", annotations=crowd, split="test", dataset="crowdpose"), load(crowd),
                     "crowdpose")  # fmt: skip


def test_detections_category_filter_and_malformed_entries(tmp_path):
    good = [{"image_id": 1, "category_id": c, "bbox": [1, 2, 3, 4], "score": 0.5} for c in (1, 2, 1)]
    path = write_json(tmp_path / "det.json", good)
    assert data.read("detections", annotations=path, split="val")["category_id"].tolist() == [1, 1]
    assert len(data.read("detections", annotations=path, split="val", category_id=None)) == 3
    assert len(data.read("detections", annotations=path, split="val", category_id=2)) == 1

    bad = good + [{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3], "score": 0.5},
                  {"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": None}, "x",
                  {"image_id": 1, "category_id": 2, "bbox": [1, 2, 0, 4], "score": 0.5},
                  {"image_id": 1, "category_id": "1", "bbox": [1, 2, -3, 4], "score": 0.5}]  # fmt: skip
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad).replace("null", "NaN"))
    with pytest.raises(DataFileError, match=r"bad\.json: 5 of 8 detections are malformed \(first at index 3: bbox"):
        data.read("detections", annotations=path, split="val", strict=True)
    df = data.read("detections", annotations=path, split="val", category_id=None)
    assert len(df) == 8 and df["issue"].isna().tolist() == [True] * 3 + [False] * 5
    assert df["issue"].tolist()[3:] == [
        "bbox is not 4 finite numbers", "score is not a finite number", "not a JSON object",
        "bbox width or height is not positive", "category_id is not an integer; bbox width or height is not positive",
    ]
    # the category filter keeps a flagged box whose category it cannot tell, so no bad box hides
    persons = data.read("detections", annotations=path, split="val")
    assert persons["issue"].isna().tolist() == [True, True, False, False, False, False]


def test_detections_top_level_must_be_a_list(tmp_path):
    path = write_json(tmp_path / "det.json", {"bbox": [1, 2, 3, 4]})
    with pytest.raises(DataFileError, match="det.json.*JSON list"):
        data.read("detections", annotations=path, split="val")


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def coco_raw(samples):
    return load(sample(samples, "coco", "test_coco.json"))


@pytest.mark.parametrize("fmt", ["coco", "aic", "coco_wholebody", "apt36k", "coco_image_info", "detections"])
def test_missing_and_invalid_files_name_the_file(tmp_path, fmt):
    with pytest.raises(DataFileError, match=r"nope\.json: file not found"):
        data.read(fmt, annotations=tmp_path / "nope.json", split="val")
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [')
    with pytest.raises(DataFileError, match=r"broken\.json: invalid JSON"):
        data.read(fmt, annotations=broken, split="val")


@pytest.mark.parametrize("fmt", ["coco", "aic", "coco_wholebody", "apt36k", "coco_image_info"])
def test_top_level_list_is_refused(tmp_path, fmt):
    path = write_json(tmp_path / "list.json", [{"id": 1}])
    with pytest.raises(DataFileError, match=r"list\.json: expected a JSON object at the top level, found list"):
        data.read(fmt, annotations=path, split="val")


def test_annotations_must_be_a_list(tmp_path, coco_raw):
    coco_raw["annotations"] = {"0": coco_raw["annotations"][0]}
    with pytest.raises(DataFileError, match="'annotations' must be a list"):
        data.read("coco", annotations=write_json(tmp_path / "a.json", coco_raw), split="val")


def test_short_keypoint_list_keeps_the_row(tmp_path, coco_raw):
    before = data.read("coco", annotations=write_json(tmp_path / "ok.json", coco_raw), split="val")
    coco_raw["annotations"][3]["keypoints"] = coco_raw["annotations"][3]["keypoints"][:48]
    after = data.read("coco", annotations=write_json(tmp_path / "short.json", coco_raw), split="val")
    assert len(after) == len(before) == 14
    assert after["issue"].iloc[3] == "keypoints has 48 values, expected 51"
    assert len(after["keypoints"].iloc[3]) == 51 and np.isnan(after["keypoints"].iloc[3]).all()
    assert after["instance_id"].iloc[3] == coco_raw["annotations"][3]["id"]
    others = [i for i in range(14) if i != 3]
    assert after["issue"].iloc[others].isna().all()
    np.testing.assert_array_equal(keypoints_array(after.iloc[others]), keypoints_array(before.iloc[others]))
    pd.testing.assert_frame_equal(after.iloc[others].drop(columns=["keypoints", "bbox"]),
                                  before.iloc[others].drop(columns=["keypoints", "bbox"]))  # fmt: skip


def test_wrong_skeleton_length_is_an_issue_on_every_row(samples):
    df = data.read("coco", annotations=sample(samples, "coco", "test_coco.json"), split="val", dataset="crowdpose")
    assert df["issue"].eq("keypoints has 51 values, expected 42").all()


@pytest.mark.parametrize(
    "name, problem",
    [("/abs/000000000785.jpg", "absolute path"), ("../000000000785.jpg", "escapes"), ("C:\\img\\x.jpg", "absolute")],
)
def test_unsafe_file_names_are_issues(tmp_path, coco_raw, name, problem):
    coco_raw["images"][0]["file_name"] = name
    df = data.read("coco", annotations=write_json(tmp_path / "a.json", coco_raw), split="val")
    hit = df["image_id"] == coco_raw["images"][0]["id"]
    assert hit.sum() == 1
    assert (df.loc[hit, "file_name"] == name).all()
    assert df.loc[hit, "issue"].str.contains("unsafe file name").all()
    assert df.loc[hit, "issue"].str.contains(problem).all()
    assert df.loc[~hit, "issue"].isna().all()
    info = data.read("coco_image_info", annotations=tmp_path / "a.json", split="val")
    assert info["issue"].notna().tolist() == [True, False, False, False]


def test_row_level_problems_each_get_a_reason(tmp_path, coco_raw):
    anns = coco_raw["annotations"]
    anns[0]["bbox"] = [1, 2, 3]
    anns[1]["image_id"] = 123456789
    anns[2]["category_id"] = 7
    anns[3]["area"] = "big"
    anns[4]["id"] = None
    del anns[5]["iscrowd"], anns[5]["area"]
    anns[6]["keypoints"][4] = None
    anns.append("not an annotation")
    df = data.read("coco", annotations=write_json(tmp_path / "a.json", coco_raw), split="val")
    assert len(df) == 15
    issue = df["issue"].tolist()
    assert issue[0] == "bbox is not 4 numbers" and np.isnan(df["bbox"].iloc[0]).all()
    assert issue[1] == "image_id 123456789 not in images" and df["width"].iloc[1] == 0
    assert issue[2] == "category_id 7 not in categories"
    assert issue[3] == "area is not a number"
    assert issue[4] == "id is not an integer"
    assert pd.isna(issue[5])
    assert df["iscrowd"].iloc[5] == 0
    b = anns[5]["bbox"]
    assert df["area"].iloc[5] == pytest.approx(b[2] * b[3])
    assert extra_dicts(df.iloc[[5]])[0] == {"area_from": "wh"}
    assert issue[6] == "keypoints has non-numeric values"
    assert issue[14].startswith("annotation is not a JSON object")
    assert all(pd.isna(x) for x in issue[7:14])


def test_release_area_kept_when_the_rule_substitutes(tmp_path, samples):
    raw = load(sample(samples, "aic", "test_aic.json"))
    raw["annotations"][0]["area"] = 5.0
    df = data.read("aic", annotations=write_json(tmp_path / "a.json", raw), split="val")
    b = raw["annotations"][0]["bbox"]
    assert df["area"].iloc[0] == pytest.approx(0.53 * b[2] * b[3])
    assert extra_dicts(df.iloc[[0]])[0]["release_area"] == 5.0


def test_empty_annotation_list(tmp_path, coco_raw):
    coco_raw["annotations"] = []
    df = data.read("coco", annotations=write_json(tmp_path / "a.json", coco_raw), split="val")
    assert len(df) == 0 and list(df.columns) == list(COLUMN_NAMES)


def test_unknown_annotation_fields_go_to_extra(tmp_path, coco_raw):
    coco_raw["annotations"][0]["difficulty"] = 3
    df = data.read("coco", annotations=write_json(tmp_path / "a.json", coco_raw), split="val")
    assert extra_dicts(df.iloc[[0]])[0] == {"difficulty": 3}
    assert (df["extra"].iloc[1:] == "{}").all()
    assert math.isclose(df["area"].iloc[0], coco_raw["annotations"][0]["area"])
