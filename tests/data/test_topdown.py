from __future__ import annotations

import itertools
import pickle

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from posebh import skeletons
from posebh.data.errors import DataFileError
from posebh.data.schema import make_table
from posebh.data.topdown import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MultiDatasetSampler,
    TopDownDataset,
    collate,
    normalize,
)
from posebh.data.transforms import (
    TopDownAugment,
    affine_matrix,
    box_to_center_scale,
    crop_matrix,
    flip_keypoints,
    transform_points,
)

INPUT = (96, 128)
IMAGE_WH = (320, 256)
DOT_RADIUS = 5
GRID_STEP = 18


def _colour_bgr(k: int) -> tuple[int, int, int]:
    return (20 + 13 * k, 255 - 13 * k, (97 * k) % 256)


def _instance(rng, skeleton, box_origin):
    """Keypoints on a jittered grid (dots never touch), a few unlabelled or occluded."""
    k = skeleton.num_keypoints
    cols = 4
    grid = np.array([(i % cols, i // cols) for i in range(k)], float) * GRID_STEP
    xy = np.asarray(box_origin, float) + 12 + grid + rng.uniform(-2, 2, (k, 2))
    v = np.full(k, 2.0)
    v[rng.choice(k, 2, replace=False)] = [0.0, 1.0]
    return np.concatenate([xy, v[:, None]], 1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    rows = {k: [] for k in ("dataset", "file_name", "bbox", "keypoints", "image_id", "instance_id")}
    for name, n in (("coco", 4), ("aic", 3)):
        sk = skeletons.get(name)
        (root / name).mkdir()
        for i in range(n):
            kp = _instance(rng, sk, box_origin=(rng.uniform(20, 150), rng.uniform(10, 60)))
            img = np.zeros((IMAGE_WH[1], IMAGE_WH[0], 3), np.uint8)
            for j, (x, y, v) in enumerate(kp):
                if v > 0:
                    cv2.circle(img, (int(round(x)), int(round(y))), DOT_RADIUS, _colour_bgr(j), -1)
            file_name = f"img_{i}.png"
            cv2.imwrite(str(root / name / file_name), img)
            lo, hi = kp[kp[:, 2] > 0, :2].min(0) - 8, kp[kp[:, 2] > 0, :2].max(0) + 8
            rows["dataset"].append(name)
            rows["file_name"].append(file_name)
            rows["bbox"].append([*lo, *(hi - lo)])
            rows["keypoints"].append(kp.reshape(-1))
            rows["image_id"].append(i)
            rows["instance_id"].append(i)
    n = len(rows["dataset"])
    order = rng.permutation(n)  # the table interleaves datasets; the dataset must regroup them
    table = make_table(
        {
            **{k: [v[i] for i in order] for k, v in rows.items()},
            "split": "train",
            "width": IMAGE_WH[0],
            "height": IMAGE_WH[1],
            "area": 1.0,
            "iscrowd": 0,
            "num_keypoints": 1,
            "category_id": 1,
            "category": "person",
        }
    )
    roots = {"coco": root / "coco", "aic": root / "aic"}
    return table, roots


def _dataset(data, **kw):
    table, roots = data
    kw.setdefault("datasets", ["coco", "aic"])
    kw.setdefault("input_size", INPUT)
    return TopDownDataset(table, image_roots=roots, **kw)


def _rgb255(image: torch.Tensor) -> np.ndarray:
    mean, std = np.array(IMAGENET_MEAN)[:, None, None], np.array(IMAGENET_STD)[:, None, None]
    return ((image.numpy() * std + mean) * 255).transpose(1, 2, 0)


def _original(data, ds, index):
    table, _ = data
    row = table.iloc[ds[index]["instance"]]
    return row, np.asarray(row["keypoints"], np.float64).reshape(-1, 3)


def test_normalize_swaps_to_rgb_and_standardises():
    crop = np.zeros((2, 3, 3), np.uint8)
    crop[1, 2] = (255, 0, 128)  # B, G, R
    out = normalize(crop)
    assert out.shape == (3, 2, 3) and out.dtype == np.float32 and out.flags.c_contiguous
    rgb = np.array([128 / 255, 0.0, 1.0])
    expected = (rgb - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(out[:, 1, 2], expected, rtol=1e-6)
    np.testing.assert_allclose(out[:, 0, 0], -np.array(IMAGENET_MEAN) / np.array(IMAGENET_STD), rtol=1e-6)


def test_index_space_is_the_concatenation_in_dataset_order(data):
    ds = _dataset(data)
    assert ds.sizes == [4, 3] and len(ds) == 7
    assert [ds[i]["dataset_idx"] for i in range(7)] == [0] * 4 + [1] * 3
    assert sorted(ds[i]["instance"] for i in range(7)) == list(range(7))
    table, _ = data
    assert all(table.iloc[ds[i]["instance"]]["dataset"] == ["coco", "aic"][ds[i]["dataset_idx"]] for i in range(7))


def test_eval_crop_is_the_padded_box(data):
    ds = _dataset(data, udp={"coco"})
    for i in range(len(ds)):
        s = ds[i]
        row, kp = _original(data, ds, i)
        c, sc = box_to_center_scale(np.asarray(row["bbox"]), INPUT[0] / INPUT[1])
        np.testing.assert_allclose(s["center"].numpy(), c)
        np.testing.assert_allclose(s["scale"].numpy(), sc)
        assert s["rotation"] == 0 and not s["flipped"] and s["udp"] == (s["dataset_idx"] == 0)
        expected = transform_points(kp[:, :2], affine_matrix(c, sc, 0.0, INPUT, udp=s["udp"]))
        np.testing.assert_allclose(s["keypoints"].numpy(), expected, atol=1e-4)
        np.testing.assert_array_equal(s["visible"].numpy(), np.minimum(kp[:, 2], 1))
        assert s["image"].shape == (3, INPUT[1], INPUT[0]) and s["image"].dtype == torch.float32


AUG = TopDownAugment(flip_prob=0.5, half_body_prob=0.5)


@pytest.mark.parametrize("epoch", [0, 1, 2, 3])
def test_augmented_keypoints_match_transform_points_and_dots(data, epoch):
    ds = _dataset(data, augment=AUG, train=True, seed=11, udp={"coco"})
    ds.set_epoch(epoch)
    for i in range(len(ds)):
        s = ds[i]
        _, kp = _original(data, ds, i)
        sk = ds.skeletons[s["dataset_idx"]]
        if s["flipped"]:
            kp = flip_keypoints(kp, sk.flip_index(), s["image_width"])
        m = affine_matrix(s["center"].numpy(), s["scale"].numpy(), s["rotation"], INPUT, udp=s["udp"])
        np.testing.assert_allclose(s["keypoints"].numpy(), transform_points(kp[:, :2], m), atol=1e-4)
        rgb = _rgb255(s["image"])
        source = sk.flip_index() if s["flipped"] else list(range(sk.num_keypoints))
        checked = 0
        for j, (x, y) in enumerate(s["keypoints"].numpy()):
            if s["visible"][j] > 0 and s["in_crop"][j]:
                pixel = rgb[int(round(y)), int(round(x))]
                np.testing.assert_allclose(pixel, _colour_bgr(source[j])[::-1], atol=3)
                checked += 1
        assert checked > 0


def test_crop_points_map_back_to_the_image(data):
    ds = _dataset(data, augment=AUG, train=True, seed=12, udp={"aic"})
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            s = ds[i]
            _, kp = _original(data, ds, i)
            back = crop_matrix(
                s["center"].numpy(), s["scale"].numpy(), s["rotation"], INPUT, udp=s["udp"],
                flip_width=s["image_width"] if s["flipped"] else None, inverse=True,
            )
            source = ds.skeletons[s["dataset_idx"]].flip_index() if s["flipped"] else slice(None)
            np.testing.assert_allclose(transform_points(s["keypoints"].numpy(), back), kp[source, :2], atol=1e-3)


def test_augmentation_actually_varies(data):
    ds = _dataset(data, augment=AUG, train=True, seed=3)
    draws = []
    for e in range(8):
        ds.set_epoch(e)
        draws.append((ds[0]["flipped"], ds[0]["rotation"], float(ds[0]["scale"][0])))
    assert len(set(draws)) == 8
    assert {d[0] for d in draws} == {True, False}


def test_deterministic_per_seed_epoch_index(data):
    a = _dataset(data, augment=AUG, train=True, seed=5)
    b = _dataset(data, augment=AUG, train=True, seed=5)
    c = _dataset(data, augment=AUG, train=True, seed=6)
    for ds in (a, b, c):
        ds.set_epoch(2)
    for i in range(len(a)):
        sa, sb = a[i], b[i]
        torch.testing.assert_close(sa["image"], sb["image"])
        torch.testing.assert_close(sa["keypoints"], sb["keypoints"])
        torch.testing.assert_close(a[i]["image"], sa["image"])
    assert any(not torch.equal(a[i]["keypoints"], c[i]["keypoints"]) for i in range(len(a)))


def test_dataset_pickles_for_spawned_workers(data):
    ds = _dataset(data, augment=AUG, train=True, seed=4)
    ds.set_epoch(3)
    clone = pickle.loads(pickle.dumps(ds))
    assert clone.epoch == 3
    torch.testing.assert_close(clone[2]["image"], ds[2]["image"])


def test_persistent_workers_see_set_epoch(data):
    ds = _dataset(data, augment=AUG, train=True, seed=9)
    sampler = MultiDatasetSampler(ds.sizes, batch_size=2, seed=1)
    loader = DataLoader(ds, batch_size=2, sampler=sampler, num_workers=2, persistent_workers=True, collate_fn=collate)
    per_epoch = []
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        ds.set_epoch(epoch)
        order = sampler.replica_indices()
        batches = list(loader)
        assert len(batches) == len(order) // 2
        for b, batch in enumerate(batches):
            expected = collate([ds[int(i)] for i in order[2 * b : 2 * b + 2]])
            torch.testing.assert_close(batch["image"], expected["image"])
            assert batch["instance"].tolist() == expected["instance"].tolist()
        per_epoch.append(torch.cat([bt["image"] for bt in batches]))
    del loader  # shut the persistent workers down here, not at interpreter exit
    assert not torch.equal(per_epoch[0], per_epoch[1])


def test_collate_groups_targets_per_dataset(data):
    ds = _dataset(data)
    batch = collate([ds[i] for i in (5, 0, 6, 1, 2)])
    assert batch["image"].shape == (5, 3, INPUT[1], INPUT[0])
    assert batch["dataset_idx"].tolist() == [1, 0, 1, 0, 0]
    assert sorted(batch["targets"]) == [0, 1]
    t0, t1 = batch["targets"][0], batch["targets"][1]
    assert t0["index"].tolist() == [1, 3, 4] and t1["index"].tolist() == [0, 2]
    assert t0["keypoints"].shape == (3, 17, 2) and t1["keypoints"].shape == (2, 14, 2)
    assert t1["visible"].shape == (2, 14) and t1["in_crop"].dtype == torch.bool
    torch.testing.assert_close(t1["keypoints"][1], ds[6]["keypoints"])
    assert batch["center"].dtype == torch.float64 and batch["center"].shape == (5, 2)


def test_outside_crop_policy(data):
    table, roots = data
    small = table.copy()
    row = int(np.flatnonzero(small["dataset"] == "coco")[0])
    kp = np.asarray(small.at[row, "keypoints"]).reshape(-1, 3)
    lo = kp[kp[:, 2] > 0, :2].min(0)
    small.at[row, "bbox"] = np.array([lo[0], lo[1], 20.0, 20.0])  # the crop shows only a corner
    keep = TopDownDataset(small, image_roots=roots, datasets=["coco", "aic"], input_size=INPUT)
    zero = TopDownDataset(small, image_roots=roots, datasets=["coco", "aic"], input_size=INPUT, outside_crop="zero")
    i = next(i for i in range(len(keep)) if keep[i]["instance"] == row)
    sk, sz = keep[i], zero[i]
    xy = sk["keypoints"].numpy()
    inside = (xy[:, 0] >= -0.5) & (xy[:, 0] < INPUT[0] - 0.5) & (xy[:, 1] >= -0.5) & (xy[:, 1] < INPUT[1] - 0.5)
    np.testing.assert_array_equal(sk["in_crop"].numpy(), inside)
    assert (~inside & (kp[:, 2] > 0)).any()
    np.testing.assert_array_equal(sk["visible"].numpy(), np.minimum(kp[:, 2], 1))
    np.testing.assert_array_equal(sz["visible"].numpy(), np.minimum(kp[:, 2], 1) * inside)


@pytest.mark.parametrize("mode", ["fixed", "per_epoch"])
def test_center_jitter_modes(data, mode):
    only_jitter = TopDownAugment(
        flip_prob=0.0, half_body=False, scale_factor=0.0, rotation_prob=0.0, center_jitter_prob=1.0
    )
    ds = _dataset(data, augment=only_jitter, train=True, jitter=mode)
    table, _ = data
    for i in range(len(ds)):
        box = np.asarray(table.iloc[int(ds._rows[i])]["bbox"])
        centres = np.array([ds.crop_params(i, IMAGE_WH[0], epoch=e).center for e in range(4)])
        offset = (centres - (box[:2] + box[2:] / 2)) / box[2:]
        assert np.abs(offset).max() <= 0.2 and np.abs(offset).min() > 0
        assert (np.ptp(centres, axis=0).max() == 0) == (mode == "fixed")


def test_bad_images_raise_naming_the_file(data, tmp_path):
    table, roots = data
    bad = table.copy()
    bad["file_name"] = bad["file_name"].astype(str)
    coco_rows = np.flatnonzero(bad["dataset"] == "coco")
    bad.loc[coco_rows[0], "file_name"] = "missing.png"
    bad.loc[coco_rows[1], "file_name"] = "corrupt.png"
    (tmp_path / "corrupt.png").write_bytes(b"definitely not a png")
    ds = TopDownDataset(
        bad, image_roots={"coco": tmp_path, "aic": roots["aic"]}, datasets=["coco", "aic"], input_size=INPUT
    )
    with pytest.raises(DataFileError, match="missing.png"):
        ds[0]
    with pytest.raises(DataFileError, match="corrupt.png"):
        ds[1]


def test_configuration_errors(data):
    table, roots = data
    with pytest.raises(ValueError, match="aic"):
        TopDownDataset(table, image_roots=roots, datasets=["coco"])
    with pytest.raises(KeyError, match="aic"):
        TopDownDataset(table, image_roots={"coco": roots["coco"]}, datasets=["coco", "aic"])


# ----------------------------------------------------------------------------------------------
# Sampler
# ----------------------------------------------------------------------------------------------


def _dataset_of(sampler, indices):
    return np.searchsorted(sampler.offsets, indices, side="right") - 1


def test_sampler_default_is_a_permutation_of_the_concatenation():
    s = MultiDatasetSampler([10, 30, 60], batch_size=4, seed=3)
    idx = np.array(list(s))
    assert sorted(idx) == list(range(100))
    assert np.bincount(_dataset_of(s, idx)).tolist() == [10, 30, 60]
    s.set_epoch(1)
    assert not np.array_equal(np.array(list(s)), idx)
    again = MultiDatasetSampler([10, 30, 60], batch_size=4, seed=3)
    assert np.array_equal(np.array(list(again)), idx)


def test_sampler_ratios():
    s = MultiDatasetSampler([10, 30, 60], batch_size=8, ratios=[1, 1, 2], epoch_size=400)
    idx = np.array(list(s))
    assert len(idx) == 400
    assert np.bincount(_dataset_of(s, idx)).tolist() == [100, 100, 200]
    assert (np.bincount(idx[idx < 10]) == 10).all()  # dataset 0 cycled through whole permutations
    counts = np.bincount(idx[(idx >= 10) & (idx < 40)] - 10, minlength=30)
    assert set(counts.tolist()) <= {3, 4}
    assert counts.sum() == 100
    odd = MultiDatasetSampler([10, 30, 60], batch_size=1, ratios=[0.5, 0.3, 0.2], epoch_size=101)
    assert np.bincount(_dataset_of(odd, np.array(list(odd))), minlength=3).tolist() == [51, 30, 20]
    with pytest.raises(ValueError):
        MultiDatasetSampler([0, 30], batch_size=1, ratios=[1, 1])


@pytest.mark.parametrize("ratios", [None, [2, 1, 1]])
def test_sampler_sharding_is_disjoint(ratios):
    sizes = [10, 30, 61]
    shards = [MultiDatasetSampler(sizes, 4, ratios=ratios, num_replicas=2, rank=r, seed=7) for r in (0, 1)]
    a, b = (np.array(list(s)) for s in shards)
    assert len(a) == len(b) == 48  # 101 // (2 * 4) whole batches each
    order = shards[0].epoch_order()
    assert np.array_equal(np.sort(np.concatenate([a, b])), np.sort(order[:96]))
    if ratios is None:
        assert not set(a) & set(b)
    else:  # positions never overlap: together the shards are exactly the first 96 draws
        assert np.array_equal(np.concatenate([a[:, None], b[:, None]], 1).reshape(-1), order[:96])
    full = [MultiDatasetSampler(sizes, 4, num_replicas=2, rank=r, drop_last=False) for r in (0, 1)]
    fa, fb = (list(s) for s in full)
    assert len(fa) == len(fb) == 51 and set(fa) | set(fb) == set(range(101))


def test_sampler_resume_continues_exactly():
    s = MultiDatasetSampler([13, 40, 27], batch_size=4, num_replicas=2, rank=1, seed=4)
    s.set_epoch(3)
    full = list(s)
    it = iter(s)
    consumed = list(itertools.islice(it, 13))
    state = s.state_dict()
    assert state["epoch"] == 3 and state["position"] == 13
    resumed = MultiDatasetSampler([13, 40, 27], batch_size=4, num_replicas=2, rank=1, seed=4)
    resumed.load_state_dict(state)
    resumed.set_epoch(3)  # the engine's usual call keeps the resume point
    assert len(resumed) == len(full) - 13
    assert consumed + list(resumed) == full
    resumed.set_epoch(4)
    s.set_epoch(4)
    assert list(resumed) == list(s)
    assert s.state_dict(batches_done=3)["position"] == 12
    with pytest.raises(ValueError, match="num_replicas"):
        MultiDatasetSampler([13, 40, 27], batch_size=4, num_replicas=4).load_state_dict(state)


def test_sampler_resume_through_a_dataloader(data):
    ds = _dataset(data)
    s = MultiDatasetSampler(ds.sizes, batch_size=2, seed=2, drop_last=False)
    loader = DataLoader(ds, batch_size=2, sampler=s, collate_fn=collate)
    all_batches = [b["instance"].tolist() for b in loader]
    it = iter(loader)
    next(it)
    state = s.state_dict(batches_done=1)
    s2 = MultiDatasetSampler(ds.sizes, batch_size=2, seed=2, drop_last=False)
    s2.load_state_dict(state)
    rest = [b["instance"].tolist() for b in DataLoader(ds, batch_size=2, sampler=s2, collate_fn=collate)]
    assert rest == all_batches[1:]
