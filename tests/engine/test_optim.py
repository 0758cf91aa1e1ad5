import pytest
import torch
from torch import nn

from posebh.engine.optim import LRSchedule, build_optimizer, lr_factor, param_groups
from posebh.engine.stages import StageSpec

DEPTH = 12
RATE = 0.75


class Named(nn.Module):
    """A 12-block ViT-B-like naming stub."""

    def __init__(self):
        super().__init__()
        bb = nn.Module()
        bb.patch_embed = nn.Module()
        bb.patch_embed.proj = nn.Conv2d(3, 4, 2)
        bb.pos_embed = nn.Parameter(torch.zeros(1, 6, 4))
        bb.blocks = nn.ModuleList()
        for _ in range(DEPTH):
            b = nn.Module()
            b.norm1 = nn.LayerNorm(4)
            b.attn = nn.Module()
            b.attn.qkv = nn.Linear(4, 12)
            bb.blocks.append(b)
        bb.last_norm = nn.LayerNorm(4)
        self.backbone = bb
        self.heads = nn.ModuleList([nn.Linear(4, 2)])
        self.embedding = nn.Module()
        self.embedding.blocks = nn.ModuleList([nn.Linear(4, 4)])  # "blocks" outside the backbone


def by_param(groups):
    return {n: g for g in groups for n in g["param_names"]}


def test_layer_decay_scales_match_the_reference():
    m = Named()
    m.heads.requires_grad_(False)  # frozen parameters are grouped too
    groups = by_param(param_groups(m, lr=1e-3, weight_decay=0.1, layer_decay=RATE))
    assert len(groups) == sum(1 for _ in m.parameters())
    for i in range(DEPTH):
        for leaf in ("norm1.weight", "attn.qkv.weight", "attn.qkv.bias"):
            g = groups[f"backbone.blocks.{i}.{leaf}"]
            assert g["lr_scale"] == pytest.approx(RATE ** (DEPTH - i)) and g["layer_id"] == i + 1
            assert g["lr"] == pytest.approx(1e-3 * RATE ** (DEPTH - i))
    for name in ("backbone.patch_embed.proj.weight", "backbone.pos_embed"):
        assert groups[name]["lr_scale"] == pytest.approx(RATE ** 13)  # ~0.024
    assert groups["backbone.pos_embed"]["lr_scale"] == pytest.approx(0.0237573, rel=1e-5)
    for name in ("backbone.last_norm.weight", "heads.0.weight", "embedding.blocks.0.weight"):
        assert groups[name]["lr_scale"] == 1.0 and groups[name]["layer_id"] == DEPTH + 1


def test_no_weight_decay_membership():
    groups = by_param(param_groups(Named(), lr=1e-3, weight_decay=0.1, layer_decay=RATE))
    no_decay = {n for n, g in groups.items() if g["weight_decay"] == 0.0}
    expected = {n for n, p in Named().named_parameters() if p.ndim == 1 or n.endswith(".bias")} | {"backbone.pos_embed"}
    assert no_decay == expected
    assert groups["backbone.blocks.3.attn.qkv.weight"]["weight_decay"] == 0.1
    assert groups["backbone.patch_embed.proj.weight"]["weight_decay"] == 0.1


def test_without_layer_decay_every_scale_is_one():
    groups = param_groups(Named(), lr=2e-3, weight_decay=0.0)
    assert {g["lr_scale"] for g in groups} == {1.0}


def test_build_optimizer_kinds():
    base = {"name": "s", "epochs": 1, "batch_size": 1}
    adamw = build_optimizer(Named(), StageSpec.from_dict({**base, "optimizer": {"lr": 1e-3, "weight_decay": 0.1}, "layer_decay": RATE}))
    adam = build_optimizer(Named(), StageSpec.from_dict({**base, "optimizer": {"type": "adam", "lr": 5e-4}}))
    assert type(adamw) is torch.optim.AdamW and type(adam) is torch.optim.Adam
    assert max(g["lr"] for g in adamw.param_groups) == pytest.approx(1e-3)
    assert min(g["lr"] for g in adamw.param_groups) == pytest.approx(1e-3 * RATE ** 13)
    with pytest.raises(ValueError, match="needs backbone blocks"):
        build_optimizer(nn.Linear(2, 2), StageSpec.from_dict({**base, "optimizer": {"lr": 1}, "layer_decay": 0.8}))


@pytest.mark.parametrize(
    "it, epoch, expected",
    [
        (0, 0, 0.001),
        (250, 0, 1 - 0.5 * 0.999),
        (499, 0, 1 - (1 / 500) * 0.999),
        (500, 0, 1.0),
        (10_000, 49, 1.0),
        (10_000, 50, 0.1),
        (20_000, 89, 0.1),
        (20_000, 90, 0.01),
        (100, 50, 0.1 * (1 - 0.8 * 0.999)),  # warm-up multiplies the decayed lr
    ],
)
def test_lr_factor(it, epoch, expected):
    assert lr_factor(it, epoch, warmup_iters=500, warmup_ratio=0.001, steps=[50, 90], gamma=0.1) == pytest.approx(expected)


def test_schedule_sets_every_group_and_restores():
    opt = torch.optim.AdamW(param_groups(Named(), lr=1e-3, weight_decay=0.1, layer_decay=RATE))
    sched = LRSchedule(opt, warmup_iters=500, steps=[50, 90])
    assert sched.lr_factor(250, 0) == pytest.approx(0.5005) and sched.factor == pytest.approx(0.001)  # pure
    sched.apply(250, 0)
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(1e-3 * g["lr_scale"] * 0.5005)
    other = LRSchedule(torch.optim.AdamW(param_groups(Named(), lr=1e-3, weight_decay=0.1, layer_decay=RATE)))
    other.load_state_dict(sched.state_dict())
    assert [g["lr"] for g in other.optimizer.param_groups] == [g["lr"] for g in opt.param_groups]
