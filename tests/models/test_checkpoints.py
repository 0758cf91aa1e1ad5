"""Checkpoint import/export: official ViTPose++/PoseBH layouts, MAE weights, our own format.

Official checkpoints are built here from the documented key names and shapes (posebh-method.md
1.1-1.4, peers.md 3.2/3.6); nothing is downloaded. ``reference_forward`` computes the official
ViTPose++ forward straight from such a state dict, so a loaded model is checked against the
documented computation, not only against itself.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from posebh import skeletons
from posebh.models.checkpoints import (
    CheckpointError,
    LoadReport,
    export_official,
    infer_official_arch,
    load_mae_vit,
    load_model,
    load_official_vitpose_plus,
    read_checkpoint,
    save_model,
)
from posebh.models.posebh import ModelConfig, build_model
from posebh.models.split import split_expert
from posebh.models.vit_moe import ViT, grid_size, resize_pos_embed, spec

PAPER = skeletons.PAPER_MDT_DATASETS
BN_EPS = 1e-5
LN_EPS = 1e-6
EMBED = 64  # PoseBH's embedding width F
PROTOS = 3  # M


# ----------------------------------------------------------------------------------------------
# Official checkpoints from the documented names and shapes
# ----------------------------------------------------------------------------------------------


def _bn(state, prefix, c, g):
    state[prefix + "weight"] = 1 + 0.1 * torch.randn(c, generator=g)
    state[prefix + "bias"] = 0.1 * torch.randn(c, generator=g)
    state[prefix + "running_mean"] = 0.1 * torch.randn(c, generator=g)
    state[prefix + "running_var"] = 0.5 + torch.rand(c, generator=g)
    state[prefix + "num_batches_tracked"] = torch.tensor(7)


def _deconvs(state, prefix, dim, c, g):
    state[prefix + "deconv_layers.0.weight"] = 0.05 * torch.randn(dim, c, 4, 4, generator=g)
    _bn(state, prefix + "deconv_layers.1.", c, g)
    state[prefix + "deconv_layers.3.weight"] = 0.05 * torch.randn(c, c, 4, 4, generator=g)
    _bn(state, prefix + "deconv_layers.4.", c, g)


def official_state(*, dim, depth, part, datasets=PAPER, head_channels, grid, proto=False, seed=0):
    """mmpose-layout ViTPose++ (``proto=True``: PoseBH) state dict with random values."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape, s=0.05: s * torch.randn(*shape, generator=g)  # noqa: E731
    hidden = 4 * dim
    st = {
        "backbone.patch_embed.proj.weight": r(dim, 3, 16, 16, s=0.02),
        "backbone.patch_embed.proj.bias": r(dim),
        "backbone.pos_embed": r(1, 1 + grid[0] * grid[1], dim, s=0.2),
    }
    for i in range(depth):
        b = f"backbone.blocks.{i}."
        st |= {
            b + "norm1.weight": 1 + r(dim), b + "norm1.bias": r(dim),
            b + "attn.qkv.weight": r(3 * dim, dim), b + "attn.qkv.bias": r(3 * dim),
            b + "attn.proj.weight": r(dim, dim), b + "attn.proj.bias": r(dim),
            b + "norm2.weight": 1 + r(dim), b + "norm2.bias": r(dim),
            b + "mlp.fc1.weight": r(hidden, dim), b + "mlp.fc1.bias": r(hidden),
            b + "mlp.fc2.weight": r(dim - part, hidden), b + "mlp.fc2.bias": r(dim - part),
        }  # fmt: skip
        for e in range(len(datasets)):
            st[b + f"mlp.experts.{e}.weight"] = r(part, hidden)
            st[b + f"mlp.experts.{e}.bias"] = r(part)
    st["backbone.last_norm.weight"] = 1 + r(dim)
    st["backbone.last_norm.bias"] = r(dim)
    for i, name in enumerate(datasets):
        pre = "keypoint_head." if i == 0 else f"associate_keypoint_heads.{i - 1}."
        _deconvs(st, pre, dim, head_channels, g)
        k = skeletons.get(name).num_keypoints
        st[pre + "final_layer.weight"] = r(k, head_channels, 1, 1, s=0.2)
        st[pre + "final_layer.bias"] = r(k)
    if proto:
        p = "proto_head."
        _deconvs(st, p, dim, head_channels, g)
        st[p + "neck.conv1.weight"], st[p + "neck.conv1.bias"] = r(EMBED, head_channels, 3, 3), r(EMBED)
        _bn(st, p + "neck.bn1.", EMBED, g)
        st[p + "neck.conv2.weight"], st[p + "neck.conv2.bias"] = r(EMBED, EMBED, 3, 3), r(EMBED)
        _bn(st, p + "neck.bn2.", EMBED, g)
        if head_channels != EMBED:
            st[p + "neck.downsample.0.weight"] = r(EMBED, head_channels, 1, 1)
            _bn(st, p + "neck.downsample.1.", EMBED, g)
        st[p + "head.0.weight"], st[p + "head.0.bias"] = r(EMBED, EMBED, 3, 3), r(EMBED)
        _bn(st, p + "head.1.", EMBED, g)
        st[p + "head.3.weight"], st[p + "head.3.bias"] = r(EMBED, EMBED, 1, 1), r(EMBED)
        j = skeletons.mdt_space(datasets).total
        st[p + "kpt_prototype.prototypes"] = F.normalize(torch.randn(j, PROTOS, EMBED, generator=g), dim=-1)
    return st


def _head_ref(st, pre, f):
    for conv, bn in ((0, 1), (3, 4)):
        f = F.conv_transpose2d(f, st[f"{pre}deconv_layers.{conv}.weight"], stride=2, padding=1)
        b = f"{pre}deconv_layers.{bn}."
        f = F.batch_norm(f, st[b + "running_mean"], st[b + "running_var"], st[b + "weight"], st[b + "bias"], False,
                         0.0, BN_EPS)
        f = F.relu(f)
    return F.conv2d(f, st[pre + "final_layer.weight"], st[pre + "final_layer.bias"])


def reference_forward(st, x, expert, num_heads):
    """The official ViTPose++ test forward (mmpose vit_moe + TopdownHeatmapSimpleHead), written
    from the documented computation: padded patch conv, cls slot added to every token, pre-norm
    blocks, FFN output = [shared fc2 | expert fc2], last norm, deconv head of dataset ``expert``."""
    w = st["backbone.patch_embed.proj.weight"]
    f = F.conv2d(x, w, st["backbone.patch_embed.proj.bias"], stride=16, padding=2)
    b, d, gh, gw = f.shape
    t = f.flatten(2).transpose(1, 2)
    pos = st["backbone.pos_embed"]
    t = t + pos[:, 1:] + pos[:, :1]
    depth = 1 + max(int(k.split(".")[2]) for k in st if k.startswith("backbone.blocks."))
    for i in range(depth):
        p = f"backbone.blocks.{i}."
        y = F.layer_norm(t, (d,), st[p + "norm1.weight"], st[p + "norm1.bias"], LN_EPS)
        qkv = F.linear(y, st[p + "attn.qkv.weight"], st[p + "attn.qkv.bias"])
        q, k, v = qkv.reshape(b, -1, 3, num_heads, d // num_heads).permute(2, 0, 3, 1, 4)
        a = ((q * (d // num_heads) ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
        y = F.linear((a @ v).transpose(1, 2).reshape(b, -1, d), st[p + "attn.proj.weight"], st[p + "attn.proj.bias"])
        t = t + y
        y = F.layer_norm(t, (d,), st[p + "norm2.weight"], st[p + "norm2.bias"], LN_EPS)
        h = F.gelu(F.linear(y, st[p + "mlp.fc1.weight"], st[p + "mlp.fc1.bias"]))
        shared = F.linear(h, st[p + "mlp.fc2.weight"], st[p + "mlp.fc2.bias"])
        own = F.linear(h, st[p + f"mlp.experts.{expert}.weight"], st[p + f"mlp.experts.{expert}.bias"])
        t = t + torch.cat([shared, own], dim=-1)
    t = F.layer_norm(t, (d,), st["backbone.last_norm.weight"], st["backbone.last_norm.bias"], LN_EPS)
    feats = t.transpose(1, 2).reshape(b, d, gh, gw)
    pre = "keypoint_head." if expert == 0 else f"associate_keypoint_heads.{expert - 1}."
    return _head_ref(st, pre, feats)


def _tiny_official(**kw):
    s = spec("tiny")
    args = dict(dim=s.embed_dim, depth=s.depth, part=s.part_features, head_channels=s.head_channels,
                grid=grid_size(s.img_size))
    return official_state(**(args | kw))


def _perturbed_tiny(datasets=PAPER, seed=0):
    torch.manual_seed(seed)
    m = build_model(ModelConfig(size="tiny", datasets=datasets))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
        for name, buf in m.named_buffers():
            if name.endswith("running_var"):
                buf.copy_(0.5 + torch.rand(buf.shape, generator=g))
            elif name.endswith("running_mean"):
                buf.copy_(0.1 * torch.randn(buf.shape, generator=g))
    return m.eval()


def _same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return [k for k in sa if not torch.equal(sa[k], sb[k])]


# ----------------------------------------------------------------------------------------------
# Official import
# ----------------------------------------------------------------------------------------------


def test_tiny_round_trip_through_the_official_layout(tmp_path):
    model = _perturbed_tiny()
    official = export_official(model)
    assert "keypoint_head.final_layer.weight" in official
    assert official["associate_keypoint_heads.4.final_layer.weight"].shape[0] == 133  # WholeBody is head 5
    assert "proto_head.kpt_prototype.prototypes" in official and "proto_head.neck.conv1.weight" in official
    assert not any(k.startswith(("heads.", "embedding.", "prototypes.")) for k in official)
    # as a real file: mmcv nesting under "state_dict", DDP "module." prefixes, extra metadata
    path = tmp_path / "posebh_official.pth"
    torch.save({"meta": {"epoch": 100}, "state_dict": {f"module.{k}": v for k, v in official.items()}}, path)
    loaded, report = load_official_vitpose_plus(path)
    assert report.ok and not report.missing and not report.unmapped and not report.initialised
    assert len(report.loaded) == len(model.state_dict()) and report.source == str(path)
    assert not report.reshaped and not report.ignored
    assert _same_state(model, loaded) == []
    x = torch.randn(2, 3, *model.config.input_hw)
    with torch.no_grad():
        for d in ("coco", "mpii", "coco_wholebody"):
            assert torch.equal(loaded.predict(x, d), model.predict(x, d))
        assert torch.equal(loaded.prototype_heatmap(x, "ap10k"), model.prototype_heatmap(x, "ap10k"))
    # and back again: the same official dict
    again = export_official(loaded)
    assert again.keys() == official.keys() and all(torch.equal(again[k], official[k]) for k in official)
    # an in-memory state dict is copied, not adopted: the model and the dict stay independent
    from_memory, _ = load_official_vitpose_plus(official)
    with torch.no_grad():
        from_memory.backbone.pos_embed.add_(1.0)
    assert torch.equal(official["backbone.pos_embed"], again["backbone.pos_embed"])


def test_loaded_model_computes_the_documented_official_forward():
    st = _tiny_official(proto=True, seed=3)
    model, report = load_official_vitpose_plus(st)
    assert report.ok and model.config.size == "tiny" and not model.training
    x = torch.randn(2, 3, *model.config.input_hw, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for e, d in enumerate(PAPER):
            got = model.predict(x, d)
            ref = reference_forward(st, x, e, spec("tiny").num_heads)
            assert got.shape == ref.shape == (2, skeletons.get(d).num_keypoints, 32, 24)
            assert torch.allclose(got, ref, atol=1e-4, rtol=1e-4), (d, (got - ref).abs().max())
        assert not torch.allclose(model.predict(x, "coco"), model.predict(x, "ap10k")[:, :17], atol=1e-3)


def test_small_checkpoint_with_narrower_experts():
    """The released ViTPose++-S has experts 96 wide (fc2 288 + 96 rows), not the config's 192."""
    s = spec("s")
    st = official_state(dim=s.embed_dim, depth=s.depth, part=96, head_channels=s.head_channels,
                        grid=grid_size(s.img_size), seed=5)
    arch = infer_official_arch(st)
    assert (arch.size, arch.part_features, arch.num_experts, arch.grid) == ("s", 96, 6, (16, 12))
    model, report = load_official_vitpose_plus(st)
    assert report.ok and not report.missing
    assert model.config.part_features == 96 and model.backbone.blocks[0].mlp.fc2.out_features == 288
    # a ViTPose++ checkpoint has no proto head: the embedding module and prototypes keep their init
    assert any(k.startswith("embedding.") for k in report.initialised) and "prototypes.prototypes" in report.initialised
    back = export_official(model, prototypes=False)
    assert back.keys() == st.keys() and all(torch.equal(back[k], st[k]) for k in st)
    x = torch.randn(1, 3, 256, 192, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for e in (0, 5):
            got = model.predict(x, PAPER[e])
            assert torch.allclose(got, reference_forward(st, x, e, s.num_heads), atol=1e-4, rtol=1e-4)
    # the config's 192 would not fit: the error names the key and both shapes
    with pytest.raises(CheckpointError, match=r"size 'b' has width 768"):
        load_official_vitpose_plus(st, size="b")


def test_wrong_shape_fails_naming_key_and_shapes_unless_lenient():
    st = _tiny_official()
    key = "backbone.blocks.2.attn.proj.weight"
    st[key] = torch.zeros(5, 7)
    with pytest.raises(CheckpointError, match=rf"{key}.*source \(5, 7\) vs target \(192, 192\)"):
        load_official_vitpose_plus(st)
    model, report = load_official_vitpose_plus(st, lenient=True)
    assert not report.ok and len(report.mismatched) == 1 and key in report.mismatched[0]
    assert key not in report.loaded and key not in report.missing
    assert model.backbone.blocks[2].attn.proj.weight.abs().sum() > 0  # kept its initialisation


def test_extra_and_missing_keys_fail_naming_them_unless_lenient():
    st = _tiny_official()
    st["keypoint_head.surprise.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"keypoint_head\.surprise\.weight"):
        load_official_vitpose_plus(st)
    _, report = load_official_vitpose_plus(st, lenient=True)
    assert report.unmapped == ("keypoint_head.surprise.weight",)

    st = _tiny_official()
    del st["associate_keypoint_heads.1.final_layer.bias"]
    with pytest.raises(CheckpointError, match=r"heads\.mpii\.final_layer\.bias"):
        load_official_vitpose_plus(st)
    _, report = load_official_vitpose_plus(st, lenient=True)
    assert report.missing == ("heads.mpii.final_layer.bias",)


def test_cps_centroids_are_ignored_and_a_missing_proto_part_is_fatal():
    st = _tiny_official(proto=True)
    st["proto_head.cluster_prototype.prototypes"] = torch.randn(96, 3, EMBED)
    _, report = load_official_vitpose_plus(st)
    assert report.ignored == ("proto_head.cluster_prototype.prototypes",) and report.ok
    del st["proto_head.head.3.weight"]  # a PoseBH checkpoint must bring its whole proto head
    with pytest.raises(CheckpointError, match=r"embedding\.head\.3\.weight"):
        load_official_vitpose_plus(st)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda st: {k: v for k, v in st.items() if ".mlp.experts." not in k}, "plain"),
        (lambda st: {k: v for k, v in st.items() if k != "backbone.patch_embed.proj.weight"}, "not a ViTPose"),
        (lambda st: st | {"backbone.blocks.0.mlp.fc2.weight": torch.zeros(100, 768)}, r"100 \+ 48 != width 192"),
    ],
)
def test_not_a_vitpose_plus_checkpoint(edit, message):
    with pytest.raises(CheckpointError, match=message):
        load_official_vitpose_plus(edit(_tiny_official()))


def test_dataset_count_must_match_the_experts():
    with pytest.raises(CheckpointError, match="6 experts per block but 2 datasets"):
        load_official_vitpose_plus(_tiny_official(), datasets=("coco", "aic"))
    st = _tiny_official(datasets=("coco", "aic"))
    model, report = load_official_vitpose_plus(st, datasets=("coco", "aic"))
    assert report.ok and model.datasets == ("coco", "aic")


def test_other_input_size_resizes_the_position_embedding():
    st = _tiny_official()
    model, report = load_official_vitpose_plus(st, img_size=(256, 192))
    assert report.reshaped == ("backbone.pos_embed",)
    assert model.backbone.grid_size == (16, 12) and model.config.input_hw == (256, 192)
    expected = resize_pos_embed(st["backbone.pos_embed"], (8, 6), (16, 12))
    assert torch.equal(model.backbone.pos_embed.data, expected)
    assert torch.equal(model.backbone.pos_embed.data[:, 0], st["backbone.pos_embed"][:, 0])


def test_load_report_summary_names_every_bucket():
    r = LoadReport(loaded=("a",), missing=("b",), source="x.pth")
    assert not r.ok and "1 loaded" in r.summary() and "1 missing" in r.summary() and "b" in r.problems()


# ----------------------------------------------------------------------------------------------
# MAE
# ----------------------------------------------------------------------------------------------


def mae_state(dim, depth, *, side=14, patch=16, seed=0):
    """An MAE pretraining checkpoint (timm names) with its decoder."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: 0.05 * torch.randn(*shape, generator=g)  # noqa: E731
    st = {"cls_token": r(1, 1, dim), "pos_embed": r(1, 1 + side * side, dim), "mask_token": r(1, 1, 16),
          "patch_embed.proj.weight": r(dim, 3, patch, patch), "patch_embed.proj.bias": r(dim),
          "norm.weight": 1 + r(dim), "norm.bias": r(dim),
          "decoder_embed.weight": r(16, dim), "decoder_blocks.0.norm1.weight": r(16), "decoder_pred.bias": r(3)}
    for i in range(depth):
        b = f"blocks.{i}."
        st |= {b + "norm1.weight": 1 + r(dim), b + "norm1.bias": r(dim), b + "attn.qkv.weight": r(3 * dim, dim),
               b + "attn.qkv.bias": r(3 * dim), b + "attn.proj.weight": r(dim, dim), b + "attn.proj.bias": r(dim),
               b + "norm2.weight": 1 + r(dim), b + "norm2.bias": r(dim), b + "mlp.fc1.weight": r(4 * dim, dim),
               b + "mlp.fc1.bias": r(4 * dim), b + "mlp.fc2.weight": r(dim, 4 * dim), b + "mlp.fc2.bias": r(dim)}
    return st


def test_mae_weights_load_into_the_moe_backbone(tmp_path):
    s = spec("tiny")
    st = mae_state(s.embed_dim, s.depth)
    path = tmp_path / "mae_pretrain.pth"
    torch.save({"model": st}, path)
    model = build_model(ModelConfig(size="tiny"))
    heads_before = {k: v.clone() for k, v in model.heads.state_dict().items()}
    report = load_mae_vit(path, model)
    assert report.ok and not report.missing and not report.unmapped
    assert set(report.ignored) == {"cls_token", "mask_token", "decoder_embed.weight", "decoder_blocks.0.norm1.weight",
                                   "decoder_pred.bias"}
    assert "backbone.pos_embed" in report.reshaped and "backbone.blocks.0.mlp.experts.5.weight" in report.reshaped
    assert all(k.startswith("backbone.") for k in report.loaded)
    bb = model.backbone
    # 14x14 MAE grid -> the 8x6 pose grid; the cls slot (added to every token) is kept
    assert torch.equal(bb.pos_embed.data, resize_pos_embed(st["pos_embed"], (14, 14), (8, 6)))
    assert torch.equal(bb.last_norm.weight.data, st["norm.weight"])
    # every split starts as the MAE ViT: shared rows + expert rows == MAE's fc2
    for e in (0, 3, 5):
        vit = split_expert(bb, e)
        for i in range(s.depth):
            assert torch.equal(vit.blocks[i].mlp.fc2.weight.data, st[f"blocks.{i}.mlp.fc2.weight"])
            assert torch.equal(vit.blocks[i].mlp.fc2.bias.data, st[f"blocks.{i}.mlp.fc2.bias"])
            assert torch.equal(vit.blocks[i].attn.qkv.weight.data, st[f"blocks.{i}.attn.qkv.weight"])
    assert all(torch.equal(v, model.heads.state_dict()[k]) for k, v in heads_before.items())  # heads untouched


def test_mae_into_a_plain_vit_and_a_14px_patch_kernel():
    s = spec("tiny")
    st = mae_state(s.embed_dim, s.depth, side=16, patch=14)
    vit = ViT(img_size=s.img_size, embed_dim=s.embed_dim, depth=s.depth, num_heads=s.num_heads)
    report = load_mae_vit(st, vit)
    assert report.ok and set(report.reshaped) == {"pos_embed", "patch_embed.proj.weight"}
    w = vit.patch_embed.proj.weight.data
    assert torch.equal(w[:, :, 1:15, 1:15], st["patch_embed.proj.weight"])  # zero-padded 14 -> 16
    assert w[:, :, 0].abs().sum() == 0 and w[:, :, :, 15].abs().sum() == 0
    assert torch.equal(vit.blocks[1].mlp.fc2.weight.data, st["blocks.1.mlp.fc2.weight"])


def test_mae_of_another_width_fails_naming_the_key():
    model = build_model(ModelConfig(size="tiny"))
    before = model.backbone.blocks[0].attn.qkv.weight.detach().clone()
    st = mae_state(96, spec("tiny").depth)
    with pytest.raises(CheckpointError, match=r"backbone\.pos_embed \(from pos_embed\): source \(1, 49, 96\) vs target \(1, 49, 192\)"):
        load_mae_vit(st, model)
    assert torch.equal(model.backbone.blocks[0].attn.qkv.weight, before)  # a failed load changes nothing
    st = mae_state(192, spec("tiny").depth)
    del st["norm.bias"]
    with pytest.raises(CheckpointError, match=r"backbone\.last_norm\.bias"):
        load_mae_vit(st, model)
    report = load_mae_vit(st, model, lenient=True)
    assert report.missing == ("backbone.last_norm.bias",)


# ----------------------------------------------------------------------------------------------
# Our own format
# ----------------------------------------------------------------------------------------------


def test_save_and_load_model(tmp_path):
    model = _perturbed_tiny(datasets=("coco", "ap10k"))
    path = save_model(tmp_path / "sub" / "model.pt", model)
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]  # no temporary left behind
    payload = torch.load(path, weights_only=True)  # plain types and tensors only
    assert payload["config"]["datasets"] == ["coco", "ap10k"] and payload["format"] == "posebh"
    loaded = load_model(path)
    assert loaded.config.to_dict() == model.config.to_dict() and not loaded.training
    assert _same_state(model, loaded) == []
    x = torch.randn(1, 3, *model.config.input_hw)
    with torch.no_grad():
        assert torch.equal(loaded.predict(x, "ap10k"), model.predict(x, "ap10k"))


def test_save_refuses_non_plain_config(tmp_path):
    model = build_model(ModelConfig(size="tiny", datasets=("coco",), extra={"hook": object()}))
    with pytest.raises(TypeError, match=r"extra\.hook"):
        save_model(tmp_path / "m.pt", model)
    assert not any(tmp_path.iterdir())


def test_load_model_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        load_model(tmp_path / "nowhere.pt")
    junk = tmp_path / "junk.pt"
    rng = np.random.default_rng(0)
    for size in (1, 2, 8, 64, 256, 4096) * 40:  # arbitrary bytes provoke many exception types in torch's unpickler
        junk.write_bytes(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
        with pytest.raises(CheckpointError, match="junk.pt: not a readable PyTorch checkpoint"):
            load_model(junk)
    good = tmp_path / "good.pt"
    save_model(good, _perturbed_tiny(datasets=("coco",)))
    junk.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="junk.pt: not a readable PyTorch checkpoint"):
        load_model(junk)
    official = tmp_path / "official.pth"
    torch.save({"state_dict": export_official(_perturbed_tiny(datasets=("coco",)))}, official)
    with pytest.raises(CheckpointError, match="load_official_vitpose_plus"):
        load_model(official)
    # a config that does not match the weights
    model = build_model(ModelConfig(size="tiny", datasets=("coco", "aic")))
    path = save_model(tmp_path / "m.pt", model)
    payload = torch.load(path, weights_only=True)
    payload["config"]["datasets"] = ["coco", "mpii"]
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"m\.pt: the weights do not match.*heads\.mpii"):
        load_model(path)
    payload["config"]["size"] = "gigantic"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="bad model config.*gigantic"):
        load_model(path)


class _Payload:
    """Unpickling this runs ``os.makedirs(marker)``: the side effect a weights-only load must prevent."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def test_code_execution_payload_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"backbone.pos_embed": torch.zeros(1)}, "hook": _Payload(marker)}, path)
    for load in (read_checkpoint, load_model, load_official_vitpose_plus,
                 lambda p: load_mae_vit(p, build_model(ModelConfig(size="tiny", datasets=("coco",))))):
        with pytest.raises(CheckpointError, match="evil.pth: refused: unpickling it would import os.makedirs"):
            load(path)
    assert not marker.exists()


def test_grid_inference_of_odd_position_embeddings():
    st = _tiny_official()
    st["backbone.pos_embed"] = torch.zeros(1, 1 + 7, 192)
    with pytest.raises(CheckpointError, match="7 patch slots.*pass img_size"):
        load_official_vitpose_plus(st)


def test_the_same_model_saves_to_the_same_bytes_under_any_name(tmp_path):
    """Atomic saves go through randomly named temporaries; the bytes must not depend on the name."""
    model = _perturbed_tiny(datasets=("coco",))
    save_model(tmp_path / "a.pt", model)
    save_model(tmp_path / "b" / "other_name.pt", model)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b" / "other_name.pt").read_bytes()
