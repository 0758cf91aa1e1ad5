"""``conf/paper``: the paper-scale environment (``kedro run --pipeline=mdt --env=paper``).

The configuration is loaded the way Kedro loads it (the project's config loader class and
arguments from ``posebh.settings``, run environment ``paper`` merged over ``base``) and checked
against the reference recipe: ViT-B at 256x192, the three freeze stages of 50/40/10 epochs at
1e-3/1e-4/1e-5, the transfer schedules, real raw roots. Nothing trains; the ViT-B model is built on
PyTorch's meta device (shapes only, no memory, no initialisation cost).
"""

from __future__ import annotations

import pytest
import yaml

from ._project import REPO_ROOT

CONF = REPO_ROOT / "conf"
MDT_STAGES = ("baseline", "stage1", "stage2", "stage3")
TRANSFERS = ("transfer_interhand", "transfer_3dpw")
#: top-level parameter blocks the paper environment is meant to change (ingest through globals.yml)
CHANGED = {"model", "training", "evaluate", "ingest", *MDT_STAGES, *TRANSFERS}
DEMO_ROOT, PAPER_ROOT = "data/01_raw/demo/", "data/01_raw/"


def _load(env: str) -> dict:
    from posebh import settings

    loader = settings.CONFIG_LOADER_CLASS(conf_source=str(CONF), env=env, **settings.CONFIG_LOADER_ARGS)
    # resolve now: the globals resolver is process-wide and follows the latest loader created
    return {"parameters": loader["parameters"], "globals": loader["globals"]}


@pytest.fixture(scope="module")
def base() -> dict:
    return _load("base")


@pytest.fixture(scope="module")
def paper() -> dict:
    return _load("paper")


@pytest.fixture(scope="module")
def params(paper) -> dict:
    return paper["parameters"]


@pytest.fixture(scope="module")
def paper_files() -> dict:
    """The top-level blocks exactly as written in conf/paper/parameters_*.yml (before merging)."""
    out: dict = {}
    for path in sorted((CONF / "paper").glob("parameters*.yml")):
        blocks = yaml.safe_load(path.read_text()) or {}
        assert not set(blocks) & set(out), f"{path.name} repeats a top-level key"
        out.update(blocks)
    return out


def _stage(block: dict, name: str | None = None):
    from posebh.engine.stages import StageSpec

    return StageSpec.from_dict(dict(block, name=name) if name else block)


def _transfer_stages(params: dict):
    for key in TRANSFERS:
        dataset = params[key]["dataset"]
        for variant, spec in params[key]["variants"].items():
            # named the way posebh.pipelines.transfer_interhand.nodes.transfer names them
            yield key, variant, _stage(spec["stage"], f"transfer_{dataset}_{variant}")


def _flatten(d, prefix: str = "") -> dict:
    """Dotted key -> leaf value, through mappings and lists (list items keyed by index)."""
    if isinstance(d, (dict, list)):
        items = d.items() if isinstance(d, dict) else enumerate(d)
        return {k: v for key, val in items for k, v in _flatten(val, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): d}


# ----------------------------------------------------------------------------------------------
# What differs from the demo profile
# ----------------------------------------------------------------------------------------------


def test_paper_env_has_the_same_parameter_blocks_as_base(base, params, paper_files):
    assert set(params) == set(base["parameters"])
    assert set(paper_files) <= set(base["parameters"]), "conf/paper introduces a block conf/base lacks"


def test_paper_env_changes_only_the_intended_blocks(base, params):
    changed = {k for k in params if params[k] != base["parameters"][k]}
    assert changed == CHANGED
    for key in TRANSFERS:  # dataset, eval split, min keypoints and objective stay the demo's
        same = {k for k in params[key] if params[key][k] == base["parameters"][key][k]}
        assert same == set(params[key]) - {"variants"}, key


def test_ingest_differs_only_by_the_raw_roots(base, params):
    demo = _flatten(base["parameters"]["ingest"])
    paper = _flatten(params["ingest"])
    assert set(demo) == set(paper)
    for key, value in demo.items():
        expected = value.replace(DEMO_ROOT, PAPER_ROOT) if isinstance(value, str) else value
        assert paper[key] == expected, key


def test_raw_roots_point_at_real_copies_under_data_01_raw(paper, base, params):
    roots = paper["globals"]["raw"]
    assert set(roots) == set(base["globals"]["raw"])
    for name, root in roots.items():
        assert root.startswith(PAPER_ROOT) and not root.startswith(DEMO_ROOT), (name, root)
    # every file ingest reads lives under a paper root
    paths = [v for v in _flatten(params["ingest"]["datasets"]).values() if isinstance(v, str) and "/" in v]
    assert paths and all(p.startswith(PAPER_ROOT) and not p.startswith(DEMO_ROOT) for p in paths)


def test_stage_blocks_are_fully_written_in_conf_paper(params, paper_files):
    """No demo value leaks into a paper stage through the soft merge."""
    for key in MDT_STAGES:
        assert params[key]["stage"] == paper_files[key]["stage"], key
    for key in TRANSFERS:
        assert params[key]["variants"] == paper_files[key]["variants"], key


# ----------------------------------------------------------------------------------------------
# The recipe (reference 5.1-5.3)
# ----------------------------------------------------------------------------------------------


def test_every_stage_block_parses(params):
    for key in MDT_STAGES:
        assert _stage(params[key]["stage"]).name == key
    assert len(list(_transfer_stages(params))) == 8


def test_model_is_vit_b_at_256x192(params):
    from posebh.models.posebh import ModelConfig
    from posebh.skeletons import PAPER_MDT_DATASETS

    cfg = ModelConfig.from_dict(params["model"])
    assert cfg.size == "b"
    assert cfg.input_wh == (192, 256) and cfg.heatmap_wh == (48, 64)
    assert cfg.datasets == tuple(PAPER_MDT_DATASETS)
    assert (cfg.embed_dim, cfg.prototypes_per_keypoint, cfg.head) == (64, 3, "heatmap")
    assert cfg.space.total == 214  # J


def test_posebh_stages_follow_the_step_schedule(params):
    specs = [_stage(params[k]["stage"]) for k in ("stage1", "stage2", "stage3")]
    assert [s.epochs for s in specs] == [50, 40, 10]
    assert [s.optimizer.lr for s in specs] == pytest.approx([1e-3, 1e-4, 1e-5])
    for s in specs:
        assert s.optimizer.type == "adamw" and s.optimizer.weight_decay == pytest.approx(0.1)
        assert s.layer_decay == pytest.approx(0.75)  # ViT-B
        assert s.grad_clip == pytest.approx(1.0)
        assert s.batch_size == 128 and s.amp == "bf16" and s.lr_steps == ()
    # the run's warm-up is at its start only
    assert [s.warmup_iters for s in specs] == [500, 0, 0]
    assert specs[0].warmup_ratio == pytest.approx(0.001)
    # freeze stages: embedding -> + heads -> + backbone; prototypes updated in stage 1 only
    assert [set(s.trainable) for s in specs] == [{"embedding"}, {"embedding", "heads"}, {"embedding", "heads", "backbone"}]
    assert [s.prototypes for s in specs] == ["update", "frozen", "frozen"]
    assert specs[1].losses.get("css") and specs[1].losses.get("cps")


def test_baseline_imports_vitpose_plus_or_trains_its_schedule(params):
    baseline = params["baseline"]
    path = baseline["import"]
    assert path.startswith("data/") and path.endswith("vitpose+_base.pth")
    spec = _stage(baseline["stage"])
    assert (spec.epochs, spec.lr_steps, spec.warmup_iters) == (210, (170, 200), 500)
    assert spec.optimizer.lr == pytest.approx(1e-3) and spec.layer_decay == pytest.approx(0.75)


def test_transfer_schedules(params):
    specs = {(key, variant): s for key, variant, s in _transfer_stages(params)}
    for (key, _), s in specs.items():
        assert s.optimizer.type == "adam" and s.optimizer.weight_decay == 0.0 and s.grad_clip is None
        if key == "transfer_interhand":
            assert (s.epochs, s.lr_steps, s.batch_size, s.warmup_iters) == (60, (35, 55), 96, 500)
            assert s.optimizer.lr == pytest.approx(5e-4)
        else:
            assert (s.epochs, s.lr_steps, s.batch_size) == (30, (10, 15), 64)
            assert s.optimizer.lr == pytest.approx(1e-4)

    hand = specs["transfer_interhand", "posebh"]
    assert hand.trainable_at(29) == {"heads"} and hand.trainable_at(30) == {"heads", "backbone"}
    assert hand.trainable_at(59) == {"heads", "backbone"}
    assert (hand.prototypes_at(29), hand.prototypes_at(30)) == ("update", "frozen")

    pw3d = specs["transfer_3dpw", "posebh"]
    assert [("backbone" in pw3d.trainable_at(e)) for e in (0, 14, 15, 16, 29)] == [False, False, True, False, False]
    assert (pw3d.prototypes_at(14), pw3d.prototypes_at(15)) == ("update", "frozen")
    for key in TRANSFERS:  # the embedding module stays frozen in the PoseBH variant
        assert all("embedding" not in specs[key, "posebh"].trainable_at(e) for e in range(specs[key, "posebh"].epochs))


def test_training_and_evaluation_settings(params):
    assert params["training"]["processes"] == 1  # DDP is opted into (training.processes: N / torchrun)
    assert params["training"]["device"] == "auto" and params["evaluate"]["device"] == "auto"
    assert params["evaluate"]["batch_size"] == 64


def test_paper_parameters_hold_no_absolute_paths(paper_files):
    strings = [v for v in _flatten(paper_files).values() if isinstance(v, str)]
    assert not [s for s in strings if s.startswith(("/", "~"))]


# ----------------------------------------------------------------------------------------------
# The model it builds
# ----------------------------------------------------------------------------------------------


def _vit_b_count(num_experts: int) -> int:
    """ViT-B/16 on 256x192 without cls token or classifier (85.79M), with the MoE fc2: shared
    3072 -> 768-192 plus ``num_experts`` experts 3072 -> 192 instead of one 3072 -> 768."""
    d, hidden, depth, part, tokens = 768, 3072, 12, 192, 16 * 12
    linear = lambda i, o: i * o + o  # noqa: E731
    block = 4 * d + linear(d, 3 * d) + linear(d, d) + linear(d, hidden)
    block += linear(hidden, d - part) + num_experts * linear(hidden, part)
    return linear(3 * 16 * 16, d) + (1 + tokens) * d + depth * block + 2 * d


def test_vit_b_model_size(params):
    torch = pytest.importorskip("torch")
    from posebh.models.posebh import ModelConfig, build_model

    with torch.device("meta"):  # shapes only
        net = build_model(ModelConfig.from_dict(params["model"]))
    count = {name: sum(p.numel() for p in module.parameters()) for name, module in net.named_children()}
    assert count["backbone"] == _vit_b_count(6)  # 121.2M: 85.8M ViT-B + 5 more experts' fc2 rows
    total = sum(count.values())
    assert 140e6 < total < 160e6, count  # + six 256-channel heatmap heads (25.2M) + embedding (4.4M)
    assert tuple(net.prototypes.prototypes.shape) == (214, 3, 64)
