"""The method's training stages on a tiny model and the committed demo images, with the real
objective, trainer and stage configs (conf/base/parameters_{baseline,stage1,stage2,stage3}.yml):
what trains and what never runs in each stage, that each stage's loss falls, the InterHand
transfer (initialisation and its epoch-1 events) and CSS/CPS in stage 2.

Inputs are 64x48 (4x3 tokens, 16x12 heatmaps) and torch runs on one thread, so every test takes
seconds even on a loaded two-core machine (two threads there were 4-5x slower).
"""

from __future__ import annotations

import copy
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import posebh.data as pdata
from posebh import skeletons
from posebh.data.demo.generate import reader_sources
from posebh.data.topdown import TopDownDataset, collate
from posebh.engine.objective import ObjectiveConfig, PoseBHObjective
from posebh.engine.run import run_stage
from posebh.engine.stages import StageSpec
from posebh.engine.trainer import train_stage
from posebh.engine.transfer import transfer_checkpoint
from posebh.models.posebh import ModelConfig, PoseBH

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "data" / "01_raw" / "demo"
CONF = REPO / "conf" / "base"

DATASETS = tuple(skeletons.PAPER_MDT_DATASETS)  # coco, aic, mpii, ap10k, apt36k, coco_wholebody
IMG_HW = (64, 48)
PER_DATASET = 2
STAGES = ("baseline", "stage1", "stage2", "stage3")
#: what each stage must train (DESIGN.md section 5; reference 5.1), independent of the YAML under test
INTENDED = {
    "baseline": {"backbone", "heads"},
    "stage1": {"embedding"},
    "stage2": {"embedding", "heads"},
    "stage3": {"backbone", "heads", "embedding"},
}
PROTOTYPES_UPDATED = {"baseline": False, "stage1": True, "stage2": False, "stage3": False}
#: logged loss terms per stage (the loss switches of the stage configs)
TERMS = {
    "baseline": {"heatmap"},
    "stage1": {"prototypes", "phm"},
    "stage2": {"heatmap", "prototypes", "phm", "css", "cps"},
    "stage3": {"heatmap", "prototypes", "phm", "css", "cps"},
}
CHAIN_STEPS = 8


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _yaml(name: str) -> dict:
    return yaml.safe_load((CONF / f"parameters_{name}.yml").read_text())


def model_conf(**over) -> dict:
    d = dict(_yaml("model")["model"], img_size=list(IMG_HW), drop_path_rate=0.0)
    d.update(over)
    return d


def objective_conf(**over) -> dict:
    d = copy.deepcopy(_yaml("model")["objective"])
    for k, v in over.items():
        d[k] = dict(d.get(k, {}), **v) if isinstance(v, dict) else v
    return d


def stage_conf(name: str, **over) -> dict:
    """The demo stage as configured, shortened: no warm-up or lr steps, a log row per step."""
    d = copy.deepcopy(_yaml(name)[name]["stage"])
    d.update(warmup_iters=0, lr_steps=[], log_every=1, checkpoint_every=1000)
    d.update(over)
    return d


def build(seed: int = 0, **over) -> PoseBH:
    torch.manual_seed(seed)
    return PoseBH(ModelConfig.from_dict(model_conf(**over)))


def make_objective(net: PoseBH, **over) -> PoseBHObjective:
    cfg = ObjectiveConfig.from_dict(objective_conf(**over))
    return PoseBHObjective(cfg, datasets=net.datasets, input_wh=net.config.input_wh, heatmap_wh=net.config.heatmap_wh)


def read_demo(datasets, per_dataset: int, min_keypoints: int = 6) -> tuple[pd.DataFrame, dict[str, str]]:
    """The first well-labelled instances of each dataset's demo training file, as split ``train``."""
    src = reader_sources(DEMO)
    tables, roots = [], {}
    for ds in datasets:
        split = "all" if ds == "apt36k" else "train"  # APT-36K ships one file; prepare splits it
        fmt, kwargs = src[ds][split]
        df = pdata.read(fmt, split=split, **kwargs)
        df = df[(df["iscrowd"] == 0) & (df["num_keypoints"] >= min_keypoints)].head(per_dataset)
        assert len(df) == per_dataset, f"demo {ds}: only {len(df)} usable instances"
        tables.append(df.assign(split="train"))
        roots[ds] = kwargs["image_root"]
    return pd.concat(tables, ignore_index=True), roots


@pytest.fixture(scope="module")
def mdt():
    table, roots = read_demo(DATASETS, PER_DATASET)
    ds = TopDownDataset(table, image_roots=roots, datasets=list(DATASETS), input_size=(IMG_HW[1], IMG_HW[0]), train=True)
    return {"table": table, "roots": roots, "dataset": ds}


def params(net) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in net.named_parameters()}


def top(name: str) -> str:
    return name.split(".")[0]


def changed(a: dict, b: dict) -> set[str]:
    return {k for k in a if not torch.equal(a[k], b[k])}


def under(names, modules) -> set[str]:
    return {n for n in names if top(n) in modules}


# --------------------------------------------------------------------------------------------
# Freeze schedule
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", STAGES)
def test_freeze_schedule(name, mdt, tmp_path):
    net = build()
    before = params(net)
    protos = net.prototypes.prototypes.clone()
    head_buffers = {k: v.clone() for k, v in net.heads.state_dict().items()}
    emb_buffers = {k: v.clone() for k, v in net.embedding.state_dict().items()}
    got_grad: set[str] = set()
    for n, p in net.named_parameters():
        p.register_post_accumulate_grad_hook(lambda p, n=n: got_grad.add(n))
    calls: Counter = Counter()
    for d in DATASETS:
        net.heads[d].register_forward_hook(lambda *a, d=d: calls.update([f"heads.{d}"]))
    net.embedding.register_forward_hook(lambda *a: calls.update(["embedding"]))

    stage = stage_conf(name, epochs=2, batch_size=len(mdt["dataset"]))
    result = train_stage(net, make_objective(net), mdt["dataset"], stage, out_dir=tmp_path, progress=False)
    assert result.global_step == 2 and result.nonfinite_skipped == 0

    intended = under(before, INTENDED[name])
    assert got_grad == intended, (
        f"{name}: unexpected grads {sorted({top(n) for n in got_grad - intended})}, "
        f"missing {sorted(intended - got_grad)[:5]}"
    )
    assert changed(before, params(net)) == intended
    assert {n for n, p in net.named_parameters() if p.requires_grad} == intended
    assert (not torch.equal(protos, net.prototypes.prototypes)) == PROTOTYPES_UPDATED[name]
    assert net.prototypes.frozen == (not PROTOTYPES_UPDATED[name])

    head_calls = sum(v for k, v in calls.items() if k.startswith("heads."))
    if name == "stage1":  # no loss needs a heatmap head: none runs, so not even BN statistics move
        assert head_calls == 0
        assert all(torch.equal(v, net.heads.state_dict()[k]) for k, v in head_buffers.items())
    else:
        assert all(calls[f"heads.{d}"] > 0 for d in DATASETS)
    if name == "baseline":  # ViTPose++ training: the embedding module never runs
        assert calls["embedding"] == 0
        assert all(torch.equal(v, net.embedding.state_dict()[k]) for k, v in emb_buffers.items())
    else:
        assert calls["embedding"] == 2
    if name in ("stage2", "stage3"):  # CSS: every head also runs on the other datasets' images
        assert all(calls[f"heads.{d}"] == 4 for d in DATASETS)


# --------------------------------------------------------------------------------------------
# baseline -> stage1 -> stage2 -> stage3, each overfitting the same 12 crops
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chain(mdt, tmp_path_factory):
    """run_stage (the Kedro nodes' entry point) for the four stages, each from the previous one."""
    root = tmp_path_factory.mktemp("chain")
    sources = {d: [{"split": "train", "image_root": r}] for d, r in mdt["roots"].items()}
    data = {"split": "train", "augment": False, "progress": False, "num_workers": 0}
    torch.manual_seed(0)
    init, out = None, {}
    for name in STAGES:
        stage = stage_conf(name, epochs=CHAIN_STEPS, batch_size=len(mdt["table"]))
        state, history, summary = run_stage(
            stage, model=model_conf(), objective=objective_conf(), data=data, instances=mdt["table"],
            sources=sources, init=init, checkpoint_root=root, device="cpu",
        )
        out[name] = {"state": state, "history": history, "summary": summary}
        init = state
    return out


@pytest.mark.parametrize("name", STAGES)
def test_each_stage_loss_falls(chain, name):
    h = chain[name]["history"]
    assert len(h) == CHAIN_STEPS and (h["stage"] == name).all()
    assert chain[name]["summary"]["nonfinite_skipped"] == 0
    loss = h["loss"].to_numpy()
    assert np.isfinite(loss).all()
    assert loss[-1] < 0.99 * loss[0], f"{name}: loss {loss[0]:.4g} -> {loss[-1]:.4g}"
    terms = {c for c in h.columns if c in {"heatmap", "prototypes", "phm", "css", "cps"}}
    assert terms == TERMS[name]


def test_chain_hands_state_on(chain):
    """Each stage starts from the previous one's weights; the prototypes move only in stage 1."""
    sd = {n: chain[n]["state"]["state_dict"] for n in STAGES}
    key = "prototypes.prototypes"
    assert not torch.equal(sd["baseline"][key], sd["stage1"][key])
    assert torch.equal(sd["stage1"][key], sd["stage2"][key]) and torch.equal(sd["stage2"][key], sd["stage3"][key])
    bb = [k for k in sd["baseline"] if k.startswith("backbone.")]
    assert all(torch.equal(sd["baseline"][k], sd["stage1"][k]) and torch.equal(sd["stage1"][k], sd["stage2"][k]) for k in bb)
    assert any(not torch.equal(sd["stage2"][k], sd["stage3"][k]) for k in bb)


def test_stage2_switches_on_css_and_cps(chain):
    for name in ("stage2", "stage3"):
        h = chain[name]["history"]
        for term in ("css", "cps"):
            assert term in h.columns, f"{name}: {term} not logged"
            v = h[term].to_numpy(dtype=float)
            assert np.isfinite(v).all() and (v >= 0).all()
        assert (h["cps"] > 0).all()  # clusters always exist, and every image has GT pixels


def test_css_trains_heads_on_other_datasets_images(mdt):
    """With thresholds that accept every joint, CSS reaches the MPII head through images without an
    MPII sample; switched off, nothing does. CPS builds its clusters at the stage start."""
    ds = mdt["dataset"]
    mpii = DATASETS.index("mpii")
    batch = collate([ds[i] for i in range(len(ds)) if ds.locate(i)[0] != mpii])
    grads = {}
    for css in (True, False):
        net = build()
        obj = make_objective(net, css_conf_thr=0.0, css_match_dist=1e3)
        spec = StageSpec.from_dict(stage_conf("stage2", losses={**stage_conf("stage2")["losses"], "css": css}))
        obj.start_stage(net, spec, 0)
        obj.start_epoch(net, spec, 0)
        out = obj(net, batch, epoch=0, step=0)
        assert ("css" in out) == css
        if css:
            assert float(out["css"]) > 0 and math.isfinite(float(out["css"]))
            assert obj.clusters is not None and obj.clusters.num_clusters in (64, 96, 128)
            assert int(obj.clusters.keypoint.max()) < net.space.total
        out["loss"].backward()
        grads[css] = [p.grad for p in net.heads["mpii"].parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads[True])
    assert all(g is None or g.abs().sum() == 0 for g in grads[False])


# --------------------------------------------------------------------------------------------
# Transfer to InterHand
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source_dataset", ["coco", "mpii"])
def test_transfer_checkpoint(source_dataset):
    src = build(seed=1).eval()
    with torch.no_grad():  # make the experts and heads clearly distinct from each other
        for p in src.parameters():
            p.add_(0.02 * torch.randn_like(p))
    source = {"config": src.config.to_dict(), "state_dict": src.state_dict()}
    ckpt = transfer_checkpoint(source, "interhand", source_dataset=source_dataset)
    net = PoseBH(ModelConfig.from_dict(ckpt["config"]))
    net.load_state_dict(ckpt["state_dict"])
    net.eval()
    assert net.datasets == ("interhand",)

    x = torch.randn(2, 3, *IMG_HW, generator=torch.Generator().manual_seed(0))
    e = src.dataset_index(source_dataset)
    with torch.no_grad():
        torch.testing.assert_close(net.features(x, 0), src.features(x, e), rtol=0, atol=0)
        other = src.features(x, (e + 1) % len(DATASETS))
        assert not torch.allclose(net.features(x, 0), other)
    sd, src_sd = net.state_dict(), src.state_dict()
    emb = [k for k in sd if k.startswith("embedding.")]
    assert emb and all(torch.equal(sd[k], src_sd[k]) for k in emb)
    for k in sd:
        if k.startswith("heads.interhand.deconv_layers."):
            assert torch.equal(sd[k], src_sd[k.replace("heads.interhand.", f"heads.{source_dataset}.")])
    assert sd["heads.interhand.final_layer.weight"].shape[0] == 21

    p = net.prototypes.prototypes
    assert tuple(p.shape) == (21, 3, 64)
    torch.testing.assert_close(p.norm(dim=-1), torch.ones(21, 3))
    assert not torch.allclose(p, src.prototypes.prototypes[:21], atol=1e-3)  # fresh, not the source's rows


class _Recording(PoseBHObjective):
    """The real objective, plus a snapshot of the model at every epoch start."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.snapshots: dict[int, dict[str, torch.Tensor]] = {}
        self.trainable: dict[int, set[str]] = {}

    def start_epoch(self, model, stage, epoch):
        super().start_epoch(model, stage, epoch)
        self.snapshots[epoch] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.trainable[epoch] = {top(n) for n, p in model.named_parameters() if p.requires_grad}

    def __call__(self, model, batch, *, epoch, step):
        self.epoch_now = epoch
        return super().__call__(model, batch, epoch=epoch, step=step)


def test_transfer_stage_events(tmp_path):
    """InterHand recipe (reference 5.2): heads train throughout, prototypes learn in epoch 0 and freeze
    at 1, the backbone thaws at 1, the embedding stays frozen."""
    params_ih = _yaml("transfer_interhand")["transfer_interhand"]
    src = build(seed=2)
    ckpt = transfer_checkpoint({"config": src.config.to_dict(), "state_dict": src.state_dict()}, "interhand")
    net = PoseBH(ModelConfig.from_dict(ckpt["config"]))
    net.load_state_dict(ckpt["state_dict"])

    table, roots = read_demo(["interhand"], 8, min_keypoints=int(params_ih["min_keypoints"]))
    ds = TopDownDataset(table, image_roots=roots, datasets=["interhand"], input_size=(IMG_HW[1], IMG_HW[0]), train=True)
    stage = dict(copy.deepcopy(params_ih["variants"]["posebh"]["stage"]), name="transfer_interhand_posebh",
                 batch_size=4, warmup_iters=0, log_every=1)
    assert stage["epochs"] == 2 and stage["events"][0]["epoch"] == 1
    cfg = ObjectiveConfig.from_dict(objective_conf(**params_ih["objective"]))
    assert cfg.hard_cluster and cfg.cluster_conf_thr == 0.2
    obj = _Recording(cfg, datasets=net.datasets, input_wh=net.config.input_wh, heatmap_wh=net.config.heatmap_wh)
    grad_epochs: dict[str, set[int]] = {}
    for n, p in net.named_parameters():
        p.register_post_accumulate_grad_hook(lambda p, n=n: grad_epochs.setdefault(top(n), set()).add(obj.epoch_now))
    result = train_stage(net, obj, ds, stage, out_dir=tmp_path, progress=False)
    assert result.global_step == 4 and result.nonfinite_skipped == 0
    end = {k: v.detach().clone() for k, v in net.state_dict().items()}
    s0, s1 = obj.snapshots[0], obj.snapshots[1]

    # parameters and the prototypes only: frozen modules stay in train mode, so BN statistics move
    keys = {n for n, _ in net.named_parameters()} | {"prototypes.prototypes"}

    def moved(a, b, module):
        return any(not torch.equal(a[k], b[k]) for k in keys if top(k) == module)

    assert obj.trainable == {0: {"heads"}, 1: {"heads", "backbone"}}
    # epoch 0: heads learn, prototypes are momentum-updated; backbone and embedding stay put
    assert moved(s0, s1, "heads") and moved(s0, s1, "prototypes")
    assert not moved(s0, s1, "backbone") and not moved(s0, s1, "embedding")
    # epoch 1: the backbone thaws, the prototypes freeze
    assert moved(s1, end, "backbone") and moved(s1, end, "heads")
    assert not moved(s1, end, "prototypes") and not moved(s1, end, "embedding")
    assert grad_epochs == {"heads": {0, 1}, "backbone": {1}}
