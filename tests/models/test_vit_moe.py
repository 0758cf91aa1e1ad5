"""ViT-MoE backbone: shapes, the ViTPose++ conventions, routed == masked, counts and FLOPs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from posebh.models.heads import HeatmapHead
from posebh.models.vit_moe import (
    SIZES,
    ViT,
    ViTMoE,
    build_backbone,
    build_vit,
    grid_size,
    layer_id,
    layer_lr_scale,
    no_weight_decay,
    resize_pos_embed,
    spec,
)
from posebh.skeletons import PAPER_MDT_DATASETS, get

PAPER_HW = (256, 192)
PATCH = 16
NUM_EXPERTS = len(PAPER_MDT_DATASETS)
MIXED_IDX = [3, 0, 5, 3, 1, 0, 3]  # unsorted, repeats, expert 2 and 4 absent


def small_moe(**kw) -> ViTMoE:
    args = dict(img_size=(64, 48), embed_dim=32, depth=2, num_heads=4, num_experts=NUM_EXPERTS, part_features=8)
    args.update(kw)
    return ViTMoE(**args)


def randomize_(module: torch.nn.Module, seed: int = 0) -> None:
    """Make every parameter (including LN affine and zero-init biases) non-trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))


# ----------------------------------------------------------------------------------------------
# hand-computed references
# ----------------------------------------------------------------------------------------------


def reference_forward(sd: dict, x: torch.Tensor, idx: list[int], depth: int, heads: int, part: int) -> torch.Tensor:
    """Official ViTPose++ math, written with functional ops on the raw state dict."""
    w = sd["patch_embed.proj.weight"]
    t = F.conv2d(x, w, sd["patch_embed.proj.bias"], stride=PATCH, padding=2)
    b, d, hp, wp = t.shape
    t = t.flatten(2).transpose(1, 2)
    pos = sd["pos_embed"]
    t = t + pos[:, 1:] + pos[:, :1]
    hd = d // heads
    for i in range(depth):
        p = f"blocks.{i}."
        h = F.layer_norm(t, (d,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-6)
        qkv = F.linear(h, sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"]).reshape(b, -1, 3, heads, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        a = ((q * hd**-0.5) @ k.transpose(-2, -1)).softmax(-1)
        o = (a @ v).transpose(1, 2).reshape(b, -1, d)
        t = t + F.linear(o, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        h = F.layer_norm(t, (d,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-6)
        h = F.gelu(F.linear(h, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"]))
        shared = F.linear(h, sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
        own = torch.stack([
            F.linear(h[j], sd[p + f"mlp.experts.{e}.weight"], sd[p + f"mlp.experts.{e}.bias"])
            for j, e in enumerate(idx)
        ])
        assert shared.shape[-1] == d - part and own.shape[-1] == part
        t = t + torch.cat([shared, own], -1)
    t = F.layer_norm(t, (d,), sd["last_norm.weight"], sd["last_norm.bias"], eps=1e-6)
    return t.transpose(1, 2).reshape(b, d, hp, wp)


def hand_params(d: int, depth: int, tokens: int, part: int | None = None, experts: int = 0) -> int:
    hidden = 4 * d
    block = 2 * 2 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * hidden + hidden)
    block += hidden * d + d if not experts else hidden * (d - part) + (d - part) + experts * (hidden * part + part)
    return (3 * PATCH * PATCH * d + d) + (1 + tokens) * d + depth * block + 2 * d


def hand_backbone_macs(d: int, depth: int, tokens: int, part: int, experts_run: int) -> int:
    """Per-sample MACs: patch embedding, qkv/proj/fc1/fc2 (+extra experts), attention matmuls."""
    per_token_block = 3 * d * d + d * d + 4 * d * d + 4 * d * (d - part) + experts_run * 4 * d * part
    attention = 2 * tokens * tokens * d
    return tokens * 3 * PATCH * PATCH * d + depth * (tokens * per_token_block + attention)


def hand_head_macs(d: int, grid: tuple[int, int], k: int, c: int = 256) -> int:
    hp, wp = grid
    return hp * wp * d * c * 16 + (2 * hp) * (2 * wp) * c * c * 16 + (4 * hp) * (4 * wp) * c * k


# ----------------------------------------------------------------------------------------------
# size table and shapes
# ----------------------------------------------------------------------------------------------


def test_size_table_matches_reference():
    expected = {  # D, depth, heads, drop path, part_features, layer decay (reference table 1.1)
        "s": (384, 12, 12, 0.1, 192, 0.8),
        "b": (768, 12, 12, 0.3, 192, 0.75),
        "l": (1024, 24, 16, 0.5, 256, 0.8),
        "h": (1280, 32, 16, 0.55, 320, 0.8),
    }
    for name, row in expected.items():
        s = spec(name)
        assert (s.embed_dim, s.depth, s.num_heads, s.drop_path_rate, s.part_features, s.layer_decay) == row
        assert s.mlp_ratio == 4 and s.img_size == PAPER_HW
    tiny = spec("TINY")
    assert tiny.part_features * 4 == tiny.embed_dim and tiny.embed_dim % tiny.num_heads == 0
    assert set(SIZES) == {"tiny", "s", "b", "l", "h"}
    with pytest.raises(KeyError):
        spec("xl")


def test_padded_patch_grid():
    assert grid_size(PAPER_HW) == (16, 12)
    assert grid_size((128, 96)) == (8, 6)
    m = small_moe(img_size=PAPER_HW)
    conv = m.patch_embed.proj
    assert conv.kernel_size == (16, 16) and conv.stride == (16, 16) and conv.padding == (2, 2)
    assert m.pos_embed.shape == (1, 1 + 16 * 12, 32)
    assert m(torch.randn(1, 3, *PAPER_HW), 0).shape == (1, 32, 16, 12)


@pytest.mark.parametrize("size", ["tiny", "s", "b"])
def test_output_shape_named_sizes(size):
    torch.manual_seed(0)
    m = build_backbone(size, num_experts=NUM_EXPERTS, img_size=PAPER_HW).eval()
    idx = torch.tensor([0, 5]) if size != "b" else torch.tensor([4])
    with torch.no_grad():
        out = m(torch.randn(len(idx), 3, *PAPER_HW), idx)
    assert out.shape == (len(idx), spec(size).embed_dim, 16, 12)
    assert torch.isfinite(out).all()


def test_tiny_default_input_is_demo_size():
    m = build_backbone("tiny", num_experts=NUM_EXPERTS).eval()
    with torch.no_grad():
        out = m(torch.randn(2, 3, 128, 96), torch.tensor([1, 2]))
    assert out.shape == (2, 192, 8, 6)


@pytest.mark.parametrize("size", ["l", "h"])
def test_large_sizes_construct_and_count(size):
    s = spec(size)
    with torch.device("meta"):
        moe = build_backbone(size, num_experts=NUM_EXPERTS)
        vit = build_vit(size)
    n_moe = sum(p.numel() for p in moe.parameters())
    n_vit = sum(p.numel() for p in vit.parameters())
    assert n_moe == hand_params(s.embed_dim, s.depth, 192, s.part_features, NUM_EXPERTS)
    assert n_vit == hand_params(s.embed_dim, s.depth, 192)
    published_plain = {"l": 303.3e6, "h": 630.9e6}[size]  # peers 4.1
    assert round(n_vit / 1e5) == round(published_plain / 1e5)


def test_parameter_count_vit_b():
    with torch.device("meta"):
        moe = build_backbone("b", num_experts=NUM_EXPERTS)
    n = sum(p.numel() for p in moe.parameters())
    assert n == hand_params(768, 12, 192, 192, NUM_EXPERTS)
    assert round(n / 1e5) == 1212  # 121.2 M: 85.8 M plain ViT-B + 35.4 M of five extra experts
    extra = 12 * (NUM_EXPERTS - 1) * (3072 * 192 + 192)
    assert round(extra / 1e5) == 354
    assert round((n - extra) / 1e5) == 858


def test_module_names_mirror_official_keys():
    m = small_moe()
    keys = set(m.state_dict())
    for k in ["pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "last_norm.weight",
              "blocks.1.norm1.weight", "blocks.1.attn.qkv.weight", "blocks.1.attn.qkv.bias",
              "blocks.1.attn.proj.weight", "blocks.1.norm2.bias", "blocks.1.mlp.fc1.weight",
              "blocks.1.mlp.fc2.weight", "blocks.1.mlp.experts.5.bias"]:
        assert k in keys, k
    assert m.state_dict()["blocks.0.mlp.fc2.weight"].shape == (32 - 8, 128)
    assert m.state_dict()["blocks.0.mlp.experts.0.weight"].shape == (8, 128)
    assert not any("cls_token" in k for k in keys)


def test_init_and_drop_path_ramp():
    torch.manual_seed(0)
    m = build_backbone("s", num_experts=2, img_size=PAPER_HW)
    assert abs(m.pos_embed.std().item() - 0.02) < 0.002
    w = m.blocks[3].mlp.fc1.weight
    assert abs(w.std().item() - 0.02) < 0.002  # timm trunc_normal_ (absolute bounds +-2, as official)
    assert (m.blocks[3].mlp.experts[1].bias == 0).all()
    rates = [0.0 if isinstance(b.drop_path, torch.nn.Identity) else b.drop_path.drop_prob for b in m.blocks]
    assert rates == pytest.approx([0.1 * i / 11 for i in range(12)])
    assert build_backbone("s", num_experts=2, drop_path_rate=0.0).blocks[-1].drop_path.__class__ is torch.nn.Identity


# ----------------------------------------------------------------------------------------------
# conventions
# ----------------------------------------------------------------------------------------------


def test_pos_embed_cls_slot_added_to_every_token():
    m = small_moe()
    with torch.no_grad():
        m.patch_embed.proj.weight.zero_()
        m.patch_embed.proj.bias.zero_()
    seen = {}
    m.blocks[0].register_forward_pre_hook(lambda mod, args: seen.update(x=args[0]))
    m(torch.randn(2, 3, 64, 48), torch.tensor([0, 1]))
    pos = m.pos_embed.detach()[0]
    expected = pos[0:1] + pos[1:]
    assert torch.allclose(seen["x"][0], expected) and torch.allclose(seen["x"][1], expected)
    assert not torch.allclose(seen["x"][0], pos[1:])  # the cls slot really contributes


def test_matches_functional_reference():
    torch.manual_seed(1)
    m = small_moe()
    randomize_(m)
    m.eval()
    x = torch.randn(len(MIXED_IDX), 3, 64, 48)
    with torch.no_grad():
        ref = reference_forward(m.state_dict(), x, MIXED_IDX, depth=2, heads=4, part=8)
        for routing in ("routed", "masked"):
            out = m(x, torch.tensor(MIXED_IDX), routing=routing)
            assert torch.allclose(out, ref, atol=1e-5), routing


def test_routed_equals_masked_outputs_and_gradients():
    torch.manual_seed(2)
    m = small_moe(depth=3)
    randomize_(m)
    x = torch.randn(len(MIXED_IDX), 3, 64, 48)
    idx = torch.tensor(MIXED_IDX)
    target = torch.randn(len(MIXED_IDX), 32, 4, 3)
    results = {}
    for routing in ("routed", "masked"):
        m.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_(True)
        out = m(xi, idx, routing=routing)
        (out * target).sum().backward()
        grads = {n: (p.grad if p.grad is not None else torch.zeros_like(p)) for n, p in m.named_parameters()}
        results[routing] = (out.detach(), xi.grad, grads)
    (o1, gx1, g1), (o2, gx2, g2) = results["routed"], results["masked"]
    assert torch.allclose(o1, o2, atol=1e-5)
    assert torch.allclose(gx1, gx2, atol=1e-5)
    for n in g1:
        assert torch.allclose(g1[n], g2[n], atol=1e-5, rtol=1e-4), n
    assert g2["blocks.0.mlp.experts.2.weight"].abs().max() == 0  # absent expert: no gradient either way
    assert g1["blocks.0.mlp.experts.3.weight"].abs().max() > 0


def test_sorted_and_single_expert_batches():
    torch.manual_seed(3)
    m = small_moe()
    randomize_(m)
    m.eval()
    x = torch.randn(4, 3, 64, 48)
    with torch.no_grad():
        per_sample = torch.cat([m(x[i:i + 1], e) for i, e in enumerate([0, 0, 2, 4])])
        sorted_batch = m(x, torch.tensor([0, 0, 2, 4]))
        as_int = m(x, 4)
        as_tensor = m(x, torch.full((4,), 4))
        masked = m(x, 4, routing="masked")
        numpy_int = m(x, np.int64(4))
    assert torch.allclose(per_sample, sorted_batch, atol=1e-5)
    assert torch.equal(numpy_int, as_int)
    assert torch.allclose(as_int, as_tensor, atol=1e-6) and torch.allclose(as_int, masked, atol=1e-5)


@pytest.mark.parametrize("bad", [torch.tensor([0, 6]), torch.tensor([-1, 0]), torch.tensor([0]), 7,
                                 torch.tensor([0.0, 1.0])])
def test_invalid_dataset_index(bad):
    m = small_moe()
    for routing in ("routed", "masked"):
        with pytest.raises(ValueError):
            m(torch.randn(2, 3, 64, 48), bad, routing=routing)


def test_wrong_input_size_and_pos_embed_resize():
    m = small_moe()
    with pytest.raises(ValueError, match="resize_pos_embed"):
        m(torch.randn(1, 3, 128, 96), 0)
    pos = torch.randn(1, 1 + 4 * 3, 8)
    same = resize_pos_embed(pos, (4, 3), (4, 3))
    assert same is pos
    big = resize_pos_embed(pos, (4, 3), (8, 6))
    assert big.shape == (1, 1 + 48, 8) and torch.equal(big[:, 0], pos[:, 0])
    back = resize_pos_embed(pos, (4, 3), (4, 3 * 1))
    assert torch.equal(back, pos)
    constant = resize_pos_embed(torch.ones(1, 13, 2), (4, 3), (8, 6))
    assert torch.allclose(constant, torch.ones(1, 49, 2), atol=1e-5)


def test_plain_vit_forward():
    v = ViT(img_size=(64, 48), embed_dim=32, depth=2, num_heads=4)
    assert v(torch.randn(2, 3, 64, 48)).shape == (2, 32, 4, 3)
    assert v.state_dict()["blocks.0.mlp.fc2.weight"].shape == (32, 128)
    assert not any("experts" in k for k in v.state_dict())


# ----------------------------------------------------------------------------------------------
# optimizer helpers (reference 5.1)
# ----------------------------------------------------------------------------------------------


def test_layer_id_and_lr_scale():
    depth = 12
    assert layer_id("backbone.pos_embed", depth) == 0
    assert layer_id("backbone.patch_embed.proj.weight", depth) == 0
    assert layer_id("blocks.0.attn.qkv.weight", depth) == 1
    assert layer_id("backbone.blocks.11.mlp.experts.3.bias", depth) == 12
    assert layer_id("backbone.last_norm.weight", depth) == 13
    assert layer_id("heads.coco.final_layer.weight", depth) == 13
    assert layer_id("embedding.neck.conv1.weight", depth) == 13
    assert layer_id("model.blocks.2.x", depth, prefix="model.") == 3
    assert layer_lr_scale("backbone.patch_embed.proj.weight", depth, 0.75) == pytest.approx(0.75**13)
    assert 0.023 < 0.75**13 < 0.025  # "patch_embed/pos_embed 0.75^13 ~ 0.024"
    assert layer_lr_scale("backbone.blocks.0.norm1.weight", depth, 0.75) == pytest.approx(0.75**12)
    assert layer_lr_scale("heads.aic.final_layer.bias", depth, 0.75) == 1.0


def test_layer_ids_cover_every_backbone_parameter():
    m = small_moe(depth=3)
    ids = {n: layer_id(n, m.num_layers) for n, _ in m.named_parameters()}
    assert {ids["pos_embed"], ids["patch_embed.proj.weight"]} == {0}
    assert ids["last_norm.bias"] == 4
    assert {v for n, v in ids.items() if n.startswith("blocks.")} == {1, 2, 3}


def test_no_weight_decay():
    m = small_moe()
    decided = {n: no_weight_decay("backbone." + n, p) for n, p in m.named_parameters()}
    assert decided["pos_embed"] and decided["blocks.0.norm1.weight"] and decided["last_norm.weight"]
    assert decided["blocks.0.attn.qkv.bias"] and decided["blocks.0.mlp.experts.1.bias"]
    assert not decided["blocks.0.attn.qkv.weight"] and not decided["patch_embed.proj.weight"]
    assert not decided["blocks.0.mlp.experts.1.weight"]
    bn = torch.nn.BatchNorm2d(4)
    assert no_weight_decay("heads.coco.deconv_layers.1.weight", bn.weight)


# ----------------------------------------------------------------------------------------------
# FLOPs: route, don't mask
# ----------------------------------------------------------------------------------------------


def _count_macs(fn) -> float:
    """MACs of ``fn``; the math SDPA backend so that the attention matmuls are counted on CPU."""
    with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 2


@pytest.mark.slow
def test_flops_routed_vs_masked_vit_b():
    """Per-sample MACs of ViT-B at 256x192, each sample with its own expert and head (routed) vs
    every expert and every head on every sample (ViTPose++). FLOPs per sample do not depend on the
    batch mix, so one sample suffices."""
    torch.manual_seed(0)
    s = spec("b")
    m = build_backbone("b", num_experts=NUM_EXPERTS).eval()
    names = list(PAPER_MDT_DATASETS)
    heads = {n: HeatmapHead(s.embed_dim, get(n).num_keypoints).eval() for n in names}
    own = 3
    x = torch.randn(1, 3, *PAPER_HW)
    features = torch.randn(1, s.embed_dim, 16, 12)

    backbone_routed = _count_macs(lambda: m(x, own, routing="routed"))
    backbone_masked = _count_macs(lambda: m(x, own, routing="masked"))
    head = {n: _count_macs(lambda n=n: heads[n](features)) for n in names}
    assert backbone_routed == pytest.approx(hand_backbone_macs(768, 12, 192, 192, 1), rel=1e-6)
    assert backbone_masked == pytest.approx(hand_backbone_macs(768, 12, 192, 192, NUM_EXPERTS), rel=1e-6)
    assert backbone_routed / 1e9 == pytest.approx(17.10, abs=0.01)  # peers 4.1: ViTPose-B 17.10 GMACs
    for n in names:
        assert head[n] == pytest.approx(hand_head_macs(768, (16, 12), get(n).num_keypoints), rel=1e-6)

    total_routed = backbone_routed + head[names[own]]
    total_masked = backbone_masked + sum(head.values())
    assert total_routed / 1e9 == pytest.approx(18.5, abs=0.05)  # peers 4.1: ~18.5 vs ~32.5
    assert total_masked / 1e9 == pytest.approx(32.5, abs=0.15)
    assert total_masked / total_routed == pytest.approx(1.75, abs=0.02)


def test_grad_checkpointing_is_exact():
    m = small_moe(depth=3, drop_path_rate=0.3)
    randomize_(m)
    x = torch.randn(4, 3, 64, 48)
    idx = torch.tensor([1, 0, 1, 5])
    results = []
    for ckpt in (False, True):
        m.grad_checkpointing = ckpt
        m.zero_grad(set_to_none=True)
        torch.manual_seed(7)
        out = m(x, idx)
        out.square().mean().backward()
        results.append((out.detach(), {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}))
    (o1, g1), (o2, g2) = results
    assert torch.allclose(o1, o2, atol=1e-6) and g1.keys() == g2.keys()
    assert all(torch.allclose(g1[n], g2[n], atol=1e-6) for n in g1)
