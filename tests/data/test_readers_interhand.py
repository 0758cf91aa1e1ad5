import json

import numpy as np
import pandas as pd
import pytest

from posebh import data
from posebh.data.errors import DataFileError
from posebh.data.readers.interhand import NO_VALID_JOINT, trainable_hands
from posebh.data.schema import bbox_array, extra_dicts, keypoints_array
from conftest import sample

NAMES = {"data": "test_interhand2.6m_data.json", "camera": "test_interhand2.6m_camera.json",
         "joint_3d": "test_interhand2.6m_joint_3d.json"}  # fmt: skip


@pytest.fixture(scope="module")
def folder(samples):
    return sample(samples, "interhand2.6m", NAMES["data"]).parent


@pytest.fixture(scope="module")
def raw(folder):
    return {k: json.loads((folder / v).read_text()) for k, v in NAMES.items()}


def _read(folder, **over):
    sources = {k: folder / v for k, v in NAMES.items()}
    sources.update(over)
    return data.read("interhand", split="test", image_root=folder, **sources)


@pytest.fixture(scope="module")
def table(folder):
    return _read(folder)


def _expected_pixels(raw, ann):
    """Independent per-joint projection: X_c = R (X_w - C); u = fx X/Z + cx, v = fy Y/Z + cy."""
    img = next(i for i in raw["data"]["images"] if i["id"] == ann["image_id"])
    cap, cam, frame = str(img["capture"]), img["camera"], str(img["frame_idx"])
    c = raw["camera"][cap]
    R, C = c["camrot"][cam], c["campos"][cam]
    (fx, fy), (cx, cy) = c["focal"][cam], c["princpt"][cam]
    out, cam_xyz = [], []
    for Xw in raw["joint_3d"][cap][frame]["world_coord"]:
        d = [Xw[a] - C[a] for a in range(3)]
        x, y, z = (sum(R[r][a] * d[a] for a in range(3)) for r in range(3))
        out.append((fx * x / z + cx, fy * y / z + cy))
        cam_xyz.append((x, y, z))
    return np.array(out), np.array(cam_xyz)


def test_one_row_per_named_hand(table, raw):
    anns = raw["data"]["annotations"]
    assert [a["hand_type"] for a in anns] == ["interacting", "interacting", "left", "right"]
    assert len(table) == 6
    ex = extra_dicts(table)
    assert [e["hand"] for e in ex] == ["right", "left", "right", "left", "left", "right"]
    assert list(table["instance_id"]) == [e["annotation_id"] * 2 + (e["hand"] == "left") for e in ex]
    assert table["instance_id"].is_unique
    assert set(table["category"]) == {"hand"}
    assert table["issue"].isna().all()
    for col, key in (("width", "width"), ("height", "height"), ("file_name", "file_name")):
        by_id = {i["id"]: i[key] for i in raw["data"]["images"]}
        assert list(table[col]) == [by_id[i] for i in table["image_id"]]


def test_projection_matches_an_independent_calculation(table, raw):
    anns = {a["id"]: a for a in raw["data"]["annotations"]}
    kps = keypoints_array(table)
    for r, e in enumerate(extra_dicts(table)):
        ann = anns[e["annotation_id"]]
        pix, cam_xyz = _expected_pixels(raw, ann)
        hand = slice(0, 21) if e["hand"] == "right" else slice(21, 42)
        valid = np.array(ann["joint_valid"]).reshape(-1)[hand] > 0
        np.testing.assert_allclose(kps[r, valid, :2], pix[hand][valid], atol=1e-3)
        np.testing.assert_allclose(np.array(e["joints_cam"]), cam_xyz[hand], atol=2e-3)
        assert (kps[r, valid, 2] == 2).all() and (kps[r, ~valid] == 0).all()
        assert table["num_keypoints"][r] == valid.sum()
        assert e["annotation_bbox"] == ann["bbox"]


def test_valid_joints_fall_inside_the_annotation_box(table):
    kps = keypoints_array(table)
    for r, e in enumerate(extra_dicts(table)):
        x, y, w, h = e["annotation_bbox"]
        pts = kps[r][kps[r, :, 2] > 0, :2]
        assert len(pts)
        assert (pts[:, 0] >= x - 1e-3).all() and (pts[:, 0] <= x + w + 1e-3).all()
        assert (pts[:, 1] >= y - 1e-3).all() and (pts[:, 1] <= y + h + 1e-3).all()


def test_box_is_tight_around_valid_joints(table):
    kps, boxes = keypoints_array(table), bbox_array(table)
    for r in range(len(table)):
        pts = kps[r][kps[r, :, 2] > 0, :2]
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        np.testing.assert_allclose(boxes[r], [lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]], atol=1e-3)


def test_root_invalidity_spreads_to_the_hand(tmp_path, folder, raw):
    d = json.loads(json.dumps(raw["data"]))
    ann = d["annotations"][0]  # interacting
    ann["joint_valid"][41] = [0]  # left wrist
    ann["joint_valid"][3] = [0]  # one right joint only
    path = tmp_path / "data.json"
    path.write_text(json.dumps(d))
    df = _read(folder, data=path)
    kps = keypoints_array(df)
    assert (kps[1] == 0).all() and df["num_keypoints"][1] == 0
    assert df["issue"][1] == NO_VALID_JOINT
    assert (bbox_array(df)[1] == 0).all()
    assert df["num_keypoints"][0] == 20 and kps[0, 3, 2] == 0 and pd.isna(df["issue"][0])


def test_missing_camera_or_frame_is_a_row_issue(tmp_path, folder, raw):
    cams = json.loads(json.dumps(raw["camera"]))
    joints = json.loads(json.dumps(raw["joint_3d"]))
    del cams["2"]  # image 286291 (capture 2)
    del joints["7"]["29590"]  # the left-hand annotation
    (tmp_path / "cam.json").write_text(json.dumps(cams))
    (tmp_path / "j3d.json").write_text(json.dumps(joints))
    df = _read(folder, camera=tmp_path / "cam.json", joint_3d=tmp_path / "j3d.json")
    assert len(df) == 6
    issues = list(df["issue"])
    assert issues[2].startswith("no camera") and issues[3].startswith("no camera")
    assert "no world joints for capture 7 frame 29590" in issues[4]
    assert pd.isna(issues[0]) and pd.isna(issues[5])
    kps = keypoints_array(df)
    assert np.isnan(kps[2:5]).all() and np.isfinite(kps[[0, 1, 5]]).all()


def test_malformed_joint_arrays_are_row_issues(tmp_path, folder, raw):
    d = json.loads(json.dumps(raw["data"]))
    joints = json.loads(json.dumps(raw["joint_3d"]))
    d["annotations"][3]["joint_valid"] = [1] * 40
    joints["7"]["29590"]["world_coord"] = joints["7"]["29590"]["world_coord"][:41]
    (tmp_path / "data.json").write_text(json.dumps(d))
    (tmp_path / "j3d.json").write_text(json.dumps(joints))
    df = _read(folder, data=tmp_path / "data.json", joint_3d=tmp_path / "j3d.json")
    assert list(df["issue"][4:]) == ["world_coord is not 42 x 3 numbers", "joint_valid is not 42 numbers"]
    assert df["issue"][:4].isna().all()
    assert np.isnan(keypoints_array(df)[4:]).all()


def test_unknown_hand_type_keeps_both_hands(tmp_path, folder, raw):
    d = json.loads(json.dumps(raw["data"]))
    d["annotations"][3]["hand_type"] = "both"
    path = tmp_path / "data.json"
    path.write_text(json.dumps(d))
    df = _read(folder, data=path)
    assert len(df) == 7
    assert df["issue"][5].startswith("unknown hand_type") and df["issue"][6].startswith("unknown hand_type")


def test_trainable_hands_filter(table):
    assert trainable_hands(table).all()  # every sample hand has 21 valid joints
    assert not trainable_hands(table, min_valid=21).any()


def test_unusable_files(tmp_path, folder):
    (tmp_path / "bad.json").write_text("[]")
    with pytest.raises(DataFileError, match="bad.json"):
        _read(folder, camera=tmp_path / "bad.json")
    (tmp_path / "nokeys.json").write_text("{}")
    with pytest.raises(DataFileError, match="images"):
        _read(folder, data=tmp_path / "nokeys.json")
