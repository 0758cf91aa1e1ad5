"""Heatmap heads, the keypoint-embedding module and the multi-head container."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from posebh.models.heads import HeatmapHead, KeypointEmbedding, MultiHead
from posebh.skeletons import PAPER_MDT_DATASETS, get, mdt_space

D, HP, WP = 48, 4, 3


def randomize_(module: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)


def bn(x, sd, p):
    return F.batch_norm(x, sd[p + "running_mean"], sd[p + "running_var"], sd[p + "weight"], sd[p + "bias"],
                        training=False, eps=1e-5)


def deconvs(x, sd, p="deconv_layers."):
    for i in (0, 3):
        x = F.relu(bn(F.conv_transpose2d(x, sd[f"{p}{i}.weight"], stride=2, padding=1), sd, f"{p}{i + 1}."))
    return x


def test_heatmap_head_shape_and_official_keys():
    head = HeatmapHead(D, 17)
    out = head(torch.randn(2, D, HP, WP))
    assert out.shape == (2, 17, 4 * HP, 4 * WP)
    params = {n for n, _ in head.named_parameters()}
    assert params == {"deconv_layers.0.weight", "deconv_layers.1.weight", "deconv_layers.1.bias",
                      "deconv_layers.3.weight", "deconv_layers.4.weight", "deconv_layers.4.bias",
                      "final_layer.weight", "final_layer.bias"}
    sd = head.state_dict()
    assert sd["deconv_layers.0.weight"].shape == (D, 256, 4, 4)  # ConvTranspose2d: (in, out, k, k)
    assert sd["deconv_layers.3.weight"].shape == (256, 256, 4, 4)
    assert sd["final_layer.weight"].shape == (17, 256, 1, 1)


def test_heatmap_head_paper_shape():
    head = HeatmapHead(768, 133)
    assert head(torch.randn(1, 768, 16, 12)).shape == (1, 133, 64, 48)


def test_heatmap_head_matches_functional_reference():
    torch.manual_seed(0)
    head = HeatmapHead(D, 5, deconv_channels=16)
    randomize_(head)
    head.eval()
    x = torch.randn(3, D, HP, WP)
    sd = head.state_dict()
    ref = F.conv2d(deconvs(x, sd), sd["final_layer.weight"], sd["final_layer.bias"])
    assert torch.allclose(head(x), ref, atol=1e-5)


def test_heatmap_head_init():
    torch.manual_seed(0)
    head = HeatmapHead(768, 17)
    for name in ("deconv_layers.0.weight", "deconv_layers.3.weight", "final_layer.weight"):
        w = head.state_dict()[name]
        assert abs(w.std().item() - 0.001) < 1e-4 and abs(w.mean().item()) < 1e-4, name
    assert (head.final_layer.bias == 0).all()
    assert (head.deconv_layers[1].weight == 1).all() and (head.deconv_layers[4].bias == 0).all()


def test_embedding_shape_and_official_keys():
    emb = KeypointEmbedding(D)
    out = emb(torch.randn(2, D, HP, WP))
    assert out.shape == (2, 64, 4 * HP, 4 * WP)
    params = {n for n, _ in emb.named_parameters()}
    expected = {"deconv_layers.0.weight", "deconv_layers.1.weight", "deconv_layers.1.bias",
                "deconv_layers.3.weight", "deconv_layers.4.weight", "deconv_layers.4.bias",
                "neck.conv1.weight", "neck.conv1.bias", "neck.bn1.weight", "neck.bn1.bias",
                "neck.conv2.weight", "neck.conv2.bias", "neck.bn2.weight", "neck.bn2.bias",
                "neck.downsample.0.weight", "neck.downsample.1.weight", "neck.downsample.1.bias",
                "head.0.weight", "head.0.bias", "head.1.weight", "head.1.bias", "head.3.weight", "head.3.bias"}
    assert params == expected
    sd = emb.state_dict()
    assert sd["neck.conv1.weight"].shape == (64, 256, 3, 3)
    assert sd["neck.downsample.0.weight"].shape == (64, 256, 1, 1)
    assert sd["head.0.weight"].shape == (64, 64, 3, 3) and sd["head.3.weight"].shape == (64, 64, 1, 1)
    assert emb(torch.randn(1, D, 16, 12)).shape == (1, 64, 64, 48)


def test_embedding_matches_functional_reference():
    torch.manual_seed(1)
    emb = KeypointEmbedding(D, deconv_channels=24, channels=8, out_channels=6)
    randomize_(emb)
    emb.eval()
    x = torch.randn(2, D, HP, WP)
    sd = emb.state_dict()
    y = deconvs(x, sd)
    main = F.silu(bn(F.conv2d(y, sd["neck.conv1.weight"], sd["neck.conv1.bias"], padding=1), sd, "neck.bn1."))
    main = bn(F.conv2d(main, sd["neck.conv2.weight"], sd["neck.conv2.bias"], padding=1), sd, "neck.bn2.")
    short = bn(F.conv2d(y, sd["neck.downsample.0.weight"]), sd, "neck.downsample.1.")
    z = F.silu(main + short)
    z = F.silu(bn(F.conv2d(z, sd["head.0.weight"], sd["head.0.bias"], padding=1), sd, "head.1."))
    ref = F.conv2d(z, sd["head.3.weight"], sd["head.3.bias"])
    out = emb(x)
    assert out.shape == (2, 6, 4 * HP, 4 * WP)
    assert torch.allclose(out, ref, atol=1e-5)


def test_embedding_residual_structure_by_hooks():
    torch.manual_seed(2)
    emb = KeypointEmbedding(D, deconv_channels=24, channels=8)
    randomize_(emb)
    seen = {}
    for name in ("neck.bn2", "neck.downsample", "neck"):
        emb.get_submodule(name).register_forward_hook(lambda m, a, o, name=name: seen.update({name: o}))
    emb.train()
    emb(torch.randn(2, D, HP, WP))
    assert torch.allclose(seen["neck"], F.silu(seen["neck.bn2"] + seen["neck.downsample"]), atol=1e-6)
    assert not torch.allclose(seen["neck"], F.silu(seen["neck.bn2"]), atol=1e-3)  # the shortcut contributes


def test_embedding_identity_shortcut_when_widths_match():
    emb = KeypointEmbedding(D, deconv_channels=8, channels=8)
    assert isinstance(emb.neck.downsample, torch.nn.Identity)
    assert not any("downsample" in n for n in emb.state_dict())


def test_embedding_init():
    torch.manual_seed(0)
    emb = KeypointEmbedding(768)
    sd = emb.state_dict()
    for name in ("deconv_layers.0.weight", "neck.conv1.weight", "neck.downsample.0.weight", "head.0.weight"):
        assert abs(sd[name].std().item() - 0.001) < 1e-4, name
    for name in ("neck.conv1.bias", "neck.conv2.bias", "head.0.bias", "head.3.bias", "neck.bn1.bias"):
        assert (sd[name] == 0).all(), name
    for name in ("neck.bn1.weight", "neck.bn2.weight", "neck.downsample.1.weight", "head.1.weight"):
        assert (sd[name] == 1).all(), name


def paper_heads(in_channels=D, **kw) -> MultiHead:
    return MultiHead(in_channels, {d: get(d).num_keypoints for d in PAPER_MDT_DATASETS}, **kw)


def test_multihead_paper_keypoint_counts():
    heads = paper_heads(deconv_channels=8)
    assert heads.names == list(PAPER_MDT_DATASETS)
    assert [heads[n].num_keypoints for n in heads.names] == [17, 14, 16, 17, 17, 133]
    assert sum(heads[n].num_keypoints for n in heads.names) == mdt_space(PAPER_MDT_DATASETS).total == 214


def test_multihead_runs_only_requested_heads():
    torch.manual_seed(0)
    heads = paper_heads(deconv_channels=8)
    calls = []
    for n in heads.names:
        heads[n].register_forward_hook(lambda m, a, o, n=n: calls.append(n))
    f = torch.randn(3, D, HP, WP)
    out = heads(f, ["mpii", "coco_wholebody"])
    assert calls == ["mpii", "coco_wholebody"] and list(out) == ["mpii", "coco_wholebody"]
    assert out["mpii"].shape == (3, 16, 4 * HP, 4 * WP) and out["coco_wholebody"].shape[1] == 133
    sum(o.sum() for o in out.values()).backward()
    assert heads["aic"].final_layer.weight.grad is None and heads["mpii"].final_layer.weight.grad is not None


def test_multihead_subsets():
    torch.manual_seed(0)
    heads = paper_heads(deconv_channels=8).eval()
    f = torch.randn(5, D, HP, WP)
    idx = torch.tensor([0, 3])
    mask = torch.tensor([False, True, True, False, False])
    out = heads(f, {"coco": idx, "aic": mask})
    assert torch.allclose(out["coco"], heads["coco"](f)[idx], atol=1e-6)
    assert torch.allclose(out["aic"], heads["aic"](f)[mask], atol=1e-6)
    assert out["aic"].shape == (2, 14, 4 * HP, 4 * WP)


def test_multihead_errors():
    heads = paper_heads(deconv_channels=8)
    f = torch.randn(1, D, HP, WP)
    with pytest.raises(KeyError):
        heads(f, ["coco", "ochuman"])
    with pytest.raises(TypeError):
        heads(f, "coco")


def test_six_vit_b_heads_parameter_count():
    with torch.device("meta"):
        heads = paper_heads(768)
    n = sum(p.numel() for p in heads.parameters())
    per_head_without_final = 768 * 256 * 16 + 256 * 256 * 16 + 2 * 2 * 256
    assert n == 6 * per_head_without_final + sum(256 * k + k for k in (17, 14, 16, 17, 17, 133))
    assert round(n / 1e5) == 252  # peers 4.1: six heads 25.2 M


def test_multihead_state_dict_keys_are_by_dataset():
    heads = MultiHead(D, {"coco": 17, "aic": 14}, deconv_channels=8)
    keys = set(heads.state_dict())
    assert "coco.final_layer.weight" in keys and "aic.deconv_layers.4.running_var" in keys
    assert all(k.split(".")[0] in ("coco", "aic") for k in keys)
