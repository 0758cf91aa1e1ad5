"""SAR heads: shapes, names and initialisation; the multi-head container; PoseBH with ``head: sar``
through the objective of the baseline and stage-2 configs; a tiny training run; inference through
the model, its split and ``predict_image``; head cost against the heatmap head."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from posebh.data.sar_codec import SARCodec, SAROutput
from posebh.engine import objective as objective_module
from posebh.engine.objective import ObjectiveConfig, PoseBHObjective
from posebh.engine.stages import StageSpec
from posebh.models.heads import HeatmapHead, MultiHead
from posebh.models.posebh import ModelConfig, PoseBH
from posebh.models.sar import MultiSARHead, SARHead, head_cost
from posebh.models.vit_moe import spec

CONF = Path(__file__).resolve().parents[2] / "conf" / "base"
D, HP, WP = 48, 4, 3


@pytest.fixture
def one_thread():
    """These runs are tiny: on a shared 2-core box, one intra-op thread is several times faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------------------------
# The head
# ----------------------------------------------------------------------------------------------


def test_sar_head_shapes_names_and_init():
    head = SARHead(D, 17, deconv_channels=32)
    out = head(torch.randn(2, D, HP, WP))
    assert isinstance(out, SAROutput)
    assert out.logits.shape == (2, 17, 4 * HP, 4 * WP)
    assert out.offsets.shape == (2, 17, 2, 4 * HP, 4 * WP)
    assert out.heatmap.shape == (2, 17, 4 * HP, 4 * WP)
    names = {n for n, _ in head.named_parameters()}
    assert {"logit_conv.weight", "logit_conv.bias", "offset_conv.weight", "offset_conv.bias",
            "heatmap_conv.weight", "heatmap_conv.bias", "deconv_layers.0.weight"} <= names
    # focal prior 0.01 on the confidence and heatmap logits; offsets start near 0 (every cell
    # regresses its own location)
    assert torch.allclose(head.logit_conv.bias, torch.full((17,), -math.log(99)))
    assert torch.allclose(head.heatmap_conv.bias, torch.full((17,), -math.log(99)))
    assert torch.equal(head.offset_conv.bias, torch.zeros(34))
    assert head.offset_conv.weight.std() < 0.002


def test_sar_head_variants():
    feats = torch.randn(1, D, HP, WP)
    no_aux = SARHead(D, 5, deconv_channels=16, with_heatmap=False)
    assert no_aux(feats).heatmap is None
    with pytest.raises(ValueError, match="auxiliary"):
        no_aux(feats, heatmap_only=True)
    only = SARHead(D, 5, deconv_channels=16)(feats, heatmap_only=True)
    assert only.logits is None and only.offsets is None and only.heatmap.shape == (1, 5, 4 * HP, 4 * WP)
    tokens = SARHead(D, 5, num_deconv=0)(feats)  # SAR directly on the token grid
    assert tokens.logits.shape == (1, 5, HP, WP) and tokens.offsets.shape == (1, 5, 2, HP, WP)


def test_head_outputs_stay_fp32_under_autocast():
    head = SARHead(D, 5, deconv_channels=16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(torch.randn(2, D, HP, WP))
    assert {t.dtype for t in out} == {torch.float32}


def test_sar_output_tuple_index_selects_keypoints_in_every_field():
    out = SARHead(D, 4, deconv_channels=16)(torch.randn(2, D, HP, WP))
    order = torch.tensor([3, 0])
    sel = out[:, order]
    assert isinstance(sel, SAROutput)
    assert torch.equal(sel.logits, out.logits[:, order]) and torch.equal(sel.offsets, out.offsets[:, order])
    assert torch.equal(sel.heatmap, out.heatmap[:, order])
    assert out[0] is out.logits  # plain indices keep tuple semantics
    logits, offsets, heatmap = out
    assert heatmap is out.heatmap


def test_multi_sar_head_mirrors_multi_head():
    ks = {"coco": 17, "mpii": 16}
    multi = MultiSARHead(D, ks, deconv_channels=16)
    ref = MultiHead(D, ks, deconv_channels=16)
    assert multi.names == ref.names == ["coco", "mpii"]
    feats = torch.randn(3, D, HP, WP)
    everyone = multi(feats, ["mpii"])
    assert everyone["mpii"].logits.shape == (3, 16, 4 * HP, 4 * WP)
    own = multi(feats, {"coco": torch.tensor([0, 2]), "mpii": torch.tensor([True, False, False])})
    assert own["coco"].logits.shape[0] == 2 and own["mpii"].logits.shape[0] == 1
    torch.testing.assert_close(own["coco"].offsets, multi["coco"](feats[[0, 2]]).offsets)
    assert multi(feats, ["coco"], heatmap_only=True)["coco"].logits is None
    with pytest.raises(KeyError, match="aic"):
        multi(feats, ["aic"])
    with pytest.raises(TypeError):
        multi(feats, "coco")


# ----------------------------------------------------------------------------------------------
# ModelConfig and PoseBH
# ----------------------------------------------------------------------------------------------


def test_model_config_head_option():
    assert ModelConfig().head == "heatmap"
    assert "head" not in ModelConfig().to_dict()  # heatmap configs are saved as before
    cfg = ModelConfig.from_dict({"size": "tiny", "datasets": ["coco"], "head": "sar"})
    assert cfg.to_dict()["head"] == "sar" and ModelConfig.from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()
    assert ModelConfig.from_dict(ModelConfig(datasets=("coco",)).to_dict()).head == "heatmap"
    with pytest.raises(ValueError, match="unknown head"):
        ModelConfig(head="regression")
    params = yaml.safe_load((CONF / "parameters_model.yml").read_text())
    assert params["model"]["head"] == "heatmap"


def test_posebh_builds_sar_heads_under_the_same_prefix():
    sar = PoseBH(ModelConfig(size="tiny", datasets=("coco", "mpii"), head="sar"))
    hm = PoseBH(ModelConfig(size="tiny", datasets=("coco", "mpii")))
    assert isinstance(sar.heads, MultiSARHead) and isinstance(hm.heads, MultiHead)
    assert sar.is_sar and not hm.is_sar
    keys = set(sar.state_dict())
    assert {"heads.coco.logit_conv.weight", "heads.mpii.offset_conv.weight", "heads.coco.heatmap_conv.bias"} <= keys
    # everything but the heads' final layers is the same
    strip = {k for k in keys if not k.startswith("heads.") or ".deconv_layers." in k}
    assert strip == {k for k in hm.state_dict() if not k.endswith(("final_layer.weight", "final_layer.bias"))}


# ----------------------------------------------------------------------------------------------
# The objective with SAR heads
# ----------------------------------------------------------------------------------------------


def _stage(name: str) -> StageSpec:
    d = yaml.safe_load((CONF / f"parameters_{name}.yml").read_text())[name]["stage"]
    return StageSpec.from_dict(dict(d, amp="off"))


def _objective(cfg: ModelConfig, **over) -> PoseBHObjective:
    d = yaml.safe_load((CONF / "parameters_model.yml").read_text())["objective"]
    d.update(cps_options=[8, 12], cps_iters=20, **over)  # fewer, smaller clusters: quick
    return PoseBHObjective(ObjectiveConfig.from_dict(d), datasets=cfg.datasets, input_wh=cfg.input_wh,
                           heatmap_wh=cfg.heatmap_wh)


def _batch(cfg: ModelConfig, dataset_idx: list[int], seed: int = 0) -> dict:
    from posebh import skeletons

    g = torch.Generator().manual_seed(seed)
    w, h = cfg.input_wh
    idx = torch.tensor(dataset_idx)
    targets = {}
    for d in sorted(set(dataset_idx)):
        pos = (idx == d).nonzero().flatten()
        k = skeletons.get(cfg.datasets[d]).num_keypoints
        kp = torch.rand(len(pos), k, 2, generator=g) * torch.tensor([w - 1.0, h - 1.0])
        vis = (torch.rand(len(pos), k, generator=g) > 0.2).float()
        targets[d] = {"index": pos, "keypoints": kp, "visible": vis, "in_crop": torch.ones_like(vis)}
    return {"image": torch.randn(len(idx), 3, h, w, generator=g), "dataset_idx": idx, "targets": targets}


@pytest.mark.parametrize("stage", ["baseline", "stage2"])
def test_objective_with_sar_heads_gives_finite_terms(stage, one_thread):
    torch.manual_seed(0)
    cfg = ModelConfig(size="tiny", datasets=("coco", "mpii", "ap10k"), head="sar")
    model = PoseBH(cfg)
    spec_ = _stage(stage)
    obj = _objective(cfg)
    obj.start_stage(model, spec_, 0)
    obj.start_epoch(model, spec_, 0)
    out = obj(model, _batch(cfg, [0, 1, 0, 2]), epoch=0, step=0)
    expected = {"loss", "sar", "sar_aux"} | ({"prototypes", "phm", "css", "cps"} if stage == "stage2" else set())
    assert set(out) == expected
    assert all(torch.isfinite(v).all() for v in out.values())
    assert out["loss"].item() == pytest.approx(sum(out[k].item() for k in expected - {"loss"}), rel=1e-5)
    out["loss"].backward()
    grads = [p.grad for n, p in model.named_parameters() if n.startswith("heads.coco.offset_conv")]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


def test_objective_heatmap_path_still_gives_the_heatmap_term(one_thread):
    cfg = ModelConfig(size="tiny", datasets=("coco", "mpii"))
    model = PoseBH(cfg)
    obj = _objective(cfg)
    spec_ = _stage("baseline")
    obj.start_stage(model, spec_, 0)
    obj.start_epoch(model, spec_, 0)
    out = obj(model, _batch(cfg, [0, 1]), epoch=0, step=0)
    assert set(out) == {"loss", "heatmap"}


def test_css_with_sar_heads_uses_the_sigmoid_of_the_aux_branch(monkeypatch, one_thread):
    torch.manual_seed(0)
    cfg = ModelConfig(size="tiny", datasets=("coco", "mpii"), head="sar")
    model = PoseBH(cfg)
    spec_ = _stage("stage2")
    obj = _objective(cfg)
    obj.start_stage(model, spec_, 0)
    obj.start_epoch(model, spec_, 0)
    seen = []
    real = objective_module.L.css_loss

    def spy(head_hm, proto_hm, emb_map, *args, **kw):
        seen.append(head_hm.detach().clone())
        return real(head_hm, proto_hm, emb_map, *args, **kw)

    monkeypatch.setattr(objective_module.L, "css_loss", spy)
    batch = _batch(cfg, [0, 1, 1])
    model.backbone.eval()  # no drop-path: the features below are the ones the objective saw
    obj(model, batch, epoch=0, step=0)
    with torch.no_grad():  # the heads stay in train mode (batch-statistics BN), as in the objective
        feats = model.features(batch["image"], batch["dataset_idx"])
        coco_on_mpii = model.heads["coco"](feats[[1, 2]]).heatmap
    assert len(seen) == 2 and seen[0].shape == (2, 17, *coco_on_mpii.shape[-2:])
    torch.testing.assert_close(seen[0], torch.sigmoid(coco_on_mpii), atol=1e-5, rtol=1e-5)


def test_sar_loss_settings_do_not_change_heatmap_fingerprints():
    base = ObjectiveConfig()
    assert "sar" not in repr(base)
    assert "sar_lambda=8.0" in repr(ObjectiveConfig(sar_lambda=8.0))


# ----------------------------------------------------------------------------------------------
# A tiny training run
# ----------------------------------------------------------------------------------------------


def test_tiny_training_run_lowers_the_loss_and_the_pixel_error(one_thread):
    """30 Adam steps of the whole tiny model through the objective on 4 fixed crops."""
    torch.manual_seed(0)
    cfg = ModelConfig(size="tiny", datasets=("coco",), head="sar")
    model = PoseBH(cfg)
    batch = _batch(cfg, [0, 0, 0, 0], seed=1)
    kp = batch["targets"][0]["keypoints"]
    vis = batch["targets"][0]["visible"] > 0
    spec_ = _stage("baseline")
    obj = _objective(cfg)
    obj.start_stage(model, spec_, 0)
    obj.start_epoch(model, spec_, 0)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    codec = SARCodec(cfg.input_wh, cfg.heatmap_wh)

    def pixel_error() -> float:
        model.eval()
        with torch.no_grad():
            out = model.predict(batch["image"], "coco")
        model.train()
        xy, _ = codec.decode(out.logits, out.offsets)
        return (xy - kp).norm(dim=-1)[vis].mean().item()

    err0, losses = pixel_error(), []
    for step in range(30):
        out = obj(model, batch, epoch=0, step=step)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["sar"].item())
    err1 = pixel_error()
    assert losses[-1] < 0.8 * losses[0], losses
    assert err1 < 0.75 * err0, (err0, err1)


# ----------------------------------------------------------------------------------------------
# Inference
# ----------------------------------------------------------------------------------------------


def test_predict_image_and_the_split_model_with_sar_heads(one_thread):
    from posebh.evaluation.inference import make_heatmap_fn, predict_image
    from posebh.models.export import split_model

    torch.manual_seed(0)
    model = PoseBH(ModelConfig(size="tiny", datasets=("coco", "aic"), head="sar")).eval()
    cfg = model.config
    image = np.random.default_rng(0).integers(0, 255, (150, 120, 3), dtype=np.uint8)
    fn = make_heatmap_fn(model, "aic")
    kps, boxes = predict_image(fn, image, [[10, 10, 80, 120]], skeleton="aic", input_wh=cfg.input_wh,
                               heatmap_wh=cfg.heatmap_wh)
    assert kps.shape == (1, 14, 3) and np.isfinite(kps).all()
    assert ((kps[..., 2] > 0) & (kps[..., 2] < 1)).all()  # sigmoid confidences
    per = split_model(model)["aic"]
    x = torch.randn(2, 3, *cfg.input_hw)
    with torch.no_grad():
        a, b = per(x), model.predict(x, "aic")
    torch.testing.assert_close(a.offsets, b.offsets, atol=1e-4, rtol=1e-4)
    split_kps, _ = predict_image(per, image, [[10, 10, 80, 120]], skeleton="aic", input_wh=cfg.input_wh,
                                 heatmap_wh=cfg.heatmap_wh)
    np.testing.assert_allclose(split_kps, kps, atol=1e-2)


# ----------------------------------------------------------------------------------------------
# Head cost
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", ["tiny", "b"])
def test_head_cost_sar_vs_heatmap(size, one_thread):
    """Parameters and FLOPs per sample (K = 17): SAR swaps the 1x1 heatmap conv (C -> K) for three
    (C -> K, 2K, K), so it adds 3K(C + 1) weights and 2 x 3K x C FLOPs per grid cell."""
    s = spec(size)
    d, c, k = s.embed_dim, s.head_channels, 17
    th, tw = s.img_size[0] // 16, s.img_size[1] // 16
    cells = (4 * th) * (4 * tw)
    heat = head_cost(HeatmapHead(d, k, c), d, (th, tw))
    sar = head_cost(SARHead(d, k, c), d, (th, tw))
    tokens = head_cost(SARHead(d, k, c, num_deconv=0), d, (th, tw))
    assert sar["params"] - heat["params"] == 3 * k * (c + 1)
    assert sar["flops"] - heat["flops"] == 2 * 3 * k * c * cells
    assert tokens["flops"] == 2 * 4 * k * d * th * tw  # three 1x1 convs (4K outputs) on the tokens
    if size == "b":  # peers.md 4.1: a classic-decoder head is about 1.42 GMACs per ViT-B sample
        assert heat["flops"] / 2 / 1e9 == pytest.approx(1.42, abs=0.01)
    print(f"\n{size}: heatmap {heat}, sar {sar}, sar on tokens {tokens}")
