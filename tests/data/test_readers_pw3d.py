"""3DPW: no real sample of either format exists, so files in the documented schema are written
here; the expected pixels come from a per-joint calculation written out in the test."""

import json
import math
import os
import pickle

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from posebh import data
from posebh.data.errors import DataFileError
from posebh.data.pw3d import BAD_JOINTS, NO_VISIBLE_JOINT, reproject_3dpw, smpl_instances
from posebh.data.schema import bbox_array, extra_dicts, keypoints_array

FX, FY, CX, CY = 1000.0, 1010.0, 540.0, 960.0
W, H = 1080, 1920  # portrait, as many 3DPW sequences
K = np.array([[FX, 0, CX], [0, FY, CY], [0, 0, 1]])
N_FRAMES = 5
J = 24


def _pixel(x, y, z, fx=FX, fy=FY, cx=CX, cy=CY):
    return fx * x / z + cx, fy * y / z + cy


def _expected(joints_cam, width, height, padding=1.2, fx=FX, fy=FY, cx=CX, cy=CY):
    """Per-joint keypoints and the padded, clipped box, written out independently."""
    kps, pts = [], []
    for x, y, z in joints_cam:
        u, v = _pixel(x, y, z, fx, fy, cx, cy)
        if z > 0 and 0 <= u < width and 0 <= v < height:
            kps.append((u, v, 2))
            pts.append((u, v))
        else:
            kps.append((0, 0, 0))
    if not pts:
        return np.array(kps), np.zeros(4)
    us, vs = [p[0] for p in pts], [p[1] for p in pts]
    cu, cv = (min(us) + max(us)) / 2, (min(vs) + max(vs)) / 2
    hw, hh = (max(us) - min(us)) * padding / 2, (max(vs) - min(vs)) * padding / 2
    x1, y1 = max(cu - hw, 0), max(cv - hh, 0)
    x2, y2 = min(cu + hw, width), min(cv + hh, height)
    return np.array(kps), np.array([x1, y1, x2 - x1, y2 - y1])


def _rot_y(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _actor_joints(actor: int, frame: int) -> np.ndarray:
    """Camera-frame joints: a 4 x 6 grid about 4 m away; actor 0 frame 0 has one joint behind the
    camera (0) and one outside the image (1)."""
    gx, gy = np.meshgrid(np.linspace(-0.4, 0.4, 4), np.linspace(-1.2, 1.2, 6))
    X = np.stack([gx.ravel() + 0.3 * actor + 0.01 * frame, gy.ravel(), np.full(J, 4.0 + actor)], axis=1)
    if actor == 0 and frame == 0:
        X[0] = [0.1, 0.1, -1.0]
        X[1] = [3.0, 0.0, 4.0]
    return X


def _camera(frame: int) -> np.ndarray:
    E = np.eye(4)
    E[:3, :3] = _rot_y(0.1 * frame - 0.2)
    E[:3, 3] = [0.2 * frame, -0.1, 1.0 + 0.05 * frame]
    return E


VALID = [np.array([1, 1, 0, 1, 1], bool), np.array([1, 1, 0, 0, 0], bool)]


def _sequence(name: str) -> dict:
    cams = np.stack([_camera(f) for f in range(N_FRAMES)])
    positions = []
    for a in range(2):
        world = []
        for f in range(N_FRAMES):
            R, t = cams[f, :3, :3], cams[f, :3, 3]
            world.append(((_actor_joints(a, f) - t) @ R).reshape(-1))  # R^T (X_c - t)
        positions.append(np.array(world))
    return {
        "sequence": name,
        "jointPositions": positions,
        "cam_poses": cams,
        "cam_intrinsics": K,
        "campose_valid": VALID,
        "genders": ["m", "f"],
        "poses2d": [np.zeros((N_FRAMES, 3, 18))] * 2,
        "betas": [np.zeros(10)] * 2,
    }


@pytest.fixture()
def release(tmp_path):
    seq_dir = tmp_path / "sequenceFiles" / "test"
    seq_dir.mkdir(parents=True)
    images = tmp_path / "imageFiles"
    for name in ("b_walk_00", "a_run_01"):
        (seq_dir / f"{name}.pkl").write_bytes(pickle.dumps(_sequence(name), protocol=2))
        (images / name).mkdir(parents=True)
        Image.new("L", (W, H)).save(images / name / "image_00000.jpg")
    return seq_dir, images


def test_sequence_rows_and_ids(release):
    seq_dir, images = release
    df = data.read("3dpw_sequences", sequences=seq_dir, split="test", image_root=images)
    per_seq = sum(v.sum() for v in VALID)
    assert len(df) == 2 * per_seq
    assert df.attrs["invalid_campose_frames"] == 2 * sum((~v).sum() for v in VALID)
    assert df.attrs["invalid_campose_frames_by_sequence"] == {"a_run_01": 4, "b_walk_00": 4}
    a = df[df["video_id"] == 0]  # sequences are numbered in name order
    assert list(a["frame_index"]) == [0, 0, 1, 1, 3, 4] and list(a["track_id"]) == [0, 1, 0, 1, 0, 0]
    assert list(a["file_name"])[:2] == ["a_run_01/image_00000.jpg"] * 2
    b = df[df["video_id"] == 1]
    assert list(b["image_id"]) == [100000 + f for f in (0, 0, 1, 1, 3, 4)]
    assert list(b["instance_id"]) == [(100000 + f) * 10 + t for f, t in zip(b["frame_index"], b["track_id"])]
    assert df["instance_id"].is_unique
    assert (df["width"] == W).all() and (df["height"] == H).all()
    assert df["issue"].isna().all()
    assert [e["gender"] for e in extra_dicts(a)] == ["m", "f", "m", "f", "m", "m"]


def test_sequence_projection_matches_a_per_joint_calculation(release):
    seq_dir, images = release
    df = data.read("3dpw_sequences", sequences=seq_dir, split="test", image_root=images)
    kps, boxes = keypoints_array(df), bbox_array(df)
    for r, (f, t) in enumerate(zip(df["frame_index"], df["track_id"])):
        exp_kps, exp_box = _expected(_actor_joints(t, f), W, H)
        np.testing.assert_allclose(kps[r], exp_kps, atol=2e-3)
        np.testing.assert_allclose(boxes[r], exp_box, atol=2e-3)
        assert df["num_keypoints"][r] == (exp_kps[:, 2] > 0).sum()
        assert df["area"][r] == pytest.approx(0.53 * boxes[r, 2] * boxes[r, 3])
    first = kps[((df["video_id"] == 0) & (df["frame_index"] == 0) & (df["track_id"] == 0)).to_numpy()][0]
    assert (first[0] == 0).all() and (first[1] == 0).all()  # behind the camera; outside the image
    extra = extra_dicts(df)[0]
    assert extra["intrinsics"] == [FX, FY, CX, CY]
    np.testing.assert_allclose(extra["joints_cam"], _actor_joints(0, 0), atol=1e-6)


def test_list_of_files_and_missing_images(release):
    seq_dir, _ = release
    df = data.read("3dpw_sequences", sequences=[seq_dir / "b_walk_00.pkl"], split="test")
    assert len(df) == 6 and (df["width"] == 0).all()
    assert df["issue"].str.contains("image size unknown").all()
    first = keypoints_array(df)[0]
    assert first[1, 2] == 2 and first[0, 2] == 0  # bounds unknown: only depth decides
    # re-projection keeps the reader's own reasons and recomputes its own
    far = reproject_3dpw(df, min_depth=100.0)
    assert (far["issue"] == df["issue"] + "; " + NO_VISIBLE_JOINT).all()
    assert (reproject_3dpw(far)["issue"] == df["issue"]).all()


def test_reproject_rebuilds_from_extra(release):
    seq_dir, images = release
    df = data.read("3dpw_sequences", sequences=seq_dir, split="test", image_root=images)
    same = reproject_3dpw(df)
    np.testing.assert_array_equal(keypoints_array(same), keypoints_array(df))
    np.testing.assert_array_equal(bbox_array(same), bbox_array(df))
    tight = reproject_3dpw(df, box_padding=1.0)
    for r, (f, t) in enumerate(zip(df["frame_index"], df["track_id"])):
        exp_box = _expected(_actor_joints(t, f), W, H, padding=1.0)[1]
        np.testing.assert_allclose(bbox_array(tight)[r], exp_box, atol=2e-3)
    far = reproject_3dpw(df, min_depth=4.5)  # actor 0 stands at 4 m
    assert (far["num_keypoints"][df["track_id"] == 0] == 0).all()
    assert (far["issue"][df["track_id"] == 0] == NO_VISIBLE_JOINT).all()
    assert far["issue"][df["track_id"] == 1].isna().all()


def test_missing_key_names_file_and_key(tmp_path):
    seq = _sequence("x_00")
    del seq["cam_poses"]
    path = tmp_path / "x_00.pkl"
    path.write_bytes(pickle.dumps(seq, protocol=2))
    with pytest.raises(DataFileError, match=r"x_00\.pkl.*cam_poses"):
        data.read("3dpw_sequences", sequences=path, split="train")
    seq = _sequence("x_00")
    seq["campose_valid"] = [VALID[0]]
    path.write_bytes(pickle.dumps(seq, protocol=2))
    with pytest.raises(DataFileError, match="campose_valid"):
        data.read("3dpw_sequences", sequences=path, split="train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFileError, match="no .pkl"):
        data.read("3dpw_sequences", sequences=tmp_path / "empty", split="train")


class _Evil:
    def __reduce__(self):
        return os.system, ("true",)


def test_hostile_sequence_file_is_refused(tmp_path):
    seq = _sequence("x_00")
    seq["betas"] = _Evil()
    path = tmp_path / "x_00.pkl"
    path.write_bytes(pickle.dumps(seq, protocol=2))
    with pytest.raises(DataFileError, match="forbidden global"):
        data.read("3dpw_sequences", sequences=path, split="train")


# ----------------------------------------------------------------------------------------------
# smpl_instances directly
# ----------------------------------------------------------------------------------------------


def test_smpl_instances_hand_values():
    joints = np.zeros((1, J, 3))
    joints[0, :, 2] = -1.0  # everything behind the camera ...
    joints[0, 0] = [0.5, -0.25, 2.0]  # u = 1000 * 0.25 + 320 = 570, v = 1000 * -0.125 + 240 = 115
    joints[0, 1] = [-0.5, 0.5, 2.5]  # u = 120, v = 440
    joints[0, 2] = [10.0, 0.0, 2.0]  # in front, right of the image (u = 5320)
    joints[0, 3] = [-0.5, 0.75, 2.5]  # in front, below the image (v = 540 >= 480)
    inst = smpl_instances(joints, (1000.0, 1000.0, 320.0, 240.0), 640, 480, box_padding=1.0)
    kps = inst.keypoints.reshape(J, 3)
    np.testing.assert_allclose(kps[0], [570.0, 115.0, 2])
    np.testing.assert_allclose(kps[1], [120.0, 440.0, 2])
    assert (kps[2:] == 0).all()
    np.testing.assert_allclose(inst.bbox[0], [120.0, 115.0, 450.0, 325.0])
    np.testing.assert_allclose(inst.depth[0, :4], [2.0, 2.5, 2.0, 2.5])


def test_smpl_instances_visibility_and_box():
    joints = np.full((2, J, 3), [0.0, 0.0, -1.0])
    joints[0, 0] = [0.1, 0.1, 1.0]  # u = 100*0.1+320 = 330, v = 250
    joints[0, 1] = [0.3, 0.2, 1.0]  # u = 350, v = 260
    joints[0, 2] = [0.3, 0.2, 0.0]  # zero depth
    joints[1, 0] = [-3.1, -2.3, 1.0]  # u = 10, v = 10: near the corner
    joints[1, 1] = [-2.9, -2.2, 1.0]  # u = 30, v = 20
    K2 = np.array([[100.0, 0, 320.0], [0, 100.0, 240.0], [0, 0, 1]])
    inst = smpl_instances(joints, K2, 640, 480, box_padding=2.0)
    kps = inst.keypoints.reshape(2, J, 3)
    np.testing.assert_allclose(kps[0, :2], [[330, 250, 2], [350, 260, 2]])
    assert (kps[0, 2:] == 0).all() and (kps[1, 2:] == 0).all()
    # row 0: tight box (330, 250, 20, 10) doubled about its centre (340, 255)
    np.testing.assert_allclose(inst.bbox[0], [320, 245, 40, 20])
    # row 1: tight (10, 10, 20, 10), doubled about (20, 15) -> (0, 5, 40, 20), already at the edge
    np.testing.assert_allclose(inst.bbox[1], [0, 5, 40, 20])
    np.testing.assert_array_equal(inst.num_keypoints, [2, 2])
    np.testing.assert_allclose(inst.area, 0.53 * 40 * 20)
    # padding 4 pushes row 1 past the top-left corner: clipped to the image
    np.testing.assert_allclose(smpl_instances(joints, K2, 640, 480, box_padding=4.0).bbox[1], [0, 0, 60, 35])


def test_smpl_instances_per_row_intrinsics_and_min_depth():
    joints = np.tile(_actor_joints(1, 0), (2, 1, 1))
    intr = np.array([[FX, FY, CX, CY], [800.0, 800.0, 500.0, 900.0]])
    inst = smpl_instances(joints, intr, [W, W], [H, H])
    for r in range(2):
        fx, fy, cx, cy = intr[r]
        exp_kps, exp_box = _expected(joints[r], W, H, fx=fx, fy=fy, cx=cx, cy=cy)
        np.testing.assert_allclose(inst.keypoints.reshape(2, J, 3)[r], exp_kps, atol=1e-4)
        np.testing.assert_allclose(inst.bbox[r], exp_box, atol=1e-4)
    assert (smpl_instances(joints, intr, W, H, min_depth=5.0).num_keypoints == 0).all()


# ----------------------------------------------------------------------------------------------
# ScoreHypo json
# ----------------------------------------------------------------------------------------------


def _scorehypo(tmp_path):
    cams = {1: ([1500.0, 1490.0], [540.0, 960.0]), 2: ([1200.0, 1200.0], [960.0, 540.0])}
    images = [
        {"id": 1, "file_name": "image_00007.jpg", "sequence": "downtown_walk_00", "width": 1080, "height": 1920,
         "cam_param": {"focal": cams[1][0], "princpt": cams[1][1]}},
        {"id": 2, "file_name": "image_00012.jpg", "sequence": "courtyard_dance_00", "width": 1920, "height": 1080,
         "cam_param": {"focal": cams[2][0], "princpt": cams[2][1]}},
    ]  # fmt: skip
    anns = []
    for aid, (img, actor) in enumerate([(1, 0), (1, 1), (2, 1), (2, 0)], start=10):
        jc = _actor_joints(actor, 3) * 1000.0  # mm, as in ScoreHypo's files
        (fx, fy), (cx, cy) = cams[img]
        ji = [[*_pixel(x, y, z, fx, fy, cx, cy), z] for x, y, z in jc]
        anns.append({"id": aid, "image_id": img, "bbox": [100.0, 200.0, 300.0, 600.0],
                     "smpl_joint_cam": jc.tolist(), "smpl_joint_img": ji})  # fmt: skip
    anns[1]["bbox"] = [0, 0, 0, 0]
    anns[2]["smpl_joint_img"][5][0] += 2.0
    del anns[3]["smpl_joint_cam"]
    path = tmp_path / "3DPW_test.json"
    path.write_text(json.dumps({"images": images, "annotations": anns}))
    return path, cams, anns


def test_scorehypo_reader(tmp_path):
    path, cams, anns = _scorehypo(tmp_path)
    df = data.read("3dpw_scorehypo", annotations=path, split="test")
    assert list(df["instance_id"]) == [10, 11, 12, 13]
    names = ["downtown_walk_00/image_00007.jpg"] * 2 + ["courtyard_dance_00/image_00012.jpg"] * 2
    assert list(df["file_name"]) == names
    assert list(df["video_id"]) == [1, 1, 0, 0] and list(df["frame_index"]) == [7, 7, 12, 12]
    kps, boxes, ex = keypoints_array(df), bbox_array(df), extra_dicts(df)
    for r in range(3):
        img = anns[r]["image_id"]
        (fx, fy), (cx, cy) = cams[img]
        w, h = (1080, 1920) if img == 1 else (1920, 1080)
        exp_kps, exp_box = _expected(np.array(anns[r]["smpl_joint_cam"]), w, h, fx=fx, fy=fy, cx=cx, cy=cy)
        np.testing.assert_allclose(kps[r], exp_kps, atol=1e-3)
        if r == 1:  # no usable release box: the joint box
            np.testing.assert_allclose(boxes[r], exp_box, atol=1e-3)
            assert ex[r]["bbox_source"] == "joints"
        else:
            np.testing.assert_allclose(boxes[r], anns[r]["bbox"])
            assert ex[r]["bbox_source"] == "release"
        assert df["area"][r] == pytest.approx(0.53 * boxes[r, 2] * boxes[r, 3])
    assert ex[0]["joint_img_max_difference"] == pytest.approx(0.0, abs=1e-6)
    assert ex[2]["joint_img_max_difference"] == pytest.approx(2.0, abs=1e-6)
    assert df["issue"][:3].isna().all()
    assert "smpl_joint_cam" in df["issue"][3] and np.isnan(kps[3]).all()
    # the prepare step's re-projection keeps the release box and reproduces the keypoints
    again = reproject_3dpw(df)
    np.testing.assert_allclose(keypoints_array(again)[:3], kps[:3], atol=1e-4)
    np.testing.assert_allclose(bbox_array(again)[:3], boxes[:3])
    assert again["issue"][3] == df["issue"][3]


def test_reproject_marks_rows_without_joints():
    from posebh.data.schema import make_table

    df = make_table({
        "dataset": "3dpw", "split": "test", "image_id": [1], "file_name": ["s/image_00000.jpg"],
        "width": [W], "height": [H], "instance_id": [1], "bbox": [np.zeros(4)], "area": [0.0],
        "iscrowd": 0, "keypoints": [np.zeros(3 * J)], "num_keypoints": [0], "category_id": 1,
        "category": "person", "extra": [{"intrinsics": [FX, FY, CX, CY]}],
    })  # fmt: skip
    out = reproject_3dpw(df)
    assert out["issue"][0] == BAD_JOINTS and np.isnan(keypoints_array(out)).all()
    assert pd.isna(df["issue"][0])  # the input is not modified


def test_bad_frames_are_rows_with_an_issue_and_all_invalid_gives_an_empty_table(tmp_path):
    seq = _sequence("x_00")
    seq["jointPositions"][0][1, 4] = np.nan  # actor 0, frame 1
    path = tmp_path / "x_00.pkl"
    path.write_bytes(pickle.dumps(seq, protocol=2))
    df = data.read("3dpw_sequences", sequences=path, split="train")
    bad = ((df["frame_index"] == 1) & (df["track_id"] == 0)).to_numpy()
    assert df["issue"][bad].iloc[0].endswith(BAD_JOINTS)
    assert np.isnan(keypoints_array(df)[bad]).all() and (bbox_array(df)[bad] == 0).all()
    assert extra_dicts(df[bad])[0]["joints_cam"] is None
    assert np.isfinite(keypoints_array(df)[~bad]).all()

    seq["campose_valid"] = [np.zeros(N_FRAMES, bool)] * 2
    path.write_bytes(pickle.dumps(seq, protocol=2))
    empty = data.read("3dpw_sequences", sequences=path, split="train")
    assert len(empty) == 0 and empty.attrs["invalid_campose_frames"] == 2 * N_FRAMES
