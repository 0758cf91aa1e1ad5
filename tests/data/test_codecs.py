from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import correlate1d

from posebh import skeletons
from posebh.data.codecs import HeatmapCodec, flip_back, flip_test_average, opencv_gaussian_sigma, render_reference

INPUT, HEATMAP = (192, 256), (48, 64)


def _codec(kind, **kw):
    return HeatmapCodec(INPUT, HEATMAP, sigma=2.0, kind=kind, **kw)


def _random_keypoints(n, k, seed, low=-40.0, high=None):
    g = torch.Generator().manual_seed(seed)
    high = high if high is not None else torch.tensor([INPUT[0] + 40.0, INPUT[1] + 40.0])
    return torch.rand(n, k, 2, generator=g) * (high - low) + low


def test_strides():
    assert _codec("msra").stride == (4.0, 4.0)
    assert _codec("udp").stride == (191 / 47, 255 / 63)
    assert _codec("msra").refine == "shift" and _codec("udp").refine == "dark"
    assert opencv_gaussian_sigma(11) == pytest.approx(2.0)


@pytest.mark.parametrize("kind", ["msra", "udp"])
def test_encode_equals_per_joint_reference(kind):
    codec = _codec(kind)
    kp = _random_keypoints(24, 17, seed=0)
    vis = (torch.rand(24, 17, generator=torch.Generator().manual_seed(1)) * 3).floor().clamp(max=1)
    vis[0, :5] = torch.tensor([0.3, 0.7, 1.0, 0.0, 0.5])  # fractional weights pass through
    kp[1, 0] = float("nan")
    hm, w = codec.encode(kp, vis)
    ref_hm, ref_w = render_reference(kp.numpy(), vis.numpy(), codec)
    assert hm.shape == (24, 17, HEATMAP[1], HEATMAP[0]) and hm.dtype == torch.float32
    np.testing.assert_allclose(hm.numpy(), ref_hm, atol=1e-5)
    np.testing.assert_array_equal(w.numpy(), ref_w)
    assert w[1, 0] == 0 and hm[1, 0].abs().sum() == 0
    buffer = torch.full_like(hm, 7.0)
    again, _ = codec.encode(kp, vis, out=buffer)
    assert again.data_ptr() == buffer.data_ptr()
    torch.testing.assert_close(again, hm)


def test_msra_peak_location_and_value():
    codec = _codec("msra")
    kp = torch.tensor([[[40.0, 100.0], [41.9, 98.1]]])  # 41.9/4 = 10.475 -> 10, 98.1/4 = 24.525 -> 25
    hm, w = codec.encode(kp, torch.ones(1, 2))
    assert hm[0, 0, 25, 10] == 1.0 and hm[0, 0].max() == 1.0
    assert hm[0, 1, 25, 10] == 1.0
    assert hm[0, 0, 25, 11].item() == pytest.approx(math.exp(-1 / 8))
    assert hm[0, 0, 25, 16].item() == pytest.approx(math.exp(-36 / 8)) and hm[0, 0, 25, 17] == 0  # window edge


def test_udp_peak_is_sub_pixel():
    codec = _codec("udp")
    u = torch.tensor([10.3, 20.6])
    hm, _ = codec.encode(codec.to_input(u)[None, None], torch.ones(1, 1))
    assert hm[0, 0].argmax().item() == 21 * HEATMAP[0] + 10
    expected = math.exp(-(0.3**2 + 0.4**2) / 8)
    assert hm[0, 0, 21, 10].item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("kind", ["msra", "udp"])
def test_window_touching_the_map_decides_the_weight(kind):
    codec = _codec(kind)
    sx, sy = codec.stride
    r = codec.radius
    y = 30 * sy
    kp = torch.tensor([[[-r * sx, y], [-(r + 1) * sx, y], [(HEATMAP[0] - 1 + r) * sx, y], [(HEATMAP[0] + r) * sx, y]]])
    hm, w = codec.encode(kp, torch.ones(1, 4))
    assert w.tolist() == [[1.0, 0.0, 1.0, 0.0]]
    assert hm[0, 0, 30, 0] > 0 and hm[0, 2, 30, -1] > 0
    assert hm[0, 1].sum() == 0 and hm[0, 3].sum() == 0
    hm, w = codec.encode(kp, torch.zeros(1, 4))
    assert w.sum() == 0 and hm.sum() == 0


def test_udp_dark_round_trip_sub_pixel():
    codec = _codec("udp")
    margin = 8 * torch.tensor(codec.stride)
    high = torch.tensor(INPUT, dtype=torch.float32) - 1 - margin
    kp = torch.rand(64, 32, 2, generator=torch.Generator().manual_seed(2)) * (high - margin) + margin
    hm, _ = codec.encode(kp, torch.ones(64, 32))
    dec, scores = codec.decode(hm)
    err = (dec - kp).abs()
    assert err.max() < 0.1
    assert (scores > 0.9).all() and (scores <= 1).all()
    plain, _ = codec.decode(hm, refine="none")
    assert (plain - kp).abs().max() > 1.0  # the refinement is doing the work


def test_msra_shift_round_trip_bound():
    codec = _codec("msra")
    kp = _random_keypoints(32, 17, seed=3, low=30.0, high=torch.tensor([150.0, 210.0]))
    hm, _ = codec.encode(kp, torch.ones(32, 17))
    dec, scores = codec.decode(hm)
    np.testing.assert_array_equal(dec.numpy(), (torch.floor(kp / 4 + 0.5) * 4).numpy())  # symmetric peak: no shift
    assert (dec - kp).abs().max() <= 2.0  # stride / 2
    assert (scores == 1).all()


def test_quarter_shift_toward_higher_neighbour():
    """A Gaussian drawn at a sub-pixel location: the step is 0.25 toward it (mmpose 0.x rule)."""
    h, w = HEATMAP[1], HEATMAP[0]
    u = np.array([[10.3, 20.9], [30.6, 5.2], [1.3, 30.0], [20.0, 40.0]])
    ys, xs = np.mgrid[0:h, 0:w]
    maps = np.stack([np.exp(-((xs - a) ** 2 + (ys - b) ** 2) / 8) for a, b in u])[None].astype(np.float32)
    dec, _ = _codec("msra").decode(torch.from_numpy(maps))
    expected = []
    for a, b in u:
        px, py = round(a), round(b)
        if 1 < px < w - 1 and 1 < py < h - 1:
            expected.append([px + 0.25 * np.sign(a - px), py + 0.25 * np.sign(b - py)])
        else:
            expected.append([px, py])
    np.testing.assert_allclose(dec[0].numpy() / 4, expected)
    assert expected[2] == [1, 30]  # x = 1 is not shifted in mmpose 0.x


def _np_newton_step(blurred: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """DARK-UDP's step from a blurred map, in float64 from the definition: clip, log, edge-pad,
    central differences at (x0, y0), one Newton step with the eps-regularised Hessian."""
    lg = np.pad(np.log(np.clip(blurred, 0.001, 50)), 1, mode="edge")
    f = lambda dx, dy: lg[y0 + 1 + dy, x0 + 1 + dx]  # noqa: E731
    grad = np.array([(f(1, 0) - f(-1, 0)) / 2, (f(0, 1) - f(0, -1)) / 2])
    dxy = (f(1, 1) - f(1, 0) - f(0, 1) + f(0, 0) - f(-1, 0) - f(0, -1) + f(-1, -1) + f(0, 0)) / 2  # noqa
    hess = np.array([[f(1, 0) - 2 * f(0, 0) + f(-1, 0), dxy], [dxy, f(0, 1) - 2 * f(0, 0) + f(0, -1)]])
    return np.linalg.solve(hess + np.finfo(np.float32).eps * np.eye(2), grad)


def test_dark_refinement_independent_reference():
    """Compare with a float64 numpy DARK-UDP step written from the definition."""
    codec = _codec("udp")
    rng = np.random.default_rng(4)
    maps = rng.uniform(0, 0.2, size=(2, 3, HEATMAP[1], HEATMAP[0])).astype(np.float32)
    ys, xs = np.mgrid[0 : HEATMAP[1], 0 : HEATMAP[0]]
    for n in range(2):
        for k in range(3):
            a, b = (1.2, 62.4) if k == 0 else (rng.uniform(5, 40), rng.uniform(5, 55))  # k = 0 sees the border
            maps[n, k] += np.exp(-((xs - a) ** 2 + (ys - b) ** 2) / (2 * rng.uniform(1.5, 3) ** 2))
    dec, _ = codec.decode(torch.from_numpy(maps))
    t = np.arange(11) - 5.0
    g = np.exp(-(t**2) / (2 * 2.0**2))
    g /= g.sum()
    for n in range(2):
        for k in range(3):
            m = maps[n, k].astype(np.float64)
            y0, x0 = np.unravel_index(m.argmax(), m.shape)
            blurred = correlate1d(correlate1d(m, g, axis=0, mode="mirror"), g, axis=1, mode="mirror")  # reflect-101
            expected = np.array([x0, y0]) - _np_newton_step(blurred, x0, y0)
            np.testing.assert_allclose(dec[n, k].numpy() / np.array(codec.stride), expected, atol=2e-4)


def test_non_positive_map_decodes_to_minus_one():
    codec = _codec("msra")
    hm = torch.zeros(1, 2, HEATMAP[1], HEATMAP[0])
    hm[0, 1] = -1.0
    dec, scores = codec.decode(hm)
    np.testing.assert_allclose(dec.numpy(), -4.0)
    assert scores.tolist() == [[0.0, -1.0]]


def test_batched_decode_equals_per_sample():
    codec = _codec("udp")
    hm, _ = codec.encode(_random_keypoints(6, 5, seed=5), torch.ones(6, 5))
    hm = hm + 0.01 * torch.rand(hm.shape, generator=torch.Generator().manual_seed(6))
    dec, sc = codec.decode(hm)
    for i in range(6):
        d, s = codec.decode(hm[i : i + 1])
        torch.testing.assert_close(d[0], dec[i])
        torch.testing.assert_close(s[0], sc[i])


def test_flip_back_of_flipped_input_returns_original():
    perm = skeletons.get("coco").flip_index()
    hm = torch.rand(3, 17, HEATMAP[1], HEATMAP[0], generator=torch.Generator().manual_seed(7))
    flipped = hm[:, perm].flip(-1)
    torch.testing.assert_close(flip_back(flipped, perm, shift=False), hm)
    torch.testing.assert_close(flip_back(flip_back(hm, perm, shift=False), perm, shift=False), hm)
    shifted = flip_back(flipped, perm, shift=True)
    torch.testing.assert_close(shifted[..., 1:], hm[..., :-1])
    torch.testing.assert_close(shifted[..., 0], hm[..., 0])
    torch.testing.assert_close(flip_test_average(hm, 3 * hm), 2 * hm)


def test_udp_targets_of_mirrored_keypoints_flip_back_exactly():
    codec = _codec("udp")
    sk = skeletons.get("coco")
    kp = _random_keypoints(4, 17, seed=8, low=10.0, high=torch.tensor([180.0, 240.0]))
    mirrored = kp[:, sk.flip_index()].clone()
    mirrored[..., 0] = INPUT[0] - 1 - mirrored[..., 0]
    hm, _ = codec.encode(kp, torch.ones(4, 17))
    hm_m, _ = codec.encode(mirrored, torch.ones(4, 17))
    torch.testing.assert_close(flip_back(hm_m, sk.flip_index(), shift=False), hm, atol=1e-5, rtol=0)


def test_msra_shifted_flip_back_stays_within_a_pixel():
    codec = _codec("msra")
    sk = skeletons.get("coco")
    kp = _random_keypoints(8, 17, seed=9, low=20.0, high=torch.tensor([170.0, 230.0]))
    mirrored = kp[:, sk.flip_index()].clone()
    mirrored[..., 0] = INPUT[0] - 1 - mirrored[..., 0]
    hm_m, _ = codec.encode(mirrored, torch.ones(8, 17))
    back, _ = codec.decode(flip_back(hm_m, sk.flip_index(), shift=True), refine="none")
    no_shift, _ = codec.decode(flip_back(hm_m, sk.flip_index(), shift=False), refine="none")
    err, err0 = (back - kp)[..., 0].abs(), (no_shift - kp)[..., 0].abs()
    assert err.max() <= 4.0 + 1e-4  # one heatmap pixel
    assert err.mean() < err0.mean()  # the shift removes the (1 - 1/stride) pixel bias


@pytest.mark.parametrize("h,w", [(4, 5), (3, 3), (6, 2), (2, 7)])
def test_dark_step_on_maps_narrower_than_the_kernel_matches_opencv(h, w):
    """Maps smaller than the 11-tap blur: the border reflects again, as cv2.GaussianBlur does."""
    import cv2

    from posebh.data.codecs import dark_udp_refine, dark_udp_step

    rng = np.random.default_rng(10)
    maps = rng.uniform(0.01, 1.0, size=(1, 2, h, w)).astype(np.float32)
    xy = np.array([[[w // 2, h // 2], [w - 1, 0]]])
    step = dark_udp_step(torch.from_numpy(maps), torch.from_numpy(xy[..., 0]), torch.from_numpy(xy[..., 1]))
    for k in range(2):
        blurred = cv2.GaussianBlur(maps[0, k].astype(np.float64), (11, 11), 0, borderType=cv2.BORDER_REFLECT_101)
        expected = _np_newton_step(blurred, *xy[0, k])
        np.testing.assert_allclose(step[0, k].numpy(), expected, rtol=1e-3, atol=1e-3)
    # the location form: the step is taken at the rounded location and optionally clamped
    loc = torch.from_numpy(xy).float() + 0.2
    torch.testing.assert_close(dark_udp_refine(torch.from_numpy(maps), loc), loc - step)
    clamped = dark_udp_refine(torch.from_numpy(maps), loc, max_step=0.5)
    torch.testing.assert_close(clamped, loc - step.clamp(-0.5, 0.5))
