import json
import math

import numpy as np
import pytest
from PIL import Image

from posebh import data
from posebh.data.errors import DataFileError
from posebh.data.readers.mpii import load_mpii_gt
from posebh.data.schema import bbox_array, extra_dicts, keypoints_array
from conftest import sample


@pytest.fixture(scope="module")
def mpii_json(samples):
    return sample(samples, "mpii", "test_mpii.json")


@pytest.fixture(scope="module")
def mpii_mat(samples):
    return sample(samples, "mpii", "detections_our_format.mat")


@pytest.fixture(scope="module")
def raw(mpii_json):
    return json.loads(mpii_json.read_text())


@pytest.fixture(scope="module")
def table(mpii_json):
    return data.read("mpii", annotations=mpii_json, split="val", image_root=mpii_json.parent)


def test_rows_follow_file_order(table, raw):
    assert len(table) == len(raw) == 5
    assert list(table["instance_id"]) == [1, 2, 3, 4, 5]
    assert list(table["file_name"]) == [p["image"] for p in raw]
    assert list(table["image_id"]) == [int(p["image"][:9]) for p in raw]
    assert table["issue"].isna().all()
    assert set(table["dataset"]) == {"mpii"} and set(table["split"]) == {"val"}


def test_coordinates_become_zero_based(table, raw):
    kps = keypoints_array(table)
    for i, person in enumerate(raw):
        joints = np.array(person["joints"])
        annotated = np.array(person["joints_vis"]) == 1
        np.testing.assert_allclose(kps[i, annotated, :2], joints[annotated] - 1, atol=1e-4)
        assert (kps[i, annotated, 2] == 2).all()
        assert (kps[i, ~annotated] == 0).all()
        assert table["num_keypoints"][i] == annotated.sum()
    assert (kps[..., 2] == 0).sum() == 4  # persons 3 and 4 miss two joints each


def test_center_scale_adjustment_and_box(table, raw):
    boxes = bbox_array(table)
    for i, (person, extra) in enumerate(zip(raw, extra_dicts(table))):
        cx, cy = person["center"]
        s = person["scale"]
        expected_center = [cx - 1, cy + 15 * s - 1]
        assert extra["center"] == pytest.approx(expected_center)
        assert extra["scale"] == pytest.approx(1.25 * s)
        assert extra["center_raw"] == [cx, cy] and extra["scale_raw"] == pytest.approx(s)
        x, y, w, h = boxes[i]
        assert w == pytest.approx(200 * s) and h == pytest.approx(200 * s)
        # the generic box -> (centre, scale with padding 1.25) step recovers mmpose's values
        assert [x + w / 2, y + h / 2] == pytest.approx(expected_center)
        assert w / 200 * 1.25 == pytest.approx(extra["scale"])
        assert table["area"][i] == pytest.approx(w * h)


def test_image_sizes_from_headers(table, mpii_json):
    for name, w, h in zip(table["file_name"], table["width"], table["height"]):
        with Image.open(mpii_json.parent / name) as im:
            assert (w, h) == im.size


def test_ground_truth_columns_match_the_json(mpii_mat, raw):
    import scipy.io

    gt = load_mpii_gt(mpii_mat)
    assert gt.num_persons == 2958
    assert gt.joint_names[:3] == ("rank", "rkne", "rhip") and len(gt.joint_names) == 16
    for i, person in enumerate(raw):
        annotated = np.array(person["joints_vis"]) == 1
        np.testing.assert_array_equal(gt.missing[i], ~annotated)
        np.testing.assert_allclose(gt.positions[i, annotated], np.array(person["joints"])[annotated] - 1, atol=1e-3)
    m = scipy.io.loadmat(str(mpii_mat))
    for p in (0, 4, 2957):
        (x1, y1), (x2, y2) = m["headboxes_src"][:, :, p]
        assert gt.head_sizes[p] == pytest.approx(0.6 * math.hypot(x2 - x1, y2 - y1))
        np.testing.assert_allclose(gt.head_boxes[p], [[x1 - 1, y1 - 1], [x2 - 1, y2 - 1]])


def test_gt_mat_must_hold_the_same_persons(mpii_json, mpii_mat):
    with pytest.raises(DataFileError, match="2958 persons"):
        data.read("mpii", annotations=mpii_json, split="val", image_root=mpii_json.parent, gt_mat=mpii_mat)


def test_gt_mat_adds_head_boxes(tmp_path, mpii_json, mpii_mat):
    import scipy.io

    m = scipy.io.loadmat(str(mpii_mat))
    subset = tmp_path / "gt5.mat"
    scipy.io.savemat(
        str(subset),
        {
            "dataset_joints": m["dataset_joints"],
            "jnt_missing": m["jnt_missing"][:, :5],
            "pos_gt_src": m["pos_gt_src"][:, :, :5],
            "headboxes_src": m["headboxes_src"][:, :, :5],
        },
    )
    df = data.read("mpii", annotations=mpii_json, split="val", image_root=mpii_json.parent, gt_mat=subset)
    for p, extra in enumerate(extra_dicts(df)):
        (x1, y1), (x2, y2) = m["headboxes_src"][:, :, p]
        assert extra["head_box"] == pytest.approx([x1 - 1, y1 - 1, x2 - 1, y2 - 1])
        assert extra["head_size"] == pytest.approx(0.6 * math.hypot(x2 - x1, y2 - y1))
    assert df.attrs["gt_mat_max_joint_difference"] < 1e-3


def test_gt_mat_missing_variable(tmp_path):
    import scipy.io

    bad = tmp_path / "bad.mat"
    scipy.io.savemat(str(bad), {"jnt_missing": np.zeros((16, 2))})
    with pytest.raises(DataFileError, match="headboxes_src"):
        load_mpii_gt(bad)


def test_bad_rows_are_kept_with_an_issue(tmp_path, raw):
    good = dict(raw[0])
    persons = [
        good,
        {"image": "000000001.jpg", "scale": 1.0},  # no centre
        {**good, "image": "../../etc/passwd"},
        {**good, "joints": [[1, 2]] * 3},
        {**good, "center": [-1, -1]},
        "not a person",
        {**good, "image": "other.jpg"},
    ]
    path = tmp_path / "mpii.json"
    path.write_text(json.dumps(persons))
    df = data.read("mpii", annotations=path, split="train", image_root=tmp_path)
    assert len(df) == len(persons)
    issues = list(df["issue"])
    assert all(isinstance(x, str) for x in issues)  # no image under tmp_path: every row says so
    assert "missing key(s) ['center']" in issues[1]
    assert "unsafe file name" in issues[2] and df["file_name"][2] == "../../etc/passwd"
    assert "joints/joints_vis" in issues[3]
    assert "no person centre" in issues[4]
    assert "entry is a str" in issues[5]
    kps = keypoints_array(df)
    assert kps.shape == (7, 16, 3)
    assert np.isnan(kps[[1, 3, 5]]).all()
    assert (bbox_array(df)[[1, 3, 4, 5]] == 0).all()
    # the 9-digit stem is the id; other names get fresh ids after the largest, by first appearance
    ids = list(df["image_id"])
    assert ids[0] == ids[3] == ids[4] == 5808361 and ids[1] == 1
    assert [ids[2], ids[5], ids[6]] == [5808362, 5808363, 5808364]


def test_missing_file_and_wrong_top_level(tmp_path):
    with pytest.raises(DataFileError, match="not found"):
        data.read("mpii", annotations=tmp_path / "nope.json", split="val")
    path = tmp_path / "obj.json"
    path.write_text("{}")
    with pytest.raises(DataFileError, match="JSON list"):
        data.read("mpii", annotations=path, split="val")
