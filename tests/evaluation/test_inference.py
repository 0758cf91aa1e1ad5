"""Top-down inference on the real samples: a "perfect model" that renders each crop's ground-truth
Gaussians (with the codec's encoder, looked up by the crop's pixels) must come back to the ground
truth in original image pixels and give AP 1; flip test, table/image agreement, row order,
detection boxes and a tiny real PoseBH end to end."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import sample

from posebh import data, skeletons
from posebh.data.codecs import HeatmapCodec
from posebh.data.prepare import attach_detections, images_table
from posebh.data.topdown import TopDownDataset
from posebh.data.transforms import box_to_center_scale
from posebh.evaluation.inference import (
    PREDICTION_COLUMNS,
    evaluate_model,
    evaluation_targets,
    gt_box_rows,
    make_heatmap_fn,
    predict_image,
    predict_table,
    target_keys,
)
from posebh.evaluation.postprocess import crop_areas
from posebh.evaluation.protocols import evaluate_dataset, get_protocol

INPUT = (192, 256)
HEATMAP = (48, 64)
SIGMA = 2.0


# ----------------------------------------------------------------------------------------------
# Fixtures and model stand-ins
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def coco_root(samples):
    return sample(samples, "coco")


@pytest.fixture(scope="module")
def coco_gt(samples):
    return data.read("coco", annotations=sample(samples, "coco", "test_coco.json"), split="val", dataset="coco")


@pytest.fixture(scope="module")
def ap10k_gt(samples):
    return data.read("coco", annotations=sample(samples, "ap10k", "test_ap10k.json"), split="val", dataset="ap10k")


@pytest.fixture(scope="module")
def coco_detections(samples, coco_gt):
    dets = data.read("detections", annotations=sample(samples, "coco", "test_coco_det_AP_H_56.json"), split="val")
    return attach_detections(images_table(coco_gt), dets, dataset="coco", split="val")


def crop_key(image: torch.Tensor) -> str:
    return hashlib.sha1(image.contiguous().numpy().tobytes()).hexdigest()


class PerfectModel:
    """Renders the ground-truth Gaussians of each crop it is shown (the crop is recognised by its
    pixels), for the crop and for its mirror image: what an exact model would output.

    Crops and crop keypoints come from TopDownDataset with the protocol's affine; the maps from
    the codec's encoder, so nothing here goes through the decode path under test.
    """

    def __init__(self, table: pd.DataFrame, dataset: str, image_root, input_wh=INPUT, heatmap_wh=HEATMAP):
        proto = get_protocol(dataset)
        name = proto.dataset
        crops = TopDownDataset(
            table, image_roots={name: image_root}, datasets=[name], input_size=input_wh, udp={name: proto.udp}
        )
        codec = HeatmapCodec(input_wh, heatmap_wh, sigma=SIGMA, kind="udp" if proto.udp else "msra")
        flip = skeletons.get(name).flip_index()
        self.maps: dict[str, torch.Tensor] = {}
        self.crop_keypoints = []
        for i in range(len(crops)):
            s = crops[i]
            kp, vis = s["keypoints"].double(), s["visible"]
            self.crop_keypoints.append(kp.numpy())
            self.maps[crop_key(s["image"])] = codec.encode(kp[None], vis[None])[0][0]
            # the array-mirrored crop: x -> W-1-x, and channel j now shows joint flip[j]
            mirrored = kp[flip].clone()
            mirrored[:, 0] = input_wh[0] - 1 - mirrored[:, 0]
            self.maps[crop_key(s["image"].flip(-1))] = codec.encode(mirrored[None], vis[flip][None])[0][0]
        self.codec = codec

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.maps[crop_key(im)] for im in images])


def pooled_fn(k: int, heatmap_wh=HEATMAP):
    """A deterministic image-dependent stand-in: pooled brightness, a different gain per channel."""
    gain = torch.linspace(0.5, 1.5, k)

    def fn(images: torch.Tensor) -> torch.Tensor:
        g = F.adaptive_avg_pool2d(images.mean(1, keepdim=True), (heatmap_wh[1], heatmap_wh[0]))
        return torch.exp(g).expand(-1, k, -1, -1) * gain[None, :, None, None]

    return fn


def keypoints_of(pred: pd.DataFrame) -> np.ndarray:
    return np.stack(pred["keypoints"].to_numpy()).astype(np.float64).reshape(len(pred), -1, 3)


def gt_keypoints(table: pd.DataFrame) -> np.ndarray:
    return np.stack(table["keypoints"].to_numpy()).astype(np.float64).reshape(len(table), -1, 3)


def pixels_per_heatmap_pixel(table: pd.DataFrame, udp: bool, input_wh=INPUT, heatmap_wh=HEATMAP) -> np.ndarray:
    """(N, 2) image pixels per heatmap pixel of each row's crop, computed from the box directly."""
    _, scale = box_to_center_scale(np.stack(table["bbox"].to_numpy()), input_wh[0] / input_wh[1])
    steps = np.array(heatmap_wh, np.float64) - (1.0 if udp else 0.0)
    return scale / steps


# ----------------------------------------------------------------------------------------------
# (a) A perfect model comes back to the ground truth
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flip_test", [None, False])
def test_perfect_model_udp_dark_is_within_half_a_pixel_on_coco(coco_gt, coco_root, flip_test):
    rows = gt_box_rows(coco_gt, "coco")
    model = PerfectModel(rows, "coco", coco_root)
    pred = predict_table(
        model, rows, dataset="coco", image_roots={"coco": coco_root}, input_wh=INPUT, heatmap_wh=HEATMAP,
        flip_test=flip_test, progress=False,
    )  # fmt: skip
    kp, gt = keypoints_of(pred), gt_keypoints(rows)
    labelled = gt[..., 2] > 0
    err = np.abs(kp[..., :2] - gt[..., :2]).max(-1)
    # Far from the heatmap border (window radius 3 sigma, DARK blur radius 5) DARK is exact for a
    # Gaussian; near it the clipped window and the blur's reflected border bias the step.
    hm_xy = np.stack(model.crop_keypoints) / np.asarray(model.codec.stride)
    margin = np.minimum(hm_xy, np.array(HEATMAP) - 1 - hm_xy).min(-1)
    interior = labelled & (margin >= 3 * SIGMA)
    assert interior.sum() >= 0.9 * labelled.sum()
    assert err[interior].max() < 0.5, err[interior].max()
    # Border joints: no worse than the codec's own encode -> decode round trip in the crop, scaled
    # to image pixels (inference adds nothing to the decoder's bias there).
    crop_kp = torch.from_numpy(np.stack(model.crop_keypoints))
    decoded, _ = model.codec.decode(model.codec.encode(crop_kp, torch.ones(crop_kp.shape[:2]))[0])
    roundtrip = (decoded.double() - crop_kp).abs().numpy()
    image_per_crop_px = pixels_per_heatmap_pixel(rows, udp=True) / np.asarray(model.codec.stride)
    bound = (roundtrip * image_per_crop_px[:, None, :]).max(-1) + 0.05
    assert (err <= bound)[labelled].all()
    assert (err[labelled] > 0.5).sum() <= labelled.sum() - interior.sum()
    # scores are the Gaussian peaks (~1), not something else
    assert kp[..., 2][labelled].min() > 0.9
    metrics = evaluate_dataset("coco", coco_gt, pred, split="val")
    assert metrics["AP"] == pytest.approx(1.0)
    assert metrics["AR"] == pytest.approx(1.0)


@pytest.mark.parametrize("flip_test", [None, False])
def test_perfect_model_msra_is_within_the_rounding_on_ap10k(samples, ap10k_gt, flip_test):
    root = sample(samples, "ap10k")
    rows = gt_box_rows(ap10k_gt, "ap10k")
    assert not get_protocol("ap10k").udp
    model = PerfectModel(rows, "ap10k", root)
    pred = predict_table(
        model, rows, dataset="ap10k", image_roots={"ap10k": root}, input_wh=INPUT, heatmap_wh=HEATMAP,
        flip_test=flip_test, progress=False,
    )  # fmt: skip
    kp, gt = keypoints_of(pred), gt_keypoints(rows)
    labelled = gt[..., 2] > 0
    err = np.abs(kp[..., :2] - gt[..., :2])
    per_px = pixels_per_heatmap_pixel(rows, udp=False)
    # MSRA targets sit on the rounded heatmap pixel: |error| <= 1/2 heatmap pixel per axis. With the
    # flip test the shifted mirror map lands 1/4 pixel right of it, so x may be off 1/2 + 1/4.
    bound_x = (0.75 if flip_test is None else 0.5) * per_px[:, 0:1] + 1e-6
    bound_y = 0.5 * per_px[:, 1:2] + 1e-6
    assert (err[..., 0] <= bound_x)[labelled].all()
    assert (err[..., 1] <= bound_y)[labelled].all()
    assert err[labelled].max() > 0.5  # the bound is not vacuous: these are real rounding errors
    metrics = evaluate_dataset("ap10k", ap10k_gt, pred, split="val")
    assert metrics["AP"] == pytest.approx(1.0)


def test_evaluate_model_with_a_perfect_model_gives_ap_1(coco_gt, coco_root):
    rows = gt_box_rows(coco_gt, "coco")
    model = PerfectModel(rows, "coco", coco_root)
    metrics, preds = evaluate_model(
        lambda dataset: model, {"coco.instances": coco_gt, "model_input": coco_gt}, image_roots={"coco": coco_root},
        input_wh=INPUT, heatmap_wh=HEATMAP, datasets=[("coco", "val", "gt")], progress=False,
    )  # fmt: skip
    assert list(metrics) == list(preds) == ["coco"]
    assert metrics["coco"]["AP"] == pytest.approx(1.0)
    # the two persons without labelled joints are not predicted (mmpose's loader skips them)
    # (the same rows given under two keys count once)
    assert len(preds["coco"]) == 12 == int((coco_gt["num_keypoints"] > 0).sum())
    assert metrics["coco"]["num_predictions"] == 12


@pytest.mark.parametrize("dataset", ["coco", "aic"])
def test_decoding_and_back_mapping_follow_the_protocol(dataset):
    """A sub-pixel Gaussian on every channel, decoded as the protocol says and mapped back with
    mmpose's ``transform_preds`` formula (x = c - s/2 + u * s / w, or s / (w - 1) for UDP)."""
    proto = get_protocol(dataset)
    k = skeletons.get(dataset).num_keypoints
    u0, v0 = 20.3, 30.8  # heatmap pixels: 0.3 right of pixel 20, 0.2 above pixel 31
    xs, ys = np.arange(HEATMAP[0]), np.arange(HEATMAP[1])
    g = np.exp(-((xs[None, :] - u0) ** 2 + (ys[:, None] - v0) ** 2) / (2 * SIGMA**2))
    maps = torch.from_numpy(np.broadcast_to(g, (1, k, *g.shape)).copy()).float()
    box = np.array([[100.0, 50.0, 150.0, 200.0]])  # aspect 0.75 already: scale = 1.25 x box
    center, scale = np.array([175.0, 150.0]), np.array([187.5, 250.0])
    image = np.zeros((480, 640, 3), np.uint8)
    kps, _ = predict_image(
        lambda images: maps.expand(len(images), -1, -1, -1), image, box, skeleton=dataset,
        input_wh=INPUT, heatmap_wh=HEATMAP, flip_test=False,
    )  # fmt: skip
    if proto.decoding == "default":  # argmax + a quarter pixel toward the higher neighbour
        u, v, steps = 20 + 0.25, 31 - 0.25, np.array(HEATMAP, np.float64)
        tol = 1e-6
    else:  # DARK recovers the sub-pixel centre of a Gaussian
        u, v, steps = u0, v0, np.array(HEATMAP, np.float64) - 1
        tol = 0.02 * scale.max() / steps.min()
    expected = center - scale / 2 + np.array([u, v]) * scale / steps
    np.testing.assert_allclose(kps[0, :, :2], np.broadcast_to(expected, (k, 2)), rtol=0, atol=tol)
    np.testing.assert_allclose(kps[0, :, 2], g.max(), rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# (b) Flip test
# ----------------------------------------------------------------------------------------------


def mirror_back(heatmaps: torch.Tensor, flip: list[int], shift: bool) -> torch.Tensor:
    """mmpose's flip_back by hand: swap channels, mirror x, and (shift_heatmap) move right by one."""
    out = heatmaps[:, flip].flip(-1).clone()
    if shift:
        out[..., 1:] = out[..., :-1].clone()
    return out


def symmetric_maps(k: int, flip: list[int], shift: bool, seed: int = 0) -> torch.Tensor:
    """Random maps H with mirror_back(H) == H exactly."""
    r = torch.rand((1, k, HEATMAP[1], HEATMAP[0]), generator=torch.Generator().manual_seed(seed)) + 0.1
    if not shift:
        return 0.5 * (r + mirror_back(r, flip, shift=False))
    # with the shift, column c pairs with w - c; columns 0, 1 and w-1 must then be zero
    m = r[:, flip].clone()
    m[..., 1:] = m[..., 1:].flip(-1)  # column c <- column w - c
    h = 0.5 * (r + m)
    h[..., [0, 1, HEATMAP[0] - 1]] = 0.0
    return h


@pytest.mark.parametrize("dataset", ["coco", "aic"])  # UDP without shift; default with shift
def test_flip_test_changes_nothing_for_a_mirror_symmetric_model(coco_gt, coco_root, dataset):
    proto = get_protocol(dataset)
    flip = skeletons.get(dataset).flip_index()
    h = symmetric_maps(len(flip), flip, proto.shift_heatmap)
    assert torch.equal(mirror_back(h, flip, proto.shift_heatmap), h)

    def symmetric(images: torch.Tensor) -> torch.Tensor:
        return h * images.amax(dim=(1, 2, 3))[:, None, None, None]  # mirror-invariant gain

    kw = dict(dataset=dataset, image_roots={"coco": coco_root}, input_wh=INPUT, heatmap_wh=HEATMAP, progress=False)
    with_flip = predict_table(symmetric, coco_gt, flip_test=True, **kw)
    without = predict_table(symmetric, coco_gt, flip_test=False, **kw)
    np.testing.assert_array_equal(keypoints_of(with_flip), keypoints_of(without))


@pytest.mark.parametrize("dataset", ["coco", "aic"])
def test_flip_test_of_an_asymmetric_model_is_the_average(coco_gt, coco_root, dataset):
    proto = get_protocol(dataset)
    flip = skeletons.get(dataset).flip_index()
    r = torch.rand((1, len(flip), HEATMAP[1], HEATMAP[0]), generator=torch.Generator().manual_seed(1))
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def asymmetric(images: torch.Tensor) -> torch.Tensor:
        out = r * images[:, 0, :, : INPUT[0] // 2].mean((1, 2))[:, None, None, None].exp()  # left half only
        calls.append((images.clone(), out.clone()))
        return out

    kw = dict(dataset=dataset, image_roots={"coco": coco_root}, input_wh=INPUT, heatmap_wh=HEATMAP, progress=False)
    with_flip = predict_table(asymmetric, coco_gt, flip_test=True, batch_size=len(coco_gt), **kw)
    assert len(calls) == 2
    (crops, plain), (mirrored_crops, mirrored) = calls
    assert torch.equal(mirrored_crops, crops.flip(-1))  # the second pass saw the mirrored crops
    average = 0.5 * (plain + mirror_back(mirrored, flip, proto.shift_heatmap))
    expected = predict_table(lambda images: average, coco_gt, flip_test=False, batch_size=len(coco_gt), **kw)
    np.testing.assert_allclose(keypoints_of(with_flip), keypoints_of(expected), rtol=0, atol=1e-9)
    no_flip = predict_table(asymmetric, coco_gt, flip_test=False, batch_size=len(coco_gt), **kw)
    assert not np.allclose(keypoints_of(with_flip), keypoints_of(no_flip))


# ----------------------------------------------------------------------------------------------
# (c) One image without a table == the same box through the table
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["coco", "aic"])
def test_predict_image_equals_predict_table(coco_gt, coco_root, dataset):
    import cv2

    row = coco_gt.iloc[[4]].reset_index(drop=True)
    image = cv2.cvtColor(cv2.imread(str(coco_root / row["file_name"].iloc[0])), cv2.COLOR_BGR2RGB)
    h, w = image.shape[:2]
    assert (w, h) == (int(row["width"].iloc[0]), int(row["height"].iloc[0]))
    whole = row.copy()
    whole["bbox"] = [np.array([0.0, 0.0, w, h])]
    k = skeletons.get(dataset).num_keypoints
    fn = pooled_fn(k)
    proto = get_protocol(dataset)
    kw = dict(input_wh=INPUT, heatmap_wh=HEATMAP)

    kps, boxes = predict_image(fn, image, None, skeleton=dataset, udp=proto.udp, decoding=proto.decoding, **kw)
    table = predict_table(fn, whole, dataset=dataset, image_roots={"coco": coco_root}, progress=False, **kw)
    assert kps.shape == (1, k, 3)
    np.testing.assert_array_equal(boxes, [[0.0, 0.0, w, h]])
    np.testing.assert_array_equal(kps, keypoints_of(table))

    # explicit boxes: every person of that image at once, protocol defaults for udp/decoding
    same_image = coco_gt[coco_gt["image_id"] == row["image_id"].iloc[0]].reset_index(drop=True)
    kps, boxes = predict_image(fn, image, np.stack(same_image["bbox"].to_numpy()), skeleton=dataset, **kw)
    table = predict_table(fn, same_image, dataset=dataset, image_roots={"coco": coco_root}, progress=False, **kw)
    np.testing.assert_array_equal(kps, keypoints_of(table))
    np.testing.assert_array_equal(boxes, np.stack(same_image["bbox"].to_numpy()))


def test_predict_image_rejects_a_non_rgb_image():
    with pytest.raises(ValueError, match="uint8"):
        image = np.zeros((10, 10, 3), np.float32)
        predict_image(pooled_fn(17), image, skeleton="coco", input_wh=INPUT, heatmap_wh=HEATMAP)


# ----------------------------------------------------------------------------------------------
# (d) Order, ids and the contract columns
# ----------------------------------------------------------------------------------------------


def test_rows_come_back_in_table_order_with_their_ids(coco_gt, coco_root):
    kw = dict(dataset="coco", image_roots={"coco": coco_root}, input_wh=INPUT, heatmap_wh=HEATMAP, progress=False)
    fn = pooled_fn(17)
    ordered = predict_table(fn, coco_gt, batch_size=4, **kw)
    shuffled_table = coco_gt.sample(frac=1.0, random_state=3)
    shuffled_table.index = np.arange(100, 100 + len(shuffled_table))  # a non-default index
    shuffled = predict_table(fn, shuffled_table, batch_size=3, **kw)

    assert list(shuffled.columns) == list(PREDICTION_COLUMNS)
    np.testing.assert_array_equal(shuffled["instance_id"], shuffled_table["instance_id"])
    np.testing.assert_array_equal(shuffled["image_id"], shuffled_table["image_id"])
    np.testing.assert_array_equal(ordered["instance_id"], coco_gt["instance_id"])
    by_id = ordered.set_index("instance_id")
    np.testing.assert_allclose(
        keypoints_of(shuffled), keypoints_of(by_id.loc[shuffled["instance_id"]].reset_index()), rtol=0, atol=1e-9
    )


def test_contract_columns_on_detection_boxes(coco_detections, coco_root):
    dets = coco_detections.iloc[:20]
    pred = predict_table(
        pooled_fn(17), dets, dataset="coco", image_roots={"coco": coco_root}, input_wh=INPUT,
        heatmap_wh=HEATMAP, progress=False,
    )  # fmt: skip
    kp = keypoints_of(pred)
    assert kp.shape == (20, 17, 3) and np.isfinite(kp).all()
    expected_box_scores = [json.loads(e)["det_score"] for e in dets["extra"]]
    np.testing.assert_array_equal(pred["box_score"], expected_box_scores)
    np.testing.assert_allclose(pred["score"], kp[..., 2].mean(1))
    np.testing.assert_array_equal(np.stack(pred["bbox"].to_numpy()), np.stack(dets["bbox"].to_numpy()))
    np.testing.assert_allclose(pred["area"], crop_areas(np.stack(dets["bbox"].to_numpy()), INPUT))
    assert (pred["dataset"] == "coco").all() and (pred["split"] == "val").all()
    assert (pred["category_id"] == 1).all()
    wider = predict_table(
        pooled_fn(17), dets, dataset="coco", image_roots={"coco": coco_root}, input_wh=INPUT,
        heatmap_wh=HEATMAP, progress=False, padding=1.5,
    )  # fmt: skip
    np.testing.assert_allclose(wider["area"], pred["area"] * (1.5 / 1.25) ** 2)


def test_cross_skeleton_on_another_datasets_images(coco_gt, coco_root):
    """AIC's keypoints on COCO boxes: the rows' dataset only locates the images."""
    pred = predict_table(
        pooled_fn(14), coco_gt, dataset="aic", image_roots={"coco": coco_root}, input_wh=INPUT,
        heatmap_wh=HEATMAP, progress=False,
    )  # fmt: skip
    assert keypoints_of(pred).shape == (len(coco_gt), 14, 3)
    assert (pred["dataset"] == "aic").all()
    np.testing.assert_array_equal(pred["instance_id"], coco_gt["instance_id"])


def test_wrong_heatmap_shape_is_a_clear_error(coco_gt, coco_root):
    with pytest.raises(ValueError, match="expected"):
        predict_table(
            pooled_fn(14), coco_gt, dataset="coco", image_roots={"coco": coco_root}, input_wh=INPUT,
            heatmap_wh=HEATMAP, progress=False,
        )  # fmt: skip


def test_empty_table_gives_an_empty_frame(coco_gt, coco_root):
    pred = predict_table(
        pooled_fn(17), coco_gt.iloc[:0], dataset="coco", image_roots={"coco": coco_root}, input_wh=INPUT,
        heatmap_wh=HEATMAP, progress=False,
    )  # fmt: skip
    assert len(pred) == 0 and list(pred.columns) == list(PREDICTION_COLUMNS)


# ----------------------------------------------------------------------------------------------
# evaluate_model: box sources, test-dev, targets
# ----------------------------------------------------------------------------------------------


def test_gt_box_rows_follow_the_metric(coco_gt):
    rows = gt_box_rows(coco_gt, "coco")
    assert len(rows) == 12 and (rows["num_keypoints"] > 0).all()
    mpii_like = coco_gt.assign(dataset="mpii")  # PCKh pairs every GT row: nothing is skipped
    assert len(gt_box_rows(mpii_like, "mpii")) == len(coco_gt)


def test_evaluate_model_on_detections_test_dev_and_wholebody(samples, coco_gt, coco_detections, coco_root):
    path = sample(samples, "coco_wholebody", "test_coco_wholebody.json")
    wholebody = data.read("coco_wholebody", annotations=path, split="val")
    dets = coco_detections.groupby("image_id").head(3)  # keep it quick: the 3 best boxes per image
    test_dev = dets.assign(split="test-dev")
    tables = {
        "coco.instances": coco_gt,
        "coco_wholebody.instances": wholebody,
        "detection_instances": pd.concat([dets, test_dev]),
    }
    targets = [
        ("coco", "val", "detections"),
        ("coco", "test-dev", "detections"),
        ("coco_wholebody", "val", "detections"),
    ]
    metrics, preds = evaluate_model(
        lambda d: pooled_fn(skeletons.get(d).num_keypoints), tables, image_roots={"coco": coco_root},
        input_wh=INPUT, heatmap_wh=HEATMAP, datasets=targets, progress=False,
    )  # fmt: skip
    assert list(preds) == ["coco/val", "coco/test-dev", "coco_wholebody"]
    assert list(metrics) == ["coco/val", "coco_wholebody"]  # test-dev has no ground truth
    assert len(preds["coco/test-dev"]) == len(dets) and (preds["coco/test-dev"]["split"] == "test-dev").all()
    # COCO-WholeBody val runs on COCO val's person boxes (the same detection file)
    assert keypoints_of(preds["coco_wholebody"]).shape == (len(dets), 133, 3)
    np.testing.assert_array_equal(preds["coco_wholebody"]["instance_id"], dets["instance_id"])
    assert 0.0 <= metrics["coco/val"]["AP"] < 1.0
    assert "wholebody_AP" in metrics["coco_wholebody"]


def test_evaluation_targets_follow_the_protocols(coco_gt, coco_detections, ap10k_gt):
    tables = {
        "a": pd.concat([coco_gt, coco_gt.assign(split="train")]),
        "b": coco_detections,
        "c": pd.concat([ap10k_gt, ap10k_gt.assign(split="test")]),
    }
    targets = evaluation_targets(tables)
    assert targets == [
        ("coco", "val", "detections"),
        ("ap10k", "test", "gt"),
        ("ap10k", "val", "gt"),
        ("coco_wholebody", "val", "detections"),
    ]
    assert target_keys(targets) == ["coco", "ap10k/test", "ap10k/val", "coco_wholebody"]


# ----------------------------------------------------------------------------------------------
# (e) A tiny real PoseBH end to end
# ----------------------------------------------------------------------------------------------


def test_tiny_posebh_end_to_end(coco_gt, coco_root):
    import cv2

    from posebh.models.posebh import build_model

    torch.manual_seed(0)
    model = build_model({"size": "tiny"})
    model.train()
    cfg = model.config
    kw = dict(image_roots={"coco": coco_root}, input_wh=cfg.input_wh, heatmap_wh=cfg.heatmap_wh, progress=False)
    fn = make_heatmap_fn(model, "coco")
    assert not model.training
    rows = coco_gt.iloc[::2]  # one of two rows keeps it quick on a CPU
    pred = predict_table(fn, rows, dataset="coco", batch_size=4, **kw)
    kp = keypoints_of(pred)
    assert kp.shape == (len(rows), 17, 3) and np.isfinite(kp).all()
    np.testing.assert_array_equal(pred["instance_id"], rows["instance_id"])

    # cross-skeleton through the prototypes, AP-10K's expert, on one whole image
    image = cv2.cvtColor(cv2.imread(str(coco_root / coco_gt["file_name"].iloc[0])), cv2.COLOR_BGR2RGB)
    proto_fn = make_heatmap_fn(model, "aic", expert="ap10k", prototypes=True)
    kps, boxes = predict_image(proto_fn, image, None, skeleton="aic", input_wh=cfg.input_wh, heatmap_wh=cfg.heatmap_wh)
    assert kps.shape == (1, 14, 3) and np.isfinite(kps).all()
    assert (kps[..., 2] >= 0).all() and (kps[..., 2] <= 1.0 + 1e-5).all()  # |cos| scores
