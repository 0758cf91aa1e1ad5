"""The demo generator: every format read back through its reader equals the generator's truth;
generations are byte-identical; visibility is honest; 3D joints and cameras reproduce the
renderer's 2D positions; APT-36K is the scarce training set; the committed demo fits its budget.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from posebh import skeletons
from posebh.data.demo import bodies, generate_demo, plan
from posebh.data.demo.generate import DATASETS, reader_sources
from posebh.data.demo.render import PART_STRIDE

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "data" / "01_raw" / "demo"
#: Small enough for seconds, large enough that every split and defect kind exists.
SCALE = 0.12
SEED = 7
SIZE_BUDGET = 15_000_000

READER_MODULE = {
    "coco": "coco", "coco_image_info": "coco", "coco_wholebody": "wholebody", "aic_raw": "aic", "mpii": "mpii",
    "apt36k": "apt36k", "interhand": "interhand", "3dpw_sequences": "pw3d", "3dpw_scorehypo": "pw3d", "detections": "detections",
}  # fmt: skip


def read(fmt: str, split: str, kwargs: dict) -> pd.DataFrame:
    """Read through ``posebh.data.read``; skip (with the reason) only if the reader module is missing."""
    module = f"posebh.data.readers.{READER_MODULE[fmt]}"
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"reader module {module} for format {fmt!r} is not there yet")
    from posebh import data

    return data.read(fmt, split=split, **kwargs)


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    summary, truth = generate_demo(out, seed=SEED, scale=SCALE, return_truth=True, keep_buffers=True)
    return out, summary, truth


def _file_hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def _defect_keys(truth, dataset: str, split: str) -> set[int]:
    return {d["instance_id"] for d in truth.defects if d["dataset"] == dataset and d["split"] == split}


def _clean_read(df: pd.DataFrame, truth, dataset: str, split: str) -> pd.DataFrame:
    """Rows not named in DEFECTS.json (for a duplicated id, keep its first occurrence)."""
    bad = _defect_keys(truth, dataset, split)
    dup = {d["instance_id"] for d in truth.defects if d["dataset"] == dataset and d["split"] == split and d["defect"] == "duplicate_id"}
    keep = ~df["instance_id"].isin(bad - dup)
    first = ~df.duplicated("instance_id", keep="first")
    return df[keep & (first | ~df["instance_id"].isin(dup))]


def _compare(df: pd.DataFrame, rows: list[dict], *, key: str = "instance_id", check_bbox: bool = True, atol: float = 1e-3) -> None:
    assert len(rows) > 0
    by_key = {r[key] if key != "join" else r["_join"]: r for r in rows}
    assert len(by_key) == len(rows), "truth keys are not unique"
    got = {}
    for _, r in df.iterrows():
        got[r[key] if key != "join" else r["_join"]] = r
    assert set(got) == set(by_key)
    for k, t in by_key.items():
        r = got[k]
        assert pd.isna(r["issue"]), (k, r["issue"])
        assert r["file_name"] == t["file_name"]
        assert (int(r["width"]), int(r["height"])) == (t["width"], t["height"])
        assert int(r["iscrowd"]) == t["iscrowd"]
        kp = np.asarray(r["keypoints"], np.float64).reshape(-1, 3)
        np.testing.assert_allclose(kp, t["keypoints"], atol=atol, err_msg=f"keypoints of {k}")
        if check_bbox:
            np.testing.assert_allclose(r["bbox"], t["bbox"], atol=atol, err_msg=f"bbox of {k}")


# ---- round trips through the readers ------------------------------------------------------------

COCO_STYLE = [("coco", "train"), ("coco", "val"), ("coco_wholebody", "train"), ("coco_wholebody", "val"), ("ap10k", "train"), ("ap10k", "val"),
              ("ap10k", "test"), ("ochuman", "val"), ("ochuman", "test"), ("crowdpose", "val"), ("crowdpose", "test")]  # fmt: skip


@pytest.mark.parametrize("dataset,split", COCO_STYLE)
def test_coco_style_round_trip(demo, dataset, split):
    out, _, truth = demo
    fmt, kwargs = reader_sources(out)[dataset][split]
    df = _clean_read(read(fmt, split, kwargs), truth, dataset, split)
    rows = truth.rows(dataset, split)
    _compare(df, rows)
    ids = dict(zip(df["instance_id"], df["image_id"]))
    cats = dict(zip(df["instance_id"], df["category_id"]))
    for t in rows:
        assert ids[t["instance_id"]] == t["image_id"]
        assert cats[t["instance_id"]] == t["category_id"]


def test_aic_raw_round_trip(demo):
    out, _, truth = demo
    for split, (fmt, kwargs) in reader_sources(out)["aic"].items():
        df = read(fmt, split, kwargs)
        df = df[~df["instance_id"].isin(_defect_keys(truth, "aic", split))].copy()
        df["_join"] = [(e["image_hash"], e["human"]) for e in map(json.loads, df["extra"])]
        rows = truth.rows("aic", split)
        for t in rows:
            t["_join"] = (t["extra"]["image_hash"], t["extra"]["human"])
        _compare(df, rows, key="join")
        # the raw file has no integer ids: records are numbered in file order, humans numerically
        assert dict(zip(df["_join"], df["instance_id"])) == {t["_join"]: t["instance_id"] for t in rows}


def test_mpii_round_trip_and_pckh_ground_truth(demo):
    out, _, truth = demo
    for split, (fmt, kwargs) in reader_sources(out)["mpii"].items():
        df = read(fmt, split, kwargs)
        clean = df[~df["instance_id"].isin(_defect_keys(truth, "mpii", split))]
        rows = truth.rows("mpii", split)
        _compare(clean, rows)
        if split == "val":
            # the .mat's columns are the json's persons: head boxes as generated (1-based, 2 decimals)
            heads = {r["instance_id"]: json.loads(r["extra"])["head_box"] for _, r in df.iterrows()}
            for t in rows:
                np.testing.assert_allclose(heads[t["instance_id"]], t["extra"]["head_box"], atol=0.006)
            assert df.attrs["gt_mat_max_joint_difference"] < 1e-3


def test_mpii_mat_header_is_fixed(demo):
    out, _, _ = demo
    head = (out / "mpii" / "annotations" / "mpii_gt_val.mat").read_bytes()[:116]
    assert head.startswith(b"MATLAB 5.0 MAT-file") and b"deterministic" in head


def test_apt36k_round_trip(demo):
    out, _, truth = demo
    fmt, kwargs = reader_sources(out)["apt36k"]["all"]
    df = _clean_read(read(fmt, "all", kwargs), truth, "apt36k", "all")
    rows = truth.rows("apt36k", "all")
    _compare(df, rows)
    got = df.set_index("instance_id")
    for t in rows:
        r = got.loc[t["instance_id"]]
        assert (r["video_id"], r["frame_index"], r["track_id"]) == (t["video_id"], t["frame_index"], t["track_id"])
        assert json.loads(r["extra"])["species_folder"] == t["extra"]["species_folder"]
    raw = json.loads(Path(kwargs["annotations"]).read_text())
    assert raw["images"][0]["file_name"].startswith("D:\\Animal_pose\\")
    assert all("is_crowd" in a and "iscrowd" not in a for a in raw["annotations"])
    # every frame file named in the release exists under the image root
    for t in rows:
        assert (Path(kwargs["image_root"]) / t["file_name"]).is_file()


def test_interhand_round_trip(demo):
    out, _, truth = demo
    for split, (fmt, kwargs) in reader_sources(out)["interhand"].items():
        df = read(fmt, split, kwargs)
        df = df[~df["instance_id"].isin(_defect_keys(truth, "interhand", split))]
        _compare(df, truth.rows("interhand", split), atol=2e-3)


@pytest.mark.parametrize("source", ["3dpw", "3dpw_scorehypo"])
def test_3dpw_round_trip(demo, source):
    out, _, truth = demo
    for split, (fmt, kwargs) in reader_sources(out)[source].items():
        df = read(fmt, split, kwargs)
        if source == "3dpw":
            df = df[~df["instance_id"].isin(_defect_keys(truth, "3dpw", split))]
            rows = truth.rows("3dpw", split)
        else:
            rows = truth.extra["3dpw_scorehypo"][split]
        _compare(df, rows, check_bbox=source != "3dpw", atol=2e-3)


def test_coco_test_dev_and_detections(demo):
    out, _, truth = demo
    src = reader_sources(out)
    images = read(*_args(src["coco"]["test-dev"], "test-dev"))
    assert sorted(images["image_id"]) == sorted(im["id"] for im in truth.extra["coco"]["test-dev_images"])
    assert "annotations" not in json.loads(Path(src["coco"]["test-dev"][1]["annotations"]).read_text())
    for name, (fmt, kwargs) in src["detections"].items():
        dets = read(fmt, "val", kwargs)
        assert len(dets) > 0 and dets["score"].between(0, 1).all(), name
    val = read(*_args(src["detections"]["coco_val"], "val"))
    val_images = json.loads(Path(src["coco"]["val"][1]["annotations"]).read_text())["images"]
    assert set(val["image_id"]) <= {im["id"] for im in val_images}
    # detector-like: every ground-truth person has a box with IoU > 0.5, and low-score extras exist
    for t in truth.rows("coco", "val"):
        boxes = np.stack(val.loc[val["image_id"] == t["image_id"], "bbox"].to_numpy())
        assert _iou(boxes, t["bbox"]).max() > 0.5, t["instance_id"]
    assert (val["score"] < 0.5).any()


def _iou(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    x0 = np.maximum(boxes[:, 0], box[0])
    y0 = np.maximum(boxes[:, 1], box[1])
    x1 = np.minimum(boxes[:, 0] + boxes[:, 2], box[0] + box[2])
    y1 = np.minimum(boxes[:, 1] + boxes[:, 3], box[1] + box[3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    return inter / (boxes[:, 2] * boxes[:, 3] + box[2] * box[3] - inter)


def _args(entry, split):
    fmt, kwargs = entry
    return fmt, split, kwargs


# ---- determinism ---------------------------------------------------------------------------------


def test_generation_is_byte_identical(demo, tmp_path):
    out, _, _ = demo
    again = generate_demo(tmp_path / "again", seed=SEED, scale=SCALE)
    first, second = _file_hashes(out), _file_hashes(tmp_path / "again")
    assert first.keys() == second.keys()
    assert [k for k in first if first[k] != second[k]] == []
    assert again["total_bytes"] == sum((out / k).stat().st_size for k in first if k not in ("DEFECTS.json", "README.md"))


def test_subset_generation_matches_full_run(demo, tmp_path):
    out, _, _ = demo
    generate_demo(tmp_path, seed=SEED, scale=SCALE, datasets=["mpii"])
    full = {k: v for k, v in _file_hashes(out).items() if k.startswith("mpii/")}
    assert {k: v for k, v in _file_hashes(tmp_path).items() if k.startswith("mpii/")} == full


def test_another_seed_differs(tmp_path):
    a = generate_demo(tmp_path / "a", seed=1, scale=SCALE, datasets=["mpii"])
    b = generate_demo(tmp_path / "b", seed=2, scale=SCALE, datasets=["mpii"])
    assert _file_hashes(tmp_path / "a") != _file_hashes(tmp_path / "b")
    assert a["datasets"]["mpii"]["files"] == b["datasets"]["mpii"]["files"]


def test_refuses_to_write_into_a_foreign_folder(tmp_path):
    (tmp_path / "precious.txt").write_text("real data")
    with pytest.raises(ValueError, match="not a demo folder"):
        generate_demo(tmp_path, scale=SCALE, datasets=["mpii"])
    assert (tmp_path / "precious.txt").read_text() == "real data"


def test_regeneration_removes_stale_files(tmp_path):
    generate_demo(tmp_path, seed=0, scale=0.3, datasets=["mpii"])
    n_big = len(list((tmp_path / "mpii" / "images").iterdir()))
    generate_demo(tmp_path, seed=0, scale=SCALE, datasets=["mpii"])
    assert len(list((tmp_path / "mpii" / "images").iterdir())) < n_big
    assert not list(tmp_path.rglob(".tmp-*"))


# ---- visibility honesty --------------------------------------------------------------------------

HONEST = ("coco", "coco_wholebody", "aic", "ochuman", "crowdpose", "ap10k", "apt36k")


@pytest.mark.parametrize("dataset", HONEST)
def test_visible_keypoints_show_their_own_figure(demo, dataset):
    """v = 2 only where the id buffer shows the keypoint's own figure (or background at its edge)."""
    _, _, truth = demo
    checked = 0
    for t in truth.rows(dataset):
        if t["_figure"] is None:
            continue
        ids = truth.images[t["_image"]]["ids"]
        own = t["_figure"] + 1
        H, W = ids.shape
        for x, y, v in t["keypoints"]:
            if v != 2:
                continue
            xi, yi = int(np.round(x)), int(np.round(y))
            pid = int(ids[yi, xi]) // PART_STRIDE
            if pid == 0:
                patch = ids[max(yi - 1, 0) : yi + 2, max(xi - 1, 0) : xi + 2] // PART_STRIDE
                assert own in patch, (t["_image"], x, y)
            else:
                assert pid == own, f"{dataset} {t['_image']}: v=2 at ({x}, {y}) but figure {pid - 1} is on top"
            checked += 1
    assert checked > 0


def test_occluded_keypoints_are_flagged_in_crowds(demo):
    """Crowded releases have keypoints covered by other people, flagged 1 and never 2."""
    _, _, truth = demo
    covered_by_other = 0
    for t in truth.rows("ochuman") + truth.rows("crowdpose"):
        ids = truth.images[t["_image"]]["ids"]
        for x, y, v in t["keypoints"]:
            if v == 0:
                continue
            pid = int(ids[int(np.round(y)), int(np.round(x))]) // PART_STRIDE
            if pid not in (0, t["_figure"] + 1):
                assert v == 1
                covered_by_other += 1
    assert covered_by_other > 0


def test_person_behind_another_is_covered():
    """By construction: a second person straight behind the first has its torso points covered."""
    from posebh.data.demo import render, scenes

    rng = np.random.default_rng(0)
    cam = scenes.scene_camera(rng, 128, 128, roll_sd=0.0, pitch_sd=0.0)
    near = scenes._person(rng, cam, 64, 64, 110, style="stand", yaw=0.0)
    far = scenes._person(rng, cam, 64, 60, 60, style="stand", yaw=0.0)
    figs = [near, far]
    sc = scenes.Scene(cam, figs, render.render(cam, figs, np.zeros((128, 128, 3), np.uint8)), ["person"] * 2, [{}, {}])
    kp_far, _ = scenes.annotate(sc, 1, "mpii")
    kp_near, _ = scenes.annotate(sc, 0, "mpii")
    sk = skeletons.get("mpii")
    for name in ("pelvis", "thorax"):
        assert kp_far[sk.index(name), 2] == 1
        assert kp_near[sk.index(name), 2] == 2


def test_ap10k_uses_only_0_and_2(demo):
    out, _, _ = demo
    doc = json.loads((out / "ap10k" / "annotations" / "ap10k-test-split1.json").read_text())
    assert {v for a in doc["annotations"] for v in a["keypoints"][2::3]} <= {0, 2}


def test_aic_raw_visibility_codes(demo):
    out, _, _ = demo
    fmt, kwargs = reader_sources(out)["aic"]["val"]
    records = json.loads(Path(kwargs["annotations"]).read_text())
    codes = {v for r in records for kps in r["keypoint_annotations"].values() for v in kps[2::3]}
    assert codes <= {1, 2, 3} and {1, 2} <= codes
    assert all(len(r["image_id"]) == 40 for r in records)


# ---- 3D -> 2D ------------------------------------------------------------------------------------


def test_3dpw_projection_matches_renderer(demo):
    from posebh.data.safe_pickle import safe_load

    out, _, truth = demo
    seqs = {}
    checked = 0
    for t in truth.rows("3dpw"):
        e = t["extra"]
        path = out / "3dpw" / "sequenceFiles" / t["split"] / f"{e['sequence']}.pkl"
        seq = seqs.setdefault(path, safe_load(path))
        assert seq["sequence"] == e["sequence"]
        X = np.asarray(seq["jointPositions"][e["actor"]][t["frame_index"]]).reshape(24, 3)
        E = np.asarray(seq["cam_poses"][t["frame_index"]])
        K = np.asarray(seq["cam_intrinsics"])
        Xc = X @ E[:3, :3].T + E[:3, 3]
        uv = np.stack([K[0, 0] * Xc[:, 0] / Xc[:, 2] + K[0, 2], K[1, 1] * Xc[:, 1] / Xc[:, 2] + K[1, 2]], axis=1)
        np.testing.assert_allclose(uv, e["uv_render"], atol=1e-6)
        checked += 1
    assert checked > 0
    seq = next(iter(seqs.values()))
    assert {"sequence", "betas", "poses", "trans", "genders", "poses2d", "jointPositions", "cam_poses", "cam_intrinsics",
            "campose_valid", "img_frame_ids"} <= set(seq)  # fmt: skip
    assert np.asarray(seq["poses2d"][0]).shape[1:] == (3, 18)
    assert np.asarray(seq["poses"][0]).shape[1] == 72


def test_interhand_projection_matches_renderer(demo):
    from posebh.data.demo.generate import project_interhand

    out, _, truth = demo
    k = skeletons.get("interhand").num_keypoints
    checked = 0
    for split, (_, kwargs) in reader_sources(out)["interhand"].items():
        data = json.loads(Path(kwargs["data"]).read_text())
        cams = json.loads(Path(kwargs["camera"]).read_text())
        joints = json.loads(Path(kwargs["joint_3d"]).read_text())
        images = {im["id"]: im for im in data["images"]}
        for t in truth.rows("interhand", split):
            im = images[t["image_id"]]
            c = cams[str(im["capture"])]
            cam = im["camera"]
            world = np.asarray(joints[str(im["capture"])][str(im["frame_idx"])]["world_coord"])
            uv, depth = project_interhand(world, c["campos"][cam], c["camrot"][cam], c["focal"][cam], c["princpt"][cam])
            off = 0 if t["extra"]["hand"] == "right" else k
            np.testing.assert_allclose(uv[off : off + k], t["extra"]["uv_render"], atol=0.05)
            assert (depth[off : off + k] > 0).all()
            checked += 1
    assert checked > 0


# ---- sizes and scarcity --------------------------------------------------------------------------

TRAINING = ("coco", "aic", "mpii", "ap10k", "coco_wholebody")


@pytest.mark.parametrize("scale", [0.1, 0.25, 0.5, 1.0, 2.0, 10.0])
def test_apt36k_is_the_smallest_training_set(scale):
    p = plan(scale)
    apt = sum(p["apt36k"].values())  # all of it, before PoseBH's 7:1:2 split
    assert all(apt < p[d]["train"] for d in TRAINING), p


def test_summary_matches_plan(demo):
    _, summary, _ = demo
    p = plan(SCALE)
    assert summary["datasets"]["mpii"]["jpeg_files"] == p["mpii"]["train"] + p["mpii"]["val"]
    assert summary["datasets"]["apt36k"]["jpeg_files"] == p["apt36k"]["all"]
    assert summary["datasets"]["coco"]["splits"]["coco"]["val"]["images"] <= p["coco"]["val"]


def test_large_scale_plan_has_thousands_of_images():
    p = plan(10.0)
    assert all(sum(p[d].values()) >= 1000 for d in ("coco", "aic", "mpii", "ap10k", "interhand"))


def test_committed_demo_fits_the_size_budget():
    if not (COMMITTED / "DEFECTS.json").is_file():
        pytest.skip("data/01_raw/demo has not been generated in this checkout")
    total = sum(p.stat().st_size for p in COMMITTED.rglob("*") if p.is_file())
    assert total <= SIZE_BUDGET, f"{total / 1e6:.1f} MB"


def test_committed_demo_is_what_the_generator_writes(tmp_path):
    """The committed data is regenerated from the code, not edited (checked on one dataset)."""
    if not (COMMITTED / "DEFECTS.json").is_file():
        pytest.skip("data/01_raw/demo has not been generated in this checkout")
    generate_demo(tmp_path, seed=0, scale=1.0, datasets=["mpii"])
    fresh = {k: v for k, v in _file_hashes(tmp_path).items() if k.startswith("mpii/")}
    committed = {k: v for k, v in _file_hashes(COMMITTED).items() if k.startswith("mpii/")}
    assert fresh == committed


# ---- defects -------------------------------------------------------------------------------------


def test_defects_file_lists_what_readers_flag(demo):
    out, _, truth = demo
    listed = json.loads((out / "DEFECTS.json").read_text())["defects"]
    assert len(listed) == len(truth.defects) > 0
    assert {d["dataset"] for d in listed} == set(DATASETS)
    src = reader_sources(out)
    for d in listed:
        fmt, kwargs = src[d["dataset"]][d["split"]]
        df = read(fmt, d["split"], kwargs)
        rows = df[df["instance_id"] == d["instance_id"]]
        assert len(rows) >= 1, d
        if d["check"] == "reader_issue":
            assert rows["issue"].notna().all(), d
        assert (out / d["file"]).is_file()


def _quarantine_vs_defects(out: Path) -> tuple[dict, dict]:
    """Validate everything the readers return from ``out``: (quarantined rows' checks, DEFECTS.json)."""
    from posebh.data.schema import concat
    from posebh.data.validation import validate

    tables = []
    for ds, splits in reader_sources(out).items():
        if ds in ("detections", "3dpw_scorehypo"):
            continue
        for split, (fmt, kwargs) in splits.items():
            if fmt != "coco_image_info":
                tables.append(read(fmt, split, kwargs))
    q = validate(concat(tables)).quarantine
    got = {(r.dataset, r.split, int(r.instance_id)): r.check.split(";") for r in q.itertuples()}
    listed = json.loads((out / "DEFECTS.json").read_text())["defects"]
    return got, {(d["dataset"], d["split"], d["instance_id"]): d["check"] for d in listed}


def test_committed_demo_quarantines_exactly_its_defects():
    """On the committed demo, ingest validation quarantines exactly the rows DEFECTS.json names."""
    pytest.importorskip("great_expectations")
    if not (COMMITTED / "DEFECTS.json").is_file():
        pytest.skip("data/01_raw/demo has not been generated in this checkout")
    got, want = _quarantine_vs_defects(COMMITTED)
    assert set(got) == set(want)
    for key, check in want.items():
        assert check in got[key], (key, check, got[key])


def test_validation_quarantines_exactly_the_defects(demo):
    pytest.importorskip("great_expectations")
    out, _, _ = demo
    got, want = _quarantine_vs_defects(out)
    assert set(got) == set(want)
    for key, check in want.items():
        assert check in got[key], (key, check, got[key])


# ---- body plans ----------------------------------------------------------------------------------


def test_annotation_tables_cover_every_registry_keypoint():
    for ds in bodies.ANNOTATIONS:
        ann = bodies.annotator(ds)
        assert ann.weights.shape[0] == len(bodies.keypoint_names(ds))
        assert np.allclose(ann.weights.sum(axis=1), 1.0)


def test_face_template_mirrors_like_the_registry():
    sk = skeletons.get("coco_wholebody")
    lo = sk.parts["face"][0]
    template = bodies._face_template()
    for a, b in sk.flip_pairs:
        if lo <= a < lo + 68:
            pa, pb = template[a - lo], template[b - lo]
            np.testing.assert_allclose([pa[0], pa[1]], [-pb[0], pb[1]], atol=1e-12)


def test_hands_share_one_model_across_wholebody_and_interhand():
    wb = bodies.ANNOTATIONS["coco_wholebody"]
    ih = bodies.ANNOTATIONS["interhand"]
    assert wb["left_hand_root"] == "lhand.wrist" and ih["wrist"] == "hand.wrist"
    assert wb["left_forefinger4"] == "lhand.index_tip" and ih["forefinger4"] == "hand.index_tip"
    assert wb["right_thumb1"] == "rhand.thumb_cmc" and ih["thumb1"] == "hand.thumb_cmc"


def test_skeleton_definitions_differ_like_the_real_releases():
    """A naive merge by name is wrong: same-named points are different functions of the body."""
    rng = np.random.default_rng(0)
    shape = bodies.sample_shape(rng)
    params = bodies.sample_biped_params(rng, "stand") | {"yaw": 0.0}
    pose = bodies.BipedPose(bodies.biped_rotations(params), np.array([0.0, 0.95, 0.0]), (bodies.sample_hand_pose(rng), bodies.sample_hand_pose(rng)))
    fig = bodies.pose_biped(shape, pose, {})

    def point(ds, name):
        return bodies.annotator(ds).points(fig)[skeletons.get(ds).index(name)]

    assert point("coco", "left_hip")[1] > point("3dpw", "left_hip")[1] + 0.05  # COCO hips sit higher than SMPL's
    assert np.linalg.norm(point("mpii", "pelvis") - point("3dpw", "pelvis")) > 0.05
    assert np.linalg.norm(point("aic", "head_top") - point("mpii", "head_top")) > 0.03
    assert point("mpii", "upper_neck")[1] > point("aic", "neck")[1] + 0.03
    assert np.linalg.norm(point("3dpw", "left_thumb") - point("coco_wholebody", "left_thumb4")) > 0.03


def test_cli_writes_a_dataset(tmp_path, capsys):
    from posebh.data.demo.__main__ import main

    assert main(["--out", str(tmp_path), "--seed", "3", "--scale", str(SCALE), "--datasets", "mpii"]) == 0
    assert (tmp_path / "mpii" / "annotations" / "mpii_gt_val.mat").is_file()
    assert "total" in capsys.readouterr().out


def test_preview_sheet_draws_every_dataset(demo, tmp_path):
    if importlib.util.find_spec("posebh.visualization") is None:
        pytest.skip("posebh.visualization (draw_pose, contact_sheet) is not there yet")
    from posebh.data.demo.preview import PREVIEW, preview_images, write_preview

    out, _, _ = demo
    images, titles = preview_images(out, per_dataset=1)
    assert [t.split()[0] for t in titles] == [d for d, _ in PREVIEW]
    path = write_preview(tmp_path / "sheet.jpg", out, per_dataset=1)
    assert path.read_bytes()[:2] == b"\xff\xd8"
