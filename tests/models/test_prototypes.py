"""Prototypes, Sinkhorn-Knopp, momentum update, corrected indexing and prototype clustering.

Expected values come from independent implementations (explicit-loop numpy Sinkhorn, numpy |cos|)
or from hand-made geometries whose answer is written out below.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from posebh.models.prototypes import (
    ClusterPrototypes,
    Prototypes,
    all_reduce_mean_,
    choose_clusters,
    gumbel_one_hot,
    prototype_learning,
    sample_pixels,
    sinkhorn,
    soft_kmeans,
)


def np_sinkhorn_loops(q: np.ndarray, eps: float, iters: int) -> np.ndarray:
    """The reference's steps written as explicit loops in the reference's (M, n) layout, float64."""
    n, m = q.shape
    lm = [[math.exp(q[i][j] / eps) for i in range(n)] for j in range(m)]
    total = sum(lm[j][i] for j in range(m) for i in range(n))
    lm = [[lm[j][i] / total for i in range(n)] for j in range(m)]
    for _ in range(iters):
        for j in range(m):
            r = sum(lm[j][i] for i in range(n))
            for i in range(n):
                lm[j][i] = lm[j][i] / r / m
        for i in range(n):
            c = sum(lm[j][i] for j in range(m))
            for j in range(m):
                lm[j][i] = lm[j][i] / c / n
    return np.array([[lm[j][i] * n for j in range(m)] for i in range(n)])


def set_protos(p: Prototypes, values) -> None:
    with torch.no_grad():
        p.prototypes.copy_(F.normalize(torch.as_tensor(values, dtype=torch.float32), dim=-1))


# ----------------------------------------------------------------------------------------------
# The tensor
# ----------------------------------------------------------------------------------------------


def test_prototypes_buffer_unit_and_state_dict():
    p = Prototypes(214, 3, 64, generator=torch.Generator().manual_seed(0))
    assert tuple(p.prototypes.shape) == (214, 3, 64)
    assert list(p.state_dict()) == ["prototypes"]
    assert list(p.parameters()) == []  # never seen by an optimizer
    torch.testing.assert_close(p.prototypes.norm(dim=-1), torch.ones(214, 3))
    q = Prototypes(214, 3, 64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(p.prototypes, q.prototypes)
    r = Prototypes(214, 3, 64)
    r.load_state_dict(p.state_dict())
    torch.testing.assert_close(r.prototypes, p.prototypes)
    # random directions: far from collinear
    flat = p.prototypes.reshape(-1, 64)
    off = (flat @ flat.T - torch.eye(642)).abs().max()
    assert off < 0.8
    assert p.frozen is False


def test_normalize_inplace():
    p = Prototypes(2, 2, 3)
    with torch.no_grad():
        p.prototypes.mul_(5.0)
    p.normalize_()
    torch.testing.assert_close(p.prototypes.norm(dim=-1), torch.ones(2, 2))


def test_similarity_is_abs_cos_and_heatmap_is_clamped_max():
    g = torch.Generator().manual_seed(1)
    p = Prototypes(4, 3, 5, generator=g)
    emb = torch.randn(7, 5, generator=g) * 3
    got = p.similarity(emb)
    e = emb.numpy().astype(np.float64)
    pr = p.prototypes.numpy().astype(np.float64)
    want = np.zeros((7, 4, 3))
    for n in range(7):
        for j in range(4):
            for m in range(3):
                want[n, j, m] = abs(e[n] @ pr[j, m]) / (np.linalg.norm(e[n]) * np.linalg.norm(pr[j, m]))
    np.testing.assert_allclose(got.numpy(), want, atol=1e-6)

    emb_map = torch.randn(2, 5, 3, 4, generator=g)
    hm = p.heatmap(emb_map, slice(1, 3))
    assert tuple(hm.shape) == (2, 2, 3, 4)
    flat = emb_map.permute(0, 2, 3, 1).reshape(-1, 5)
    sim = p.similarity(flat).amax(dim=2)[:, 1:3].clamp(1e-4, 1 - 1e-4)
    torch.testing.assert_close(hm.permute(0, 2, 3, 1).reshape(-1, 2), sim)
    torch.testing.assert_close(p.heatmap(emb_map)[:, 1:3], hm)


def test_heatmap_clamps_exact_match_and_orthogonal():
    p = Prototypes(2, 1, 2)
    set_protos(p, [[[1.0, 0.0]], [[0.0, 1.0]]])
    emb_map = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    hm = p.heatmap(emb_map)
    torch.testing.assert_close(hm.flatten(), torch.tensor([1 - 1e-4, 1e-4]))


# ----------------------------------------------------------------------------------------------
# Sinkhorn-Knopp
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n,m,eps,iters", [(1, 3, 0.05, 3), (5, 3, 0.05, 3), (9, 2, 0.1, 1), (7, 4, 0.05, 6)])
def test_sinkhorn_matches_loop_reference(n, m, eps, iters):
    rng = np.random.default_rng(n * 10 + m)
    q = rng.uniform(0, 1, size=(n, m))
    got = sinkhorn(torch.tensor(q, dtype=torch.float32), eps=eps, iters=iters)
    want = np_sinkhorn_loops(q, eps, iters)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-6)


def test_sinkhorn_marginals():
    rng = np.random.default_rng(0)
    n, m = 30, 3
    q = torch.tensor(rng.uniform(0, 1, size=(n, m)), dtype=torch.float32)
    errors = []
    for iters in (1, 3, 10, 50):
        out = sinkhorn(q, eps=0.05, iters=iters)
        torch.testing.assert_close(out.sum(dim=1), torch.ones(n))  # every pixel sums to 1
        errors.append((out.sum(dim=0) - n / m).abs().max().item())  # prototype mass -> n/M
    assert errors[-1] < 1e-3 * n
    assert errors[0] > errors[-1]
    assert all(a >= b - 1e-6 for a, b in zip(errors, errors[1:]))


def test_sinkhorn_small_eps_gives_near_hard_assignment():
    # three pixels, each clearly closest to a different prototype: equipartition agrees with them
    q = torch.tensor([[0.9, 0.2, 0.1], [0.1, 0.95, 0.3], [0.2, 0.1, 0.8]])
    out = sinkhorn(q, eps=0.01, iters=3)
    assert torch.equal(out.argmax(dim=1), torch.tensor([0, 1, 2]))
    assert out.max(dim=1).values.min() > 0.999
    soft = sinkhorn(q, eps=1.0, iters=3)
    assert soft.max(dim=1).values.max() < 0.6  # a large eps stays soft


def test_sinkhorn_is_safe_for_tiny_eps():
    # exp(1 / 1e-3) overflows float32 without the max subtraction
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.99, 0.5]])
    out = sinkhorn(q, eps=1e-3, iters=3)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.sum(dim=1), torch.ones(3))


def test_gumbel_one_hot_reproducible_and_distributed_as_softmax():
    logits = torch.tensor([[1.0, 0.0, 0.5]]).expand(40000, 3)
    a = gumbel_one_hot(logits, generator=torch.Generator().manual_seed(3))
    b = gumbel_one_hot(logits, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert torch.equal(a.sum(dim=1), torch.ones(40000))
    freq = a.mean(dim=0)
    want = torch.softmax(torch.tensor([1.0, 0.0, 0.5]), dim=0)
    torch.testing.assert_close(freq, want, atol=0.01, rtol=0)


# ----------------------------------------------------------------------------------------------
# Pixel sampling
# ----------------------------------------------------------------------------------------------


def test_sample_pixels_by_hand():
    target = torch.zeros(1, 2, 2, 3)
    target[0, 0, 0, 0] = 0.9
    target[0, 1, 0, 0] = 0.3
    target[0, 1, 1, 2] = 0.5
    target[0, 0, 1, 1] = 0.1
    emb = torch.arange(1 * 4 * 2 * 3, dtype=torch.float32).view(1, 4, 2, 3)
    px = sample_pixels(target, torch.ones(1, 2), emb, conf_thr=0.2)
    # pixels in row-major order: (0,0) class 0 conf .9; (1,2) class 1 conf .5; (1,1) is below .2
    assert torch.equal(px.label, torch.tensor([0, 1]))
    torch.testing.assert_close(px.conf, torch.tensor([0.9, 0.5]))
    torch.testing.assert_close(px.emb, torch.stack([emb[0, :, 0, 0], emb[0, :, 1, 2]]))
    # weight 0 removes a joint entirely (pixel (0,0) then belongs to class 1 at 0.3)
    px = sample_pixels(target, torch.tensor([[0.0, 1.0]]), emb, conf_thr=0.0)
    assert torch.equal(px.label, torch.tensor([1, 1]))
    torch.testing.assert_close(px.conf, torch.tensor([0.3, 0.5]))
    # threshold 0.0 keeps every positive pixel
    assert sample_pixels(target, torch.ones(1, 2), emb, 0.0).label.numel() == 3


# ----------------------------------------------------------------------------------------------
# Momentum update on a hand-made case
# ----------------------------------------------------------------------------------------------


def _unit(*v):
    a = np.array(v, dtype=np.float64)
    return a / np.linalg.norm(a)


def _hand_case():
    # J = 3 keypoints, M = 2, F = 3; the dataset owns rows 0-1, row 2 points along z (|cos| = 0
    # with every pixel, so it never wins the global argmax and must never move)
    p = Prototypes(3, 2, 3)
    protos = [
        [[1, 0, 0], [0, 1, 0]],
        [_unit(1, 1, 0), _unit(1, -1, 0)],
        [[0, 0, 1], [0, 0, 1]],
    ]
    set_protos(p, np.array(protos, dtype=np.float64))
    emb = torch.tensor(
        [
            [3.0, 1.0, 0.0],  # x1 class 0 -> p00, conf .5
            [4.0, -1.0, 0.0],  # x5 class 0 -> p00, conf .9
            [1.0, 4.0, 0.0],  # x2 class 0 -> p01, conf .8
            [1.0, 0.0, 0.0],  # x3 class 1 -> p11 by Sinkhorn, but its global argmax is keypoint 0
            [1.0, 0.9, 0.0],  # x4 class 1 -> p10, conf .7
        ]
    )
    label = torch.tensor([0, 0, 0, 1, 1])
    conf = torch.tensor([0.5, 0.9, 0.8, 0.6, 0.7])
    return p, protos, emb, label, conf


def _hand_expected(protos, hard: bool, lam: float):
    x1, x5, x2 = _unit(3, 1, 0), _unit(4, -1, 0), _unit(1, 4, 0)
    x4 = _unit(1, 0.9, 0)
    w1, w5, w2, w4 = (1, 1, 1, 1) if hard else (0.5, 0.9, 0.8, 0.7)
    f00 = _unit(*(w1**2 * x1 + w5**2 * x5))
    f01 = _unit(*(w2**2 * x2))
    f10 = _unit(*(w4**2 * x4))
    want = np.array(protos, dtype=np.float64).copy()
    want[0, 0] = _unit(*(lam * want[0, 0] + (1 - lam) * f00))
    want[0, 1] = _unit(*(lam * want[0, 1] + (1 - lam) * f01))
    want[1, 0] = _unit(*(lam * want[1, 0] + (1 - lam) * f10))
    # want[1, 1]: only x3 is assigned to it and x3 is misclassified -> zero mass, unchanged
    return want


@pytest.mark.parametrize("hard", [False, True])
def test_momentum_update_matches_hand_computation(hard):
    p, protos, emb, label, conf = _hand_case()
    out = prototype_learning(
        p, emb, label, conf, offset=0, K=2, momentum=0.5, hard=hard, update_assignment="argmax"
    )
    # targets: Sinkhorn argmax + M * k
    assert torch.equal(out.target, torch.tensor([0, 0, 1, 3, 2]))
    want = _hand_expected(protos, hard, 0.5)
    np.testing.assert_allclose(p.prototypes.numpy(), want, atol=1e-5)
    # only the three prototypes with mass moved
    start = torch.tensor(np.array(protos), dtype=torch.float32)
    moved = ~torch.isclose(p.prototypes, start, atol=1e-6).all(-1)
    assert moved.tolist() == [[True, True], [True, False], [False, False]]


def test_momentum_default_lambda_moves_a_little():
    p, protos, emb, label, conf = _hand_case()
    prototype_learning(p, emb, label, conf, offset=0, K=2, update_assignment="argmax")
    want = _hand_expected(protos, False, 0.999)
    np.testing.assert_allclose(p.prototypes.numpy(), want, atol=1e-6)


def test_frozen_or_no_update_changes_nothing():
    for frozen, update in [(True, True), (False, False)]:
        p, protos, emb, label, conf = _hand_case()
        p.frozen = frozen
        before = p.prototypes.clone()
        out = prototype_learning(p, emb, label, conf, offset=0, K=2, momentum=0.5, update=update)
        assert torch.equal(p.prototypes, before)
        assert torch.equal(out.target, torch.tensor([0, 0, 1, 3, 2]))


def test_gumbel_update_is_reproducible_with_a_generator():
    results = []
    for _ in range(2):
        p, _, emb, label, conf = _hand_case()
        prototype_learning(
            p, emb, label, conf, offset=0, K=2, momentum=0.5, generator=torch.Generator().manual_seed(7)
        )
        results.append(p.prototypes.clone())
    assert torch.equal(results[0], results[1])
    torch.testing.assert_close(results[0].norm(dim=-1), torch.ones(3, 2))


def test_backward_after_update_works():
    # the update writes the buffer in place after the logits were computed from it
    p, _, emb, label, conf = _hand_case()
    emb = emb.clone().requires_grad_(True)
    out = prototype_learning(p, emb, label, conf, offset=0, K=2, momentum=0.5)
    loss = F.cross_entropy(out.logits, out.target)
    loss.backward()
    assert emb.grad is not None and torch.isfinite(emb.grad).all() and emb.grad.abs().sum() > 0


def test_assignment_is_per_class_sinkhorn():
    g = torch.Generator().manual_seed(5)
    p = Prototypes(6, 3, 8, generator=g)
    emb = torch.randn(40, 8, generator=g)
    label = torch.randint(0, 4, (40,), generator=g)
    out = prototype_learning(p, emb, label, torch.ones(40), offset=2, K=4, update=False)
    sim = p.similarity(emb)
    for k in range(4):
        sel = label == k
        want = sinkhorn(sim[sel, 2 + k], eps=0.05, iters=3)
        torch.testing.assert_close(out.assignment[sel], want)
        assert torch.equal(out.target[sel], want.argmax(dim=1) + 3 * k)


# ----------------------------------------------------------------------------------------------
# Corrected indexing for a dataset with offset > 0
# ----------------------------------------------------------------------------------------------


def test_offset_dataset_uses_its_own_prototypes():
    # dataset A: K=3 at offset 0; dataset B: K=2 at offset 3; M=2; prototype (j, m) = e_{j*M+m}
    j, m = 5, 2
    p = Prototypes(j, m, j * m)
    set_protos(p, torch.eye(j * m).view(j, m, j * m))
    e = torch.eye(j * m)
    # B's rows are 3 (e_6, e_7) and 4 (e_8, e_9); one pixel per slot (a lone pixel of a class
    # would get a uniform Sinkhorn row). Small components along dataset A's prototypes (e_0..e_3)
    # make every update visible.
    emb = torch.stack([e[9] + 0.3 * e[0], e[8] + 0.1 * e[2], e[6] + 0.2 * e[1], e[7] + 0.1 * e[3]])
    label = torch.tensor([1, 1, 0, 0])
    out = prototype_learning(
        p, emb, label, torch.ones(4), offset=3, K=2, momentum=0.5, update_assignment="argmax"
    )
    # logit columns are [offset*M, (offset+K)*M) = e_6..e_9 of the flattened similarities
    assert tuple(out.logits.shape) == (4, 4)
    want_logits = (F.normalize(emb, dim=1) @ e[6:10].T).abs()
    torch.testing.assert_close(out.logits, want_logits)
    assert out.logits.argmax(dim=1).tolist() == [3, 2, 0, 1]
    # targets = Sinkhorn argmax + M * local class
    assert out.target.tolist() == [1 * m + 1, 1 * m + 0, 0 * m + 0, 0 * m + 1]
    # the update passed the correct-classification mask (global argmax == offset + k) and moved
    # exactly dataset B's four prototypes, nothing of dataset A
    new = p.prototypes
    moved = ~torch.isclose(new, torch.eye(j * m).view(j, m, j * m), atol=1e-6).all(-1)
    expected = torch.zeros(j, m, dtype=torch.bool)
    expected[3:] = True
    assert torch.equal(moved, expected)
    want41 = F.normalize(0.5 * e[9] + 0.5 * F.normalize(emb[0], dim=0), dim=0)
    torch.testing.assert_close(new[4, 1], want41)
    want30 = F.normalize(0.5 * e[6] + 0.5 * F.normalize(emb[2], dim=0), dim=0)
    torch.testing.assert_close(new[3, 0], want30)


def test_offset_dataset_misclassified_pixel_does_not_update():
    j, m = 5, 2
    p = Prototypes(j, m, j * m)
    set_protos(p, torch.eye(j * m).view(j, m, j * m))
    e = torch.eye(j * m)
    # labelled B's class 1 (row 4) but closest to dataset A's row 1 -> masked out
    emb = (e[2] + 0.5 * e[9]).unsqueeze(0)
    before = p.prototypes.clone()
    prototype_learning(p, emb, torch.tensor([1]), torch.ones(1), offset=3, K=2, momentum=0.5)
    assert torch.equal(p.prototypes, before)


def test_offset_out_of_range_is_rejected():
    p = Prototypes(4, 2, 3)
    with pytest.raises(ValueError):
        prototype_learning(
            p, torch.randn(2, 3), torch.zeros(2, dtype=torch.long), torch.ones(2), offset=3, K=2
        )


def test_no_pixels():
    p = Prototypes(4, 2, 3)
    none = torch.zeros(0, dtype=torch.long)
    out = prototype_learning(p, torch.zeros(0, 3), none, torch.zeros(0), offset=1, K=2)
    assert tuple(out.logits.shape) == (0, 4) and out.target.numel() == 0


# ----------------------------------------------------------------------------------------------
# DDP average
# ----------------------------------------------------------------------------------------------


def test_all_reduce_is_noop_without_process_group():
    p = Prototypes(3, 2, 4)
    before = p.prototypes.clone()
    all_reduce_mean_(p)
    all_reduce_mean_(p.prototypes)
    assert torch.equal(p.prototypes, before)


def _ddp_worker(rank: int, world: int, init_file: str, result_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        p = Prototypes(2, 1, 2)
        with torch.no_grad():
            p.prototypes.fill_(float(rank + 1))
        all_reduce_mean_(p)
        frozen = Prototypes(2, 1, 2)
        with torch.no_grad():
            frozen.prototypes.fill_(float(rank + 1))
        frozen.frozen = True
        all_reduce_mean_(frozen)
        torch.save({"p": p.prototypes, "f": frozen.prototypes}, os.path.join(result_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_all_reduce_averages_over_two_gloo_ranks(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        got = torch.load(tmp_path / f"{rank}.pt", weights_only=True)
        torch.testing.assert_close(got["p"], torch.full((2, 1, 2), 1.5))
        torch.testing.assert_close(got["f"], torch.full((2, 1, 2), float(rank + 1)))


# ----------------------------------------------------------------------------------------------
# Soft k-means and cluster prototypes
# ----------------------------------------------------------------------------------------------


def _clustered_prototypes(j=8, m=3, f=16, c=4, noise=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(f)[:c]
    protos = torch.zeros(j, m, f)
    for kp in range(j):
        protos[kp] = centres[kp % c] + noise * torch.randn(m, f, generator=g)
    return F.normalize(protos, dim=-1), centres


def test_soft_kmeans_recovers_separated_clusters():
    protos, centres = _clustered_prototypes()
    flat = protos.reshape(-1, 16)
    res = soft_kmeans(flat, 4, beta=20, iters=100)
    truth = torch.arange(8).repeat_interleave(3) % 4
    assert torch.equal(res.assignment.argmax(dim=1), truth)
    cos = (res.centroids * centres).sum(dim=1)
    assert cos.min() > 0.99
    torch.testing.assert_close(res.assignment.sum(dim=1), torch.ones(24))


def test_choose_clusters_picks_true_count_and_maps_over_all_keypoints():
    protos, centres = _clustered_prototypes()
    # keypoint 5 (cluster 1, beyond the first C keypoints) sits exactly on its cluster centre
    protos[5] = centres[1]
    p = Prototypes(8, 3, 16)
    set_protos(p, protos)
    choice = choose_clusters(p, options=(2, 4, 6, 8), iters=100)
    assert choice.num_clusters == 4
    assert set(choice.errors) == {2, 4, 6}  # C >= J skipped
    cl = choice.clusters
    assert isinstance(cl, ClusterPrototypes) and cl.frozen
    assert tuple(cl.prototypes.shape) == (4, 3, 16)
    # each cluster maps to a keypoint of its own cluster; cluster 1 to keypoint 5
    assert [int(k) % 4 for k in cl.keypoint] == [0, 1, 2, 3]
    assert int(cl.keypoint[1]) == 5
    # cluster 1's M prototypes are keypoint 5's (the nearest to its centroid), not a copy of the
    # first C flattened prototypes
    torch.testing.assert_close(cl.prototypes[1], F.normalize(protos[5], dim=-1))
    assert not torch.allclose(cl.prototypes.reshape(-1, 16)[:4], p.prototypes.reshape(-1, 16)[:4])
    # the stored state survives a state-dict round trip
    other = ClusterPrototypes(4, 3, 16)
    other.load_state_dict(cl.state_dict())
    assert torch.equal(other.keypoint, cl.keypoint)


def test_choose_clusters_assignment_error_option():
    protos, _ = _clustered_prototypes()
    choice = choose_clusters(protos, options=(2, 4), iters=100, error="assignment")
    assert choice.num_clusters == 4
    with pytest.raises(ValueError):
        choose_clusters(protos, options=(8, 16))


# ----------------------------------------------------------------------------------------------
# Autocast
# ----------------------------------------------------------------------------------------------


def test_everything_fp32_under_bf16_autocast():
    g = torch.Generator().manual_seed(0)
    p = Prototypes(6, 3, 8, generator=g)
    emb_map = torch.randn(2, 8, 5, 4, generator=g).bfloat16().requires_grad_(True)
    target = torch.rand(2, 3, 5, 4, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hm = p.heatmap(emb_map, slice(2, 5))
        sim = p.similarity(emb_map[:, :, 0, 0])
        sk = sinkhorn(torch.rand(6, 3).bfloat16())
        px = sample_pixels(target, torch.ones(2, 3), emb_map, 0.5)
        out = prototype_learning(p, px.emb, px.label, px.conf, offset=2, K=3)
        loss = F.cross_entropy(out.logits, out.target) + hm.mean()
    for t in (hm, sim, sk, px.emb, out.logits, out.assignment, loss):
        assert t.dtype == torch.float32
    assert p.prototypes.dtype == torch.float32
    loss.backward()
    assert emb_map.grad is not None and torch.isfinite(emb_map.grad.float()).all()
