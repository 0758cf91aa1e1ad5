"""SAR codec: the coordinate convention, encode -> ideal outputs -> decode round trips, hand-made
decodes, the flip test in coordinate space, and the SAR branch of top-down inference (a perfect
SAR model on the real samples comes back to the ground truth)."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import sample

from posebh import data, skeletons
from posebh.data.sar_codec import (
    SARCodec,
    SAROutput,
    cell_coordinates,
    cell_locations,
    flip_coordinates,
    flip_scores,
    flip_test_average_coordinates,
)
from posebh.data.topdown import TopDownDataset
from posebh.evaluation.inference import Decoder, _decode, predict_table
from posebh.evaluation.protocols import evaluate_dataset, get_protocol

INPUT = (192, 256)
GRID = (48, 64)


def test_normalised_convention_by_hand():
    codec = SARCodec(INPUT, GRID)
    assert codec.stride == (4.0, 4.0)
    kp = torch.tensor([[[96.0, 32.0], [0.0, 255.0]]])
    t, w = codec.encode(kp, torch.ones(1, 2))
    # n = x / input: 96/192 = 0.5, 32/256 = 0.125; 255/256
    torch.testing.assert_close(t, torch.tensor([[[0.5, 0.125], [0.0, 255 / 256]]]))
    assert w.tolist() == [[1.0, 1.0]]
    loc = cell_locations((4, 2))  # (2, h*w), row-major
    assert loc[:, 5].tolist() == [0.25, 0.5]  # cell x=1, y=1 -> (1/4, 1/2)
    offsets = torch.zeros(1, 1, 2, 2, 4)
    offsets[0, 0, :, 1, 1] = torch.tensor([0.05, -0.1])
    coords = cell_coordinates(offsets)
    assert coords[0, 0, :, 5].tolist() == pytest.approx([0.25 - 0.05, 0.5 + 0.1])  # location - offset


def test_encode_weights_follow_the_heatmap_window_rule():
    codec = SARCodec(INPUT, GRID, margin=6)
    kp = torch.tensor([[[10.0, 10.0], [10.0, 10.0], [float("nan"), 1.0], [-25.9, 10.0], [-26.1, 10.0],
                        [192 + 21.9, 10.0], [192 + 22.1, 10.0]]])
    vis = torch.tensor([[1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0]])
    t, w = codec.encode(kp, vis)
    # grid x = x / 4; rounded centre c within [-6, 47 + 6]: -25.9/4 = -6.475 -> -6 kept, -26.1/4 -> -7 dropped;
    # (192+21.9)/4 = 53.475 -> 53 kept, (192+22.1)/4 = 53.525 -> 54 dropped
    assert w.tolist() == [[1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0]]
    assert torch.isfinite(t).all() and t[0, 2].tolist() == [0.0, 0.0]


@pytest.mark.parametrize("input_wh,grid_wh", [(INPUT, GRID), ((96, 128), (24, 32)), ((192, 256), (12, 16))])
def test_round_trip_from_ideal_outputs_is_within_a_tenth_of_a_pixel(input_wh, grid_wh):
    g = torch.Generator().manual_seed(0)
    codec = SARCodec(input_wh, grid_wh)
    kp = torch.rand(5, 17, 2, generator=g) * (torch.tensor(input_wh, dtype=torch.float32) - 1)
    t, w = codec.encode(kp, torch.ones(5, 17))
    ideal = codec.ideal_outputs(kp)
    xy, score = codec.decode(ideal.logits, ideal.offsets)
    assert (xy - kp).abs().max() < 0.1
    xy_w, _ = codec.decode(ideal.logits, ideal.offsets, mode="weighted")  # every cell is exact here
    assert (xy_w - kp).abs().max() < 0.1
    assert score.min() > 0.99  # sigmoid(8)
    # the ideal offsets reproduce the encoded target at every cell
    coords = cell_coordinates(ideal.offsets)
    assert (coords - t[..., None]).abs().max() < 1e-6


def test_decode_by_hand_on_a_2x2_grid():
    codec = SARCodec((8, 8), (2, 2))  # cells at normalised (0,0), (.5,0), (0,.5), (.5,.5); input = 8 * n
    logits = torch.tensor([[[[0.0, 2.0], [-1.0, 1.0]]]])
    offsets = torch.zeros(1, 1, 2, 2, 2)
    offsets[0, 0, 0] = torch.tensor([[0.0, -0.125], [0.0, 0.25]])  # x offsets
    offsets[0, 0, 1] = torch.tensor([[0.0, 0.0625], [0.125, 0.0]])  # y offsets
    xy, s = codec.decode(logits, offsets)
    # argmax: cell (1, 0) at (0.5, 0): regresses (0.5 + 0.125, 0 - 0.0625) -> (5.0, -0.5) px
    assert xy[0, 0].tolist() == pytest.approx([5.0, -0.5])
    sig = [1 / (1 + math.exp(-v)) for v in (0.0, 2.0, -1.0, 1.0)]
    assert s.item() == pytest.approx(sig[1], abs=1e-6)
    _, p = codec.decode(logits, offsets, score="normalized")
    assert p.item() == pytest.approx(sig[1] / sum(sig), abs=1e-6)
    # weighted: sum_i p_i (loc_i - off_i)
    cells = [(0.0, 0.0), (0.625, -0.0625), (0.0, 0.375), (0.25, 0.5)]
    ex = sum(si / sum(sig) * c[0] for si, c in zip(sig, cells)) * 8
    ey = sum(si / sum(sig) * c[1] for si, c in zip(sig, cells)) * 8
    xw, _ = codec.decode(logits, offsets, mode="weighted")
    assert xw[0, 0].tolist() == pytest.approx([ex, ey], abs=1e-5)


def test_decode_rejects_mismatched_shapes():
    codec = SARCodec(INPUT, GRID)
    with pytest.raises(ValueError, match="48x64"):
        codec.decode(torch.zeros(1, 2, 32, 24), torch.zeros(1, 2, 2, 32, 24))
    with pytest.raises(ValueError, match="offsets"):
        codec.decode(torch.zeros(1, 2, 64, 48), torch.zeros(1, 2, 64, 48))


def test_flip_coordinates_by_hand():
    kp = torch.tensor([[[10.0, 5.0], [20.0, 6.0], [30.0, 7.0]]])
    out = flip_coordinates(kp, [0, 2, 1], input_width=192)
    assert out.tolist() == [[[181.0, 5.0], [161.0, 7.0], [171.0, 6.0]]]
    torch.testing.assert_close(flip_scores(torch.tensor([[0.1, 0.2, 0.3]]), [0, 2, 1]), torch.tensor([[0.1, 0.3, 0.2]]))
    xy, s = flip_test_average_coordinates(kp, torch.ones(1, 3), out, torch.zeros(1, 3))
    assert xy[0, 0].tolist() == [95.5, 5.0] and s.tolist() == [[0.5, 0.5, 0.5]]


def test_mirroring_a_crop_is_x_to_w_minus_1_minus_x_at_stride_4():
    """The reference's empirical 1 - n - 1/(4w) is exactly W - 1 - x in input pixels at stride 4."""
    codec = SARCodec(INPUT, GRID)
    x = torch.tensor([0.0, 37.25, 191.0])
    n = x / INPUT[0]
    ref = (1 - n - 1 / (4 * GRID[0])) * INPUT[0]
    torch.testing.assert_close(ref, INPUT[0] - 1 - x)
    assert codec.stride[0] == 4.0


# ----------------------------------------------------------------------------------------------
# The SAR branch of inference
# ----------------------------------------------------------------------------------------------


def _dots_model(codec: SARCodec, flip_index: list[int]):
    """A mirror-honest stand-in: finds the bright column of each half of channel 0 and calls the
    one in the image's left half the person's right (a person facing the camera); every right_*
    joint sits at that column, every left_* joint at the other, centre joints midway."""
    k = len(flip_index)
    side = torch.tensor([0 if flip_index[j] == j else (1 if j < flip_index[j] else -1) for j in range(k)])
    row = torch.tensor([7.0 * min(j, flip_index[j]) + 10.0 for j in range(k)])  # a pair shares its row

    def fn(images: torch.Tensor) -> SAROutput:
        w = images.shape[-1]
        col = images[:, 0].sum(1)  # (B, W)
        xl = col[:, : w // 2].argmax(1).float()
        xr = (col[:, w // 2 :].argmax(1) + w // 2).float()
        x = torch.where(side == 0, 0.5 * (xl + xr)[:, None], torch.where(side > 0, xr[:, None], xl[:, None]))
        y = row[None].expand_as(x)
        return codec.ideal_outputs(torch.stack([x, y], -1))

    return fn


def test_flip_test_on_a_symmetric_input_changes_nothing():
    name = "coco"
    flip = skeletons.get(name).flip_index()
    codec = SARCodec(INPUT, GRID)
    images = torch.zeros(2, 3, INPUT[1], INPUT[0])
    for b, c in enumerate((40, 71)):  # dots at c and W - 1 - c: the crop is its own mirror image
        images[b, 0, :, c] = 1.0
        images[b, 0, :, INPUT[0] - 1 - c] = 1.0
    assert torch.equal(images, images.flip(-1))
    fn = _dots_model(codec, flip)
    decoder = Decoder.for_dataset(name)
    hm_codec = decoder.codec(INPUT, GRID)
    with_flip = _decode(fn, images, decoder, flip, hm_codec)
    without = _decode(fn, images, Decoder.for_dataset(name, flip_test=False), flip, hm_codec)
    assert (with_flip[0] - without[0]).abs().max() < 1e-3
    torch.testing.assert_close(with_flip[1], without[1])
    # and the decode recovers the dots: right eye (2) at the left dot, left eye (1) at the right one
    assert with_flip[0][0, 2, 0].item() == pytest.approx(40, abs=1e-3)
    assert with_flip[0][0, 1, 0].item() == pytest.approx(INPUT[0] - 1 - 40, abs=1e-3)


def test_flip_test_of_an_asymmetric_sar_model_is_the_coordinate_average():
    name = "aic"
    flip = skeletons.get(name).flip_index()
    codec = SARCodec(INPUT, GRID)
    g = torch.Generator().manual_seed(3)
    a = torch.rand(1, len(flip), 2, generator=g) * 150
    b = torch.rand(1, len(flip), 2, generator=g) * 150

    def fn(images):  # pose a on the crop, pose b on its mirror (told apart by a marker pixel)
        mirrored = images[:, 0, 0, -1] > 0
        return codec.ideal_outputs(torch.where(mirrored[:, None, None], b, a).expand(len(images), -1, -1))

    images = torch.zeros(1, 3, INPUT[1], INPUT[0])
    images[0, 0, 0, 0] = 1.0
    xy, _ = _decode(fn, images, Decoder.for_dataset(name), flip, Decoder.for_dataset(name).codec(INPUT, GRID))
    back = b[:, flip].clone()
    back[..., 0] = INPUT[0] - 1 - back[..., 0]
    torch.testing.assert_close(xy, 0.5 * (a + back), atol=1e-3, rtol=0)


def _key(image: torch.Tensor) -> str:
    return hashlib.sha1(image.contiguous().numpy().tobytes()).hexdigest()


class PerfectSAR:
    """Ideal SAR outputs of each crop's ground truth, and of the mirrored crop's mirrored pose
    (recognised by the crop's pixels); made by the encoder side only."""

    def __init__(self, table: pd.DataFrame, dataset: str, image_root):
        proto = get_protocol(dataset)
        crops = TopDownDataset(table, image_roots={dataset: image_root}, datasets=[dataset], input_size=INPUT,
                               udp={dataset: proto.udp})
        codec = SARCodec(INPUT, GRID)
        flip = skeletons.get(dataset).flip_index()
        self.out: dict[str, SAROutput] = {}
        for i in range(len(crops)):
            s = crops[i]
            kp, vis = s["keypoints"].double(), s["visible"]
            self.out[_key(s["image"])] = codec.ideal_outputs(kp[None].float(), vis[None])
            m = kp[flip].clone()
            m[:, 0] = INPUT[0] - 1 - m[:, 0]
            self.out[_key(s["image"].flip(-1))] = codec.ideal_outputs(m[None].float(), vis[flip][None])

    def __call__(self, images: torch.Tensor) -> SAROutput:
        outs = [self.out[_key(im)] for im in images]
        return SAROutput(torch.cat([o.logits for o in outs]), torch.cat([o.offsets for o in outs]))


@pytest.mark.parametrize("flip_test", [True, False])
def test_perfect_sar_model_recovers_the_ground_truth_on_coco(samples, flip_test):
    root = sample(samples, "coco")
    gt = data.read("coco", annotations=sample(samples, "coco", "test_coco.json"), split="val", dataset="coco")
    model = PerfectSAR(gt, "coco", root)
    pred = predict_table(model, gt, dataset="coco", image_roots={"coco": root}, input_wh=INPUT, heatmap_wh=GRID,
                         flip_test=flip_test, progress=False)
    kp = np.stack(pred["keypoints"].to_numpy()).reshape(len(pred), -1, 3)
    truth = np.stack(gt["keypoints"].to_numpy()).astype(np.float64).reshape(len(gt), -1, 3)
    vis = truth[..., 2] > 0
    assert np.abs(kp[..., :2] - truth[..., :2])[vis].max() < 0.05
    metrics = evaluate_dataset("coco", gt, pred)
    assert metrics["AP"] == pytest.approx(1.0)
