"""Every PoseBH loss against hand calculations on tiny tensors or independent implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from posebh.losses import (
    ALPHA,
    BETA,
    DELTA,
    GAMMA,
    ZETA,
    LossWeights,
    cluster_targets,
    cps_loss,
    css_loss,
    css_pseudo_labels,
    dark_udp_refine,
    heatmap_mse,
    heatmap_peaks,
    phm_loss,
    ppc_loss,
    ppd_loss,
    prototype_loss,
    render_udp_gaussian,
)
from posebh.models.prototypes import ClusterPrototypes, Prototypes


def gaussian_map(h, w, cx, cy, sigma=2.0, peak=1.0):
    ys, xs = np.mgrid[0:h, 0:w]
    return peak * np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))


def test_loss_weights_defaults():
    lw = LossWeights()
    assert (lw.alpha, lw.beta, lw.gamma, lw.delta, lw.zeta, lw.kappa, lw.momentum) == (
        3.33e-6,
        1.25e-7,
        1.25e-8,
        1e-2,
        1e-3,
        0.05,
        0.999,
    )
    assert (ALPHA, BETA, GAMMA, DELTA, ZETA) == (3.33e-6, 1.25e-7, 1.25e-8, 1e-2, 1e-3)


# ----------------------------------------------------------------------------------------------
# Heatmap MSE, PPC, PPD
# ----------------------------------------------------------------------------------------------


def test_heatmap_mse_by_hand():
    # N=2, K=2, 1x2 maps
    pred = torch.tensor([[[[1.0, 2.0]], [[0.0, 1.0]]], [[[3.0, 0.0]], [[2.0, 2.0]]]])
    target = torch.tensor([[[[0.0, 0.0]], [[0.0, 0.0]]], [[[1.0, 0.0]], [[0.0, 1.0]]]])
    weight = torch.tensor([[1.0, 0.5], [0.0, 2.0]])
    # squared weighted errors: n0k0: 1+4; n0k1: .25*(0+1); n1k0: 0; n1k1: 4*(4+1)
    total = 5 + 0.25 + 0 + 20
    assert heatmap_mse(pred, target, weight).item() == pytest.approx(total / (2 * 2 * 2))
    # whole-batch mean: the same sum over a batch of 8 (other datasets' samples weighted 0)
    whole = heatmap_mse(pred, target, weight, batch_size_for_mean=8)
    assert whole.item() == pytest.approx(total / (8 * 2 * 2))
    assert heatmap_mse(pred, target).item() == pytest.approx((5 + 1 + 4 + 5) / 8)


def test_heatmap_mse_matches_per_joint_loop():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.rand(3, 4, 5, 6, generator=g), torch.rand(3, 4, 5, 6, generator=g)
    weight = torch.rand(3, 4, generator=g)
    loop = 0.0
    for k in range(4):  # mmpose JointsMSELoss: MSE of (pred*w, gt*w) per joint, / K
        wk = weight[:, k].view(3, 1, 1)
        loop += F.mse_loss(pred[:, k] * wk, target[:, k] * wk)
    torch.testing.assert_close(heatmap_mse(pred, target, weight), loop / 4)


def test_ppc_is_cross_entropy_without_temperature():
    logits = torch.tensor([[0.2, 0.9, 0.1], [0.5, 0.5, 0.0]])
    target = torch.tensor([1, 2])
    l0 = -math.log(math.exp(0.9) / (math.exp(0.2) + math.exp(0.9) + math.exp(0.1)))
    l1 = -math.log(math.exp(0.0) / (2 * math.exp(0.5) + 1))
    assert ppc_loss(logits, target).item() == pytest.approx((l0 + l1) / 2, rel=1e-6)


def test_ppd_by_hand():
    logits = torch.tensor([[0.2, 0.9, 0.1], [0.5, 0.5, 0.0]])
    target = torch.tensor([1, 0])
    assert ppd_loss(logits, target).item() == pytest.approx(((1 - 0.9) ** 2 + (1 - 0.5) ** 2) / 2)


def test_prototype_and_phm_weights():
    logits = torch.tensor([[0.2, 0.9, 0.1]])
    target = torch.tensor([0])
    want = 1.25e-7 * ppc_loss(logits, target) + 1.25e-8 * ppd_loss(logits, target)
    torch.testing.assert_close(prototype_loss(logits, target), want)
    torch.testing.assert_close(prototype_loss(logits, target, beta=2.0, gamma=3.0),
                               2 * ppc_loss(logits, target) + 3 * ppd_loss(logits, target))
    pred, tgt = torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)
    assert phm_loss(pred, tgt, torch.ones(1, 1)).item() == pytest.approx(3.33e-6)
    assert phm_loss(pred, tgt, torch.ones(1, 1), alpha=0.5).item() == pytest.approx(0.5)


def test_empty_pixels_give_connected_zero():
    logits = torch.zeros(0, 6, requires_grad=True)
    target = torch.zeros(0, dtype=torch.long)
    for fn in (ppc_loss, ppd_loss, prototype_loss):
        v = fn(logits, target)
        assert v.item() == 0.0 and v.requires_grad


# ----------------------------------------------------------------------------------------------
# Peaks, DARK-UDP, UDP rendering
# ----------------------------------------------------------------------------------------------


def np_dark_udp(hm: np.ndarray, x: int, y: int, kernel: int = 11) -> tuple[float, float]:
    """Independent DARK-UDP: scipy blur (mirror = OpenCV reflect-101; radius 5 with sigma 2),
    clip, log, edge pad and one Newton step, in float64."""
    sigma = 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8
    b = ndimage.gaussian_filter(hm.astype(np.float64), sigma, mode="mirror", truncate=(kernel // 2) / sigma)
    b = np.log(np.clip(b, 0.001, 50))
    p = np.pad(b, 1, mode="edge")
    px, py = x + 1, y + 1
    dx = 0.5 * (p[py, px + 1] - p[py, px - 1])
    dy = 0.5 * (p[py + 1, px] - p[py - 1, px])
    dxx = p[py, px + 1] - 2 * p[py, px] + p[py, px - 1]
    dyy = p[py + 1, px] - 2 * p[py, px] + p[py - 1, px]
    dxy = 0.5 * (
        p[py + 1, px + 1] - p[py, px + 1] - p[py + 1, px] + 2 * p[py, px]
        - p[py, px - 1] - p[py - 1, px] + p[py - 1, px - 1]
    )
    hess = np.array([[dxx, dxy], [dxy, dyy]]) + np.finfo(np.float32).eps * np.eye(2)
    step = np.linalg.inv(hess) @ np.array([dx, dy])
    return x - step[0], y - step[1]


def test_peaks():
    hm = torch.zeros(1, 2, 4, 5)
    hm[0, 0, 3, 1] = 0.7
    hm[0, 1, 0, 4] = 0.2
    loc, val = heatmap_peaks(hm)
    assert loc.tolist() == [[[1.0, 3.0], [4.0, 0.0]]]
    torch.testing.assert_close(val, torch.tensor([[0.7, 0.2]]))


@pytest.mark.parametrize("cx,cy", [(20.3, 30.6), (10.0, 12.0), (3.7, 50.2), (40.45, 61.2)])
def test_dark_udp_refine_matches_independent_numpy_and_recovers_centre(cx, cy):
    h, w = 64, 48
    hm = gaussian_map(h, w, cx, cy)
    x, y = int(round(cx)), int(round(cy))
    got = dark_udp_refine(
        torch.tensor(hm, dtype=torch.float32).view(1, 1, h, w), torch.tensor([[[x, y]]], dtype=torch.float32)
    )
    wx, wy = np_dark_udp(hm, x, y)
    # the implementation clamps the Newton step to +-1 px (mmpose does not); near the border
    # (cy = 61.2 on a 64-row map) the mirrored blur pushes mmpose's step past 1 px
    step = np.clip([x - wx, y - wy], -1.0, 1.0)
    np.testing.assert_allclose(got[0, 0].numpy(), [x - step[0], y - step[1]], atol=2e-3)
    if 5 <= cx <= w - 6 and 5 <= cy <= h - 6:  # away from borders the blur keeps the centre
        np.testing.assert_allclose(got[0, 0].numpy(), [cx, cy], atol=0.02)


def test_dark_udp_refine_uses_the_cross_derivative():
    # a tilted elliptical Gaussian: the Newton step needs d2/dxdy to land on the centre
    h, w, cx, cy = 64, 48, 20.4, 30.3
    ys, xs = np.mgrid[0:h, 0:w]
    dx, dy = xs - cx, ys - cy
    inv = np.linalg.inv(np.array([[9.0, 6.0], [6.0, 9.0]]))
    hm = np.exp(-0.5 * (inv[0, 0] * dx**2 + 2 * inv[0, 1] * dx * dy + inv[1, 1] * dy**2))
    x, y = np.unravel_index(hm.argmax(), hm.shape)[::-1]
    got = dark_udp_refine(
        torch.tensor(hm, dtype=torch.float32).view(1, 1, h, w), torch.tensor([[[x, y]]], dtype=torch.float32)
    )
    np.testing.assert_allclose(got[0, 0].numpy(), np_dark_udp(hm, x, y), atol=2e-3)
    np.testing.assert_allclose(got[0, 0].numpy(), [cx, cy], atol=0.02)


def np_udp_render(loc, size, sigma=2.0):
    """mmpose's _udp_generate_target (stride 1) for one joint, as a loop."""
    w, h = size
    tmp = int(3 * sigma)
    mu_x, mu_y = int(loc[0] + 0.5), int(loc[1] + 0.5)
    out = np.zeros((h, w))
    ul, br = (mu_x - tmp, mu_y - tmp), (mu_x + tmp + 1, mu_y + tmp + 1)
    if ul[0] >= w or ul[1] >= h or br[0] < 0 or br[1] < 0:
        return out, 0.0
    for yy in range(max(0, ul[1]), min(br[1], h)):
        for xx in range(max(0, ul[0]), min(br[0], w)):
            out[yy, xx] = math.exp(-((xx - loc[0]) ** 2 + (yy - loc[1]) ** 2) / (2 * sigma**2))
    return out, 1.0


def test_render_udp_gaussian_matches_loop_and_hand_values():
    locs = [(10.0, 12.0), (3.4, 60.7), (47.2, 0.3), (60.0, 5.0), (-10.0, 5.0), (20.5, 20.5)]
    loc_t = torch.tensor([locs], dtype=torch.float32)
    weights = torch.tensor([[1.0, 0.5, 0.3, 1.0, 1.0, 0.0]])
    hm, wt = render_udp_gaussian(loc_t, weights, (48, 64), sigma=2.0)
    assert tuple(hm.shape) == (1, 6, 64, 48)
    for k, loc in enumerate(locs):
        want, inside = np_udp_render(loc, (48, 64))
        if weights[0, k] == 0:
            want = np.zeros_like(want)
        np.testing.assert_allclose(hm[0, k].numpy(), want, atol=1e-6)
        assert wt[0, k].item() == pytest.approx(weights[0, k].item() * inside)
    # hand values for the integer location (10, 12): 1 at the centre, exp(-1/8) one pixel off,
    # 0 beyond the 13x13 window
    assert hm[0, 0, 12, 10].item() == pytest.approx(1.0)
    assert hm[0, 0, 12, 11].item() == pytest.approx(math.exp(-1 / 8))
    assert hm[0, 0, 12, 17].item() == 0.0 and hm[0, 0, 12, 16].item() > 0
    assert wt[0, 3].item() == 0.0 and wt[0, 4].item() == 0.0  # windows off the map


# ----------------------------------------------------------------------------------------------
# CSS
# ----------------------------------------------------------------------------------------------


def peak_maps(spec, h=64, w=48):
    """(n=1, K, h, w) maps with one spike of the given value at the given (x, y) per joint."""
    hm = torch.zeros(1, len(spec), h, w)
    for k, (x, y, c) in enumerate(spec):
        hm[0, k, y, x] = c
    return hm


def test_css_pseudo_labels_rule_by_hand():
    head = peak_maps(
        [(10, 10, 0.8), (10, 3, 0.9), (4, 10, 0.9), (30, 40, 0.9), (5, 5, 0.25), (5, 5, 0.26), (20, 20, 0.6)]
    )
    proto = peak_maps(
        [(11, 11, 0.4), (11, 3, 0.5), (4, 4, 0.9), (31, 40, 0.6), (5, 5, 0.9), (5, 5, 0.9), (22, 21, 0.6)]
    )
    label, weight = css_pseudo_labels(head, proto, refine=None)
    # joint 0: distance sqrt(2) <= 2.1, label = (.8*(10,10) + .4*(11,11)) / 1.2, weight min = .4
    torch.testing.assert_close(label[0, 0], torch.tensor([31 / 3, 31 / 3]))
    assert weight[0, 0].item() == pytest.approx(0.4)
    # joint 1: distance 1 (the released formula gave sqrt(1 + 8^2) and rejected it)
    torch.testing.assert_close(label[0, 1], torch.tensor([(0.9 * 10 + 0.5 * 11) / 1.4, 3.0]))
    assert weight[0, 1].item() == pytest.approx(0.5)
    # joint 2: distance 6 > 2.1 rejected (the released formula gave 0 and kept it)
    assert weight[0, 2].item() == 0.0
    # joint 3: the label is a location, not a confidence (released: .6*(30,40) + .4*.6)
    torch.testing.assert_close(label[0, 3], torch.tensor([(0.9 * 30 + 0.6 * 31) / 1.5, 40.0]))
    # joint 4: confidence exactly .25 is not above the threshold; joint 5: .26 is
    assert weight[0, 4].item() == 0.0
    assert weight[0, 5].item() == pytest.approx(0.26)
    # joint 6: distance sqrt(5) = 2.24 > 2.1 rejected
    assert weight[0, 6].item() == 0.0
    # thresholds are arguments
    _, w2 = css_pseudo_labels(head, proto, refine=None, match_dist=2.5, conf_thr=0.1)
    assert w2[0, 6].item() == pytest.approx(0.6) and w2[0, 4].item() == pytest.approx(0.25)


def test_css_pseudo_labels_with_default_dark_refinement():
    h, w = 64, 48
    a = torch.tensor(gaussian_map(h, w, 20.3, 30.2, peak=0.9), dtype=torch.float32).view(1, 1, h, w)
    b = torch.tensor(gaussian_map(h, w, 21.1, 31.0, peak=0.6), dtype=torch.float32).view(1, 1, h, w)
    label, weight = css_pseudo_labels(a, b)
    ca, cb = a.max().item(), b.max().item()
    want = (ca * np.array([20.3, 30.2]) + cb * np.array([21.1, 31.0])) / (ca + cb)
    np.testing.assert_allclose(label[0, 0].numpy(), want, atol=0.02)
    assert weight[0, 0].item() == pytest.approx(cb)


def test_css_pseudo_labels_carry_no_gradient():
    head = peak_maps([(10, 10, 0.8)]).requires_grad_(True)
    proto = peak_maps([(10, 11, 0.7)]).requires_grad_(True)
    label, weight = css_pseudo_labels(head, proto)
    assert not label.requires_grad and not weight.requires_grad


def _css_inputs():
    g = torch.Generator().manual_seed(0)
    h, w, f = 16, 12, 8
    head = torch.full((3, 2, h, w), 0.01)
    head[0, 0] = torch.tensor(gaussian_map(h, w, 5, 6, peak=0.8))
    head[0, 1] = torch.tensor(gaussian_map(h, w, 8, 3, peak=0.2))  # too weak
    head[2, 0] = torch.tensor(gaussian_map(h, w, 3, 10, peak=0.7))
    head[2, 1] = torch.tensor(gaussian_map(h, w, 9, 12, peak=0.7))
    proto = torch.full((3, 2, h, w), 0.01)
    proto[0, 0] = torch.tensor(gaussian_map(h, w, 6, 6, peak=0.5))
    proto[0, 1] = torch.tensor(gaussian_map(h, w, 8, 3, peak=0.9))
    proto[2, 0] = torch.tensor(gaussian_map(h, w, 3, 2, peak=0.7))  # far from the head's peak
    proto[2, 1] = torch.tensor(gaussian_map(h, w, 9, 13, peak=0.4))
    emb = torch.randn(3, f, h, w, generator=g)
    p = Prototypes(5, 3, f, generator=g)
    p.frozen = True
    return head, proto, emb, p


def test_css_loss_composition_by_hand():
    head, proto, emb, p = _css_inputs()
    head.requires_grad_(True)
    proto.requires_grad_(True)
    emb.requires_grad_(True)
    got = css_loss(head, proto, emb, p, offset=2, refine=None)
    # kept: image 0 joint 0 (weight .5) and image 2 joint 1 (weight .4); image 1 has none
    label, weight = css_pseudo_labels(head, proto, refine=None)
    assert (weight > 0).tolist() == [[True, False], [False, False], [False, True]]
    torch.testing.assert_close(label[0, 0], torch.tensor([(0.8 * 5 + 0.5 * 6) / 1.3, 6.0]))
    torch.testing.assert_close(label[2, 1], torch.tensor([9.0, (0.7 * 12 + 0.4 * 13) / 1.1]))
    keep = torch.tensor([0, 2])
    tgt = torch.zeros(2, 2, 16, 12)
    tgt[0, 0] = torch.tensor(gaussian_map(16, 12, (0.8 * 5 + 0.5 * 6) / 1.3, 6.0))
    tgt[1, 1] = torch.tensor(gaussian_map(16, 12, 9.0, (0.7 * 12 + 0.4 * 13) / 1.1))
    # 13x13 window around the rounded centre
    ys, xs = torch.meshgrid(torch.arange(16), torch.arange(12), indexing="ij")
    tgt[0, 0] *= ((xs - 5).abs() <= 6) & ((ys - 6).abs() <= 6)
    tgt[1, 1] *= ((xs - 9).abs() <= 6) & ((ys - 12).abs() <= 6)
    tw = torch.tensor([[0.5, 0.0], [0.0, 0.4]])

    def mse(pred):  # mean over the two kept images, the pixels and K
        return ((tw.view(2, 2, 1, 1) * (pred - tgt)) ** 2).sum() / (2 * 2 * 16 * 12)

    # prototype part: pixels with target*weight > 0 against rows [2, 4) of the prototypes
    emb_k = emb[keep].permute(0, 2, 3, 1).reshape(-1, 8)
    tk = (tgt * tw.view(2, 2, 1, 1)).permute(0, 2, 3, 1).reshape(-1, 2)
    conf, cls = tk.max(dim=1)
    sel = conf > 0
    x = F.normalize(emb_k[sel], dim=1)
    logits = (x @ F.normalize(p.prototypes[2:4].reshape(6, 8), dim=1).T).abs()
    from posebh.models.prototypes import sinkhorn

    tgt_idx = torch.empty(int(sel.sum()), dtype=torch.long)
    for k in range(2):
        ck = cls[sel] == k
        tgt_idx[ck] = sinkhorn(logits[ck].view(-1, 2, 3)[:, k], 0.05, 3).argmax(dim=1) + 3 * k
    ppc = F.cross_entropy(logits, tgt_idx)
    ppd = ((1 - logits.gather(1, tgt_idx[:, None])) ** 2).mean()
    want = 1e-3 * (mse(head[keep]) + 3.33e-6 * mse(proto[keep]) + 1.25e-7 * ppc + 1.25e-8 * ppd)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=0)
    got.backward()
    assert head.grad.abs().sum() > 0 and proto.grad.abs().sum() > 0 and emb.grad.abs().sum() > 0
    assert head.grad[1].abs().sum() == 0  # image without pseudo-labels


def test_css_loss_images_without_labels_do_not_dilute_the_mean():
    head, proto, emb, p = _css_inputs()
    full = css_loss(head, proto, emb, p, offset=2, refine=None)
    only = css_loss(head[[0, 2]], proto[[0, 2]], emb[[0, 2]], p, offset=2, refine=None)
    torch.testing.assert_close(full, only)


def test_css_loss_nothing_kept_is_connected_zero_and_prototypes_untouched():
    head, proto, emb, p = _css_inputs()
    head = head.clone().requires_grad_(True)
    before = p.prototypes.clone()
    p.frozen = False  # even unfrozen, CSS never updates prototypes
    css_loss(head, proto, emb, p, offset=2)
    assert torch.equal(p.prototypes, before)
    z = css_loss(head * 0.1, proto, emb, p, offset=2)
    assert z.item() == 0.0 and z.requires_grad


def test_css_loss_accepts_a_codec_and_zeta():
    head, proto, emb, p = _css_inputs()
    calls = []

    def render(loc, wt, size):
        calls.append((tuple(loc.shape), size))
        return render_udp_gaussian(loc, wt, size, sigma=2.0)

    a = css_loss(head, proto, emb, p, offset=2, render=render, zeta=1.0)
    b = css_loss(head, proto, emb, p, offset=2)
    assert calls == [((2, 2, 2), (12, 16))]
    torch.testing.assert_close(a * 1e-3, b)


# ----------------------------------------------------------------------------------------------
# CPS
# ----------------------------------------------------------------------------------------------


def test_cluster_targets_mapping():
    target = torch.arange(2 * 2 * 1 * 1, dtype=torch.float32).view(2, 2, 1, 1) + 1
    weight = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    keypoint = torch.tensor([4, 0, 3])  # dataset rows [3, 5): cluster 0 -> local 1, 2 -> local 0
    t, w = cluster_targets(keypoint, target, weight, offset=3)
    assert t[:, :, 0, 0].tolist() == [[2.0, 0.0, 1.0], [4.0, 0.0, 3.0]]
    assert w.tolist() == [[0.0, 0.0, 1.0], [1.0, 0.0, 1.0]]


def test_cps_loss_by_hand_and_switch():
    g = torch.Generator().manual_seed(0)
    f, h, w = 4, 6, 5
    cl = ClusterPrototypes(2, 3, f)
    with torch.no_grad():
        cl.prototypes.copy_(F.normalize(torch.randn(2, 3, f, generator=g), dim=-1))
        cl.keypoint.copy_(torch.tensor([1, 0]))
    emb = torch.randn(2, f, h, w, generator=g, requires_grad=True)
    tgt = torch.zeros(2, 2, h, w)
    tgt[0, 0, 2, 2] = 1.0
    tgt[0, 0, 2, 3] = 0.5
    tgt[1, 1, 4, 1] = 0.8
    wt = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    before = cl.prototypes.clone()
    got = cps_loss(emb, cl, tgt, wt)
    assert torch.equal(cl.prototypes, before)  # frozen
    # by hand: cluster heatmap = clamped max_m |cos|; pixels (0,2,2),(0,2,3) class 0, (1,4,1) class 1
    x = F.normalize(emb.detach(), dim=1)
    hm = torch.einsum("bfhw,cmf->bcmhw", x, cl.prototypes).abs().amax(2).clamp(1e-4, 1 - 1e-4)
    mse = ((wt.view(2, 2, 1, 1) * (hm - tgt)) ** 2).mean()
    pix = torch.stack([x[0, :, 2, 2], x[0, :, 2, 3], x[1, :, 4, 1]])
    logits = (pix @ cl.prototypes.reshape(6, f).T).abs()
    # class 0 has 2 pixels, class 1 has one (a lone pixel's Sinkhorn row is uniform -> slot 0)
    from posebh.models.prototypes import sinkhorn

    t0 = sinkhorn(logits[:2, :3]).argmax(1)
    target = torch.cat([t0, torch.tensor([3])])
    ppc = F.cross_entropy(logits, target)
    ppd = ((1 - logits.gather(1, target[:, None])) ** 2).mean()
    want = 1e-2 * (1.25e-7 * ppc + 1.25e-8 * ppd + 3.33e-6 * mse)
    torch.testing.assert_close(got.detach(), want, rtol=1e-5, atol=0)
    got.backward()
    assert emb.grad.abs().sum() > 0
    off = cps_loss(emb, cl, tgt, wt, enabled=False)
    assert off.item() == 0.0 and off.requires_grad


# ----------------------------------------------------------------------------------------------
# Autocast
# ----------------------------------------------------------------------------------------------


def test_losses_return_fp32_under_bf16_autocast():
    head, proto, emb, p = _css_inputs()
    head_b = head.bfloat16().requires_grad_(True)
    emb_b = emb.bfloat16().requires_grad_(True)
    logits = torch.rand(5, 6).bfloat16()
    target = torch.tensor([0, 1, 2, 3, 4])
    cl = ClusterPrototypes(2, 3, 8)
    ct, cw = cluster_targets(torch.tensor([2, 3]), head[:, :2], torch.ones(3, 2), offset=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        proto_hm = p.heatmap(emb_b, slice(2, 4))
        outs = [
            heatmap_mse(head_b, head, torch.ones(3, 2)),
            ppc_loss(logits, target),
            ppd_loss(logits, target),
            prototype_loss(logits, target),
            phm_loss(proto_hm, head, torch.ones(3, 2)),
            css_loss(head_b, proto.bfloat16(), emb_b, p, offset=2),
            cps_loss(emb_b, cl, ct, cw),
            dark_udp_refine(head_b, torch.ones(3, 2, 2)),
            render_udp_gaussian(torch.ones(3, 2, 2).bfloat16(), torch.ones(3, 2), (12, 16))[0],
        ]
        labels = css_pseudo_labels(head_b, proto.bfloat16())
    for o in outs + list(labels):
        assert o.dtype == torch.float32
    sum(o for o in outs[:7]).backward()
    assert head_b.grad is not None and emb_b.grad is not None
