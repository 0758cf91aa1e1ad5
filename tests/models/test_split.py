"""Splitting a ViT-MoE into plain per-dataset ViTs."""

from __future__ import annotations

import pytest
import torch

from posebh.models.split import split_expert, split_state_dict
from posebh.models.vit_moe import ViT, ViTMoE, build_backbone, build_vit

NUM_EXPERTS = 6


def moe(seed: int = 0, **kw) -> ViTMoE:
    torch.manual_seed(seed)
    args = dict(img_size=(64, 48), embed_dim=32, depth=3, num_heads=4, num_experts=NUM_EXPERTS, part_features=8,
                drop_path_rate=0.2)
    args.update(kw)
    m = ViTMoE(**args)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return m


@pytest.mark.parametrize("routing", ["routed", "masked"])
def test_each_split_equals_its_expert(routing):
    m = moe().eval()
    x = torch.randn(3, 3, 64, 48)
    with torch.no_grad():
        outs = []
        for e in range(NUM_EXPERTS):
            vit = split_expert(m, e)
            assert isinstance(vit, ViT) and not vit.training
            expected = m(x, torch.full((3,), e), routing=routing)
            got = vit(x)
            assert torch.allclose(got, expected, atol=1e-5), e
            outs.append(got)
    assert not torch.allclose(outs[0], outs[1], atol=1e-3)  # the experts really differ


def test_fc2_rows_and_copied_weights():
    m = moe()
    e = 4
    vit = split_expert(m, e)
    for i in range(m.depth):
        fc2, own = m.blocks[i].mlp.fc2, m.blocks[i].mlp.experts[e]
        assert torch.equal(vit.blocks[i].mlp.fc2.weight[:24], fc2.weight)
        assert torch.equal(vit.blocks[i].mlp.fc2.weight[24:], own.weight)
        assert torch.equal(vit.blocks[i].mlp.fc2.bias, torch.cat([fc2.bias, own.bias]))
        assert torch.equal(vit.blocks[i].attn.qkv.weight, m.blocks[i].attn.qkv.weight)
    assert torch.equal(vit.pos_embed, m.pos_embed) and torch.equal(vit.last_norm.bias, m.last_norm.bias)
    assert vit.blocks[2].drop_path.drop_prob == pytest.approx(0.2)
    with torch.no_grad():
        vit.pos_embed.zero_()
    assert m.pos_embed.abs().sum() > 0  # a copy, not shared storage


def test_split_keeps_train_mode():
    m = moe().train()
    assert split_expert(m, 0).training


def test_split_state_dict_with_checkpoint_prefixes():
    m = moe()
    sd = {f"backbone.{k}": v for k, v in m.state_dict().items()}
    sd["keypoint_head.final_layer.weight"] = torch.randn(17, 256, 1, 1)
    sd["associate_keypoint_heads.0.final_layer.bias"] = torch.randn(14)
    out = split_state_dict(sd, 2)
    assert "keypoint_head.final_layer.weight" in out and "associate_keypoint_heads.0.final_layer.bias" in out
    assert not any(".experts." in k for k in out)
    assert out["backbone.blocks.1.mlp.fc2.weight"].shape == (32, 128)
    plain = {k.removeprefix("backbone."): v for k, v in out.items() if k.startswith("backbone.")}
    vit = ViT(img_size=(64, 48), embed_dim=32, depth=3, num_heads=4)
    vit.load_state_dict(plain, strict=True)


def test_split_errors():
    m = moe()
    with pytest.raises(ValueError):
        split_expert(m, NUM_EXPERTS)
    with pytest.raises(ValueError, match="not a ViT-MoE"):
        split_state_dict(ViT(img_size=(64, 48), embed_dim=32, depth=1, num_heads=4).state_dict(), 0)
    sd = m.state_dict()
    del sd["blocks.1.mlp.experts.3.weight"], sd["blocks.1.mlp.experts.3.bias"]
    with pytest.raises(ValueError, match="expert 3 missing"):
        split_state_dict(sd, 3)


def test_split_vit_b_is_plain_vit_b():
    with torch.device("meta"):
        big = build_backbone("b", num_experts=NUM_EXPERTS)
        plain = build_vit("b")
    sd = split_state_dict(big.state_dict(), 5)
    assert {k: v.shape for k, v in sd.items()} == {k: v.shape for k, v in plain.state_dict().items()}
    assert round(sum(v.numel() for v in sd.values()) / 1e5) == 858  # ViTPose-B 85.8 M
