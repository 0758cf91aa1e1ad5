"""SAR losses against hand calculations on tiny tensors (plain Python arithmetic), the kernel's
scale relative to the grid, weights and masking, and gradient directions."""

from __future__ import annotations

import math

import pytest
import torch

from posebh.losses_sar import SAR_LAMBDA, aux_heatmap_loss, sar_loss, sar_nll


def sig(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def tiny_case():
    """One keypoint on a 2x2 grid: cells at (0,0), (.5,0), (0,.5), (.5,.5) (normalised)."""
    logits = torch.tensor([[[[0.5, -1.0], [2.0, 0.0]]]])
    offsets = torch.zeros(1, 1, 2, 2, 2)
    offsets[0, 0, 0] = torch.tensor([[-0.1, 0.2], [0.0, 0.3]])
    offsets[0, 0, 1] = torch.tensor([[-0.05, 0.0], [0.4, 0.1]])
    target = torch.tensor([[[0.12, 0.08]]])
    return logits, offsets, target


def hand_nll(lam: float = 16.0) -> float:
    s = [sig(0.5), sig(-1.0), sig(2.0), sig(0.0)]
    # regressions: location - offset
    cells = [(0.0 + 0.1, 0.0 + 0.05), (0.5 - 0.2, 0.0 - 0.0), (0.0 - 0.0, 0.5 - 0.4), (0.5 - 0.3, 0.5 - 0.1)]
    tx, ty = 0.12, 0.08
    like = sum(si / sum(s) * math.exp(-lam * (abs(x - tx) + abs(y - ty))) for si, (x, y) in zip(s, cells))
    return -math.log(like + 1e-6)


def test_nll_matches_a_hand_calculation():
    logits, offsets, target = tiny_case()
    assert sar_nll(logits, offsets, target).item() == pytest.approx(hand_nll(), rel=1e-5)
    assert sar_nll(logits, offsets, target, lam=4.0).item() == pytest.approx(hand_nll(4.0), rel=1e-5)
    assert sar_loss(logits, offsets, target).item() == pytest.approx(hand_nll(), rel=1e-5)
    # by hand: p = (.6225, .2689, .8808, .5) / 2.2722 = (.2740, .1184, .3876, .2200); L1 errors
    # (.05, .26, .14, .40) -> q = (.4493, .0156, .1065, .0017); sum p q = .1666; -log = 1.792
    assert hand_nll() == pytest.approx(1.792, abs=1e-3)


def test_confidences_are_sum_normalised_not_softmax():
    logits, offsets, target = tiny_case()
    s = torch.sigmoid(logits.reshape(-1))
    soft = torch.softmax(logits.reshape(-1), 0)
    coords = torch.tensor([[0.1, 0.05], [0.3, 0.0], [0.0, 0.1], [0.2, 0.4]])
    q = torch.exp(-16 * (coords - target[0, 0]).abs().sum(1))
    got = sar_nll(logits, offsets, target).item()
    assert got == pytest.approx(-math.log((s / s.sum() * q).sum().item() + 1e-6), rel=1e-5)
    assert abs(got - (-math.log((soft * q).sum().item() + 1e-6))) > 1e-2


@pytest.mark.parametrize("grid", [(4, 4), (8, 6), (48, 64)])
def test_lambda_is_relative_to_the_grid(grid):
    """A lone confident cell off by 1/16 of the grid width costs -log(e^-1) = 1 on any grid."""
    w, h = grid
    logits = torch.full((1, 1, h, w), -30.0)
    logits[0, 0, 1, 2] = 30.0
    offsets = torch.zeros(1, 1, 2, h, w)
    target = torch.tensor([[[2 / w + 1 / SAR_LAMBDA, 1 / h]]])  # the cell's own location + 1/16 in x
    assert sar_nll(logits, offsets, target).item() == pytest.approx(1.0, abs=1e-4)


def test_weights_mask_and_batch_share():
    logits, offsets, target = tiny_case()
    l2 = torch.cat([logits, -logits], 1)  # (1, 2, 2, 2): a second, different keypoint
    o2 = torch.cat([offsets, offsets.flip(-1)], 1)
    t2 = torch.cat([target, target.flip(-1)], 1)
    nll = sar_nll(l2, o2, t2)[0]
    # weight 0 drops the keypoint from the mean; real weights scale their keypoint's term
    assert sar_loss(l2, o2, t2, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(nll[0].item(), rel=1e-6)
    got = sar_loss(l2, o2, t2, torch.tensor([[0.5, 1.0]])).item()
    assert got == pytest.approx((0.5 * nll[0] + nll[1]).item() / 2, rel=1e-6)
    # this head's 1 sample in a batch of 4: a quarter
    share = sar_loss(l2, o2, t2, torch.tensor([[1.0, 1.0]]), batch_size_for_mean=4).item()
    assert share == pytest.approx(nll.mean().item() / 4, rel=1e-6)


def test_no_labelled_keypoint_gives_a_graph_connected_zero():
    logits, offsets, target = tiny_case()
    logits.requires_grad_(True)
    loss = sar_loss(logits, offsets, target, torch.zeros(1, 1))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))
    empty = sar_loss(torch.zeros(0, 3, 2, 2, requires_grad=True), torch.zeros(0, 3, 2, 2, 2), torch.zeros(0, 3, 2))
    assert empty.item() == 0.0


def test_gradients_favour_the_accurate_cell_and_pull_regressions_in():
    logits, offsets, target = tiny_case()
    logits.requires_grad_(True)
    offsets.requires_grad_(True)
    sar_loss(logits, offsets, target).backward()
    g = logits.grad.reshape(-1)
    # a cell gains confidence where its q beats the mixture's likelihood (.1666): only cell 0
    assert g[0] < 0
    assert g[1] > 0 and g[2] > 0 and g[3] > 0
    # cell (0,0) regresses (0.1, 0.05) vs target (0.12, 0.08): descent moves it toward the target,
    # i.e. the offset (location - prediction) decreases in both coordinates
    assert offsets.grad[0, 0, 0, 0, 0] > 0 and offsets.grad[0, 0, 1, 0, 0] > 0


def test_aux_heatmap_loss_matches_a_hand_calculation():
    x = torch.tensor([[[[0.0, 1.0, -2.0]]]])
    t = torch.tensor([[[[0.0, 0.8, 0.3]]]])

    def bce(v, y):
        p = sig(v)
        return -(y * math.log(p) + (1 - y) * math.log(1 - p))

    terms = [(sig(v) - y) ** 2 * bce(v, y) for v, y in zip((0.0, 1.0, -2.0), (0.0, 0.8, 0.3))]
    # one target pixel above 0.7
    assert aux_heatmap_loss(x, t).item() == pytest.approx(sum(terms), rel=1e-5)
    # for t = 0 the modulation is sigma(x)^2: the reference's negatives
    assert terms[0] == pytest.approx(sig(0.0) ** 2 * -math.log(1 - sig(0.0)))
    two = torch.cat([x, x], 1), torch.cat([t, t], 1)
    assert aux_heatmap_loss(*two, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(sum(terms), rel=1e-5)
    assert aux_heatmap_loss(*two, torch.tensor([[1.0, 1.0]]), batch_size_for_mean=2).item() == pytest.approx(
        sum(terms) / 2, rel=1e-5)  # 2 channels / 2 positives, a half share


def test_losses_run_in_fp32_under_autocast():
    logits, offsets, target = tiny_case()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = sar_loss(logits.bfloat16(), offsets, target)
        aux = aux_heatmap_loss(logits.bfloat16(), torch.rand(1, 1, 2, 2))
    assert loss.dtype == torch.float32 and aux.dtype == torch.float32
