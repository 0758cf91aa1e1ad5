"""``posebh predict`` on a real COCO photo with tiny random models: files, formats, cross-skeleton
and prototype modes, every checkpoint kind, and the one-line errors of the CLI."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import perturbed_model, sample

from posebh import skeletons
from posebh.cli import cli
from posebh.evaluation.inference import make_heatmap_fn, predict_image
from posebh.evaluation.protocols import get_protocol
from posebh.models.checkpoints import export_official, save_model
from posebh.models.export import PROTOTYPES_FILE, save_split
from posebh.predict import DEFAULT_MIN_SCORE, PREDICT_SKELETONS, PredictError, detection_boxes, parse_boxes, predict

IMAGE = ("coco", "000000000785.jpg")
IMAGE_ID = 785


def _perturbed(datasets, seed=0):
    return perturbed_model(datasets, seed)


@pytest.fixture(scope="module")
def image(samples):
    return sample(samples, *IMAGE)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """The whole model, its split folder, the official layout and an InterHand transfer model."""
    root = tmp_path_factory.mktemp("ckpts")
    model = _perturbed(skeletons.PAPER_MDT_DATASETS)
    out = {"model": model, "whole": save_model(root / "posebh_tiny.pt", model)}
    split = save_split(root / "split", model)
    out["split_coco"], out["split_dir"] = split["coco"], root / "split"
    out["official"] = root / "vitpose_plus_tiny.pth"
    torch.save({"meta": {}, "state_dict": export_official(model)}, out["official"])
    out["interhand"] = save_model(root / "interhand_transfer.pt", _perturbed(("interhand",), seed=4))
    return out


def _valid_outputs(result, image_path, skeleton, n):
    k = skeletons.get(skeleton).num_keypoints
    h, w = cv2.imread(str(image_path)).shape[:2]
    drawn = cv2.imread(result["out_image"])
    assert drawn is not None and drawn.shape == (h, w, 3)
    results = json.loads(open(result["out_json"]).read())
    assert isinstance(results, list) and len(results) == n == result["instances"]
    for r in results:
        assert set(r) == {"image_id", "category_id", "keypoints", "score", "bbox"}
        assert r["image_id"] == IMAGE_ID and isinstance(r["category_id"], int)
        assert len(r["keypoints"]) == 3 * k and np.isfinite(r["keypoints"]).all()
        assert np.isfinite(r["score"]) and 0 <= r["score"] <= 1 and len(r["bbox"]) == 4
    assert result["keypoints"].shape == (n, k, 3)
    return results, drawn


def test_predict_writes_image_and_coco_results(ckpts, image, tmp_path):
    out = tmp_path / "pred.png"
    result = predict(image, checkpoint=ckpts["whole"], skeleton="coco", out_image=out, out_json=tmp_path / "p.json")
    results, drawn = _valid_outputs(result, image, "coco", 1)
    h, w = drawn.shape[:2]
    assert results[0]["bbox"] == [0.0, 0.0, float(w), float(h)]  # no boxes: the whole image
    assert not np.array_equal(drawn, cv2.imread(str(image)))  # something was drawn
    assert result["mode"] == "head" and result["expert"] == "coco" and result["checkpoint_kind"] == "posebh"
    # the one inference path: predict_image with the COCO protocol's decoding gives the same keypoints
    proto = get_protocol("coco")
    rgb = cv2.imread(str(image))[:, :, ::-1].copy()
    model = ckpts["model"]
    kp, _ = predict_image(make_heatmap_fn(model, "coco"), rgb, None, skeleton="coco",
                          input_wh=model.config.input_wh, heatmap_wh=model.config.heatmap_wh,
                          udp=proto.udp, decoding=proto.decoding)
    assert np.allclose(result["keypoints"], kp, atol=1e-6)


def test_cross_skeleton_animal_keypoints_on_a_person_photo(ckpts, image, tmp_path):
    runner = CliRunner()
    out = tmp_path / "animal.png"
    res = runner.invoke(cli, ["predict", str(image), "--checkpoint", str(ckpts["whole"]), "--skeleton", "ap10k",
                              "--boxes", "180,40,320,360", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "1 instance(s) of ap10k keypoints (ap10k expert + head)" in res.output
    results = json.loads(out.with_suffix(".json").read_text())
    assert len(results) == 1 and len(results[0]["keypoints"]) == 3 * 17
    assert results[0]["bbox"] == [180.0, 40.0, 320.0, 360.0]
    assert cv2.imread(str(out)) is not None


def test_prototype_mode_differs_from_the_head(ckpts, image, tmp_path):
    head = predict(image, checkpoint=ckpts["whole"], skeleton="mpii", out_image=tmp_path / "h.png",
                   out_json=tmp_path / "h.json")
    proto = predict(image, checkpoint=ckpts["whole"], skeleton="mpii", prototypes=True,
                    out_image=tmp_path / "p.png", out_json=tmp_path / "p.json")
    _valid_outputs(proto, image, "mpii", 1)
    assert proto["mode"] == "prototypes"
    assert not np.allclose(head["keypoints"], proto["keypoints"])
    # prototype scores are |cos| values, clamped into (0, 1)
    assert ((proto["keypoints"][..., 2] > 0) & (proto["keypoints"][..., 2] < 1)).all()


def test_several_boxes_and_detections(ckpts, image, tmp_path):
    boxes = parse_boxes(["100,50,300,350", "10,10,50,50;20,20,40,60"])
    assert boxes == [[100, 50, 300, 350], [10, 10, 50, 50], [20, 20, 40, 60]]
    result = predict(image, checkpoint=ckpts["whole"], skeleton="aic", boxes=boxes,
                     out_image=tmp_path / "b.png", out_json=tmp_path / "b.json")
    results, _ = _valid_outputs(result, image, "aic", 3)
    assert [r["bbox"] for r in results] == [[float(v) for v in b] for b in boxes]

    det = tmp_path / "det.json"
    det.write_text(json.dumps([
        {"image_id": IMAGE_ID, "category_id": 1, "bbox": [150, 30, 350, 370], "score": 0.9},
        {"image_id": IMAGE_ID, "category_id": 1, "bbox": [0, 0, 20, 20], "score": DEFAULT_MIN_SCORE / 2},
        {"image_id": 999, "category_id": 1, "bbox": [0, 0, 100, 100], "score": 0.99},
    ]))
    result = predict(image, checkpoint=ckpts["whole"], skeleton="coco", detections=det,
                     out_image=tmp_path / "d.png", out_json=tmp_path / "d.json")
    results, _ = _valid_outputs(result, image, "coco", 1)
    assert results[0]["bbox"] == [150.0, 30.0, 350.0, 370.0]
    assert results[0]["score"] <= 0.9  # box score x mean keypoint score
    # no detection for this image id: nothing predicted, files still written
    result = predict(image, checkpoint=ckpts["whole"], skeleton="coco", detections=det, image_id=12345,
                     out_image=tmp_path / "e.png", out_json=tmp_path / "e.json")
    assert result["instances"] == 0 and json.loads((tmp_path / "e.json").read_text()) == []


@pytest.mark.parametrize("kind", ["split_coco", "official"])
def test_other_checkpoint_kinds_agree_with_the_whole_model(ckpts, image, tmp_path, kind):
    whole = predict(image, checkpoint=ckpts["whole"], skeleton="coco")
    other = predict(image, checkpoint=ckpts[kind], skeleton="coco", out_image=tmp_path / "o.png",
                    out_json=tmp_path / "o.json")
    _valid_outputs(other, image, "coco", 1)
    assert np.allclose(whole["keypoints"], other["keypoints"], atol=1e-4)


def test_split_file_with_prototypes_queries_any_skeleton(ckpts, image, tmp_path):
    assert (ckpts["split_dir"] / PROTOTYPES_FILE).is_file()
    res = predict(image, checkpoint=ckpts["split_coco"], skeleton="ap10k", prototypes=True,
                  out_image=tmp_path / "s.png", out_json=tmp_path / "s.json")
    _valid_outputs(res, image, "ap10k", 1)
    assert res["expert"] == "coco"
    whole = predict(image, checkpoint=ckpts["whole"], skeleton="ap10k", prototypes=True, expert="coco")
    assert np.allclose(res["keypoints"], whole["keypoints"], atol=1e-4)


def test_transfer_checkpoint_predicts_interhand(ckpts, image, tmp_path):
    res = predict(image, checkpoint=ckpts["interhand"], skeleton="interhand", boxes=[[250, 150, 80, 80]],
                  out_image=tmp_path / "hand.png", out_json=tmp_path / "hand.json")
    _valid_outputs(res, image, "interhand", 1)


# ----------------------------------------------------------------------------------------------
# CLI errors: exit code != 0, one line, no traceback
# ----------------------------------------------------------------------------------------------


def _fails(args, *fragments):
    res = CliRunner().invoke(cli, ["predict", *args])
    assert res.exit_code != 0, res.output
    assert isinstance(res.exception, SystemExit), res.exception  # handled, not crashed
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in res.output, res.output
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


def test_cli_errors(ckpts, image, tmp_path):
    whole, split = str(ckpts["whole"]), str(ckpts["split_coco"])
    _fails([str(tmp_path / "nope.jpg"), "-c", whole, "-s", "coco"], "nope.jpg: no such image file")
    _fails([str(image), "-c", str(tmp_path / "nope.pt"), "-s", "coco"], "nope.pt: no such checkpoint file")
    line = _fails([str(image), "-c", whole, "-s", "giraffe"], "unknown skeleton 'giraffe'; known:")
    assert all(s in line for s in PREDICT_SKELETONS)
    _fails([str(image), "-c", split, "-s", "ap10k"], "no ap10k keypoints", "heads predict: coco", "ap10k split file")
    _fails([str(image), "-c", whole, "-s", "interhand"], "no interhand keypoints", "transfer checkpoint")
    _fails([str(image), "-c", whole, "-s", "3dpw", "--out", str(tmp_path / "x.png")], "transfer checkpoint")
    _fails([str(image), "-c", whole, "-s", "coco", "--boxes", "1,2,3"], "bad box '1,2,3'")
    _fails([str(image), "-c", str(ckpts["split_dir"] / PROTOTYPES_FILE), "-s", "coco"], "prototypes file")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(300))
    _fails([str(image), "-c", str(junk), "-s", "coco"], "junk.pt: not a readable PyTorch checkpoint")
    not_image = tmp_path / "text.jpg"
    not_image.write_text("hello")
    _fails([str(not_image), "-c", whole, "-s", "coco"], "text.jpg: not a readable image")
    _fails([str(image), "-c", whole, "-s", "coco", "--detections", str(junk)], "junk.pt")
    renamed = tmp_path / "photo.jpg"
    renamed.write_bytes(image.read_bytes())
    det = tmp_path / "det.json"
    det.write_text("[]")
    _fails([str(renamed), "-c", whole, "-s", "coco", "--detections", str(det)], "--image-id")
    assert not any(p.suffix == ".png" for p in tmp_path.iterdir())  # no output for a failed run


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def test_checkpoint_with_code_is_refused(image, tmp_path):
    marker = tmp_path / "side_effect"
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "x": _Payload(marker)}, evil)
    _fails([str(image), "-c", str(evil), "-s", "coco"], "evil.pth: refused", "os.makedirs")
    assert not marker.exists()


def test_predict_api_errors(ckpts, image):
    with pytest.raises(PredictError, match="not both"):
        predict(image, checkpoint=ckpts["whole"], skeleton="coco", boxes=[[0, 0, 5, 5]], detections="d.json")
    with pytest.raises(PredictError, match="--expert needs the whole model"):
        predict(image, checkpoint=ckpts["split_coco"], skeleton="coco", expert="aic")
    with pytest.raises(PredictError, match="width and height must be positive"):
        parse_boxes("1,2,0,5")


def test_detection_boxes_refuse_a_malformed_box_of_the_image(tmp_path):
    """A flagged box on another image does not matter; one on the image asked for is an error, not a
    box silently left out or predicted on."""
    det = tmp_path / "det.json"
    det.write_text(json.dumps([
        {"image_id": 5, "category_id": 1, "bbox": [10, 10, 50, 80], "score": 0.9},
        {"image_id": 6, "category_id": 1, "bbox": [10, 10, 0, 80], "score": 0.9},
    ]))
    boxes, scores, cats = detection_boxes(det, 5)
    assert boxes.tolist() == [[10, 10, 50, 80]] and scores.tolist() == [0.9] and cats.tolist() == [1]
    with pytest.raises(PredictError, match=r"det\.json: 1 detection\(s\) of image 6 are malformed: bbox width or height"):
        detection_boxes(det, 6)
