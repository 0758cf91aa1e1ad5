"""``kedro run --pipeline=mdt`` end to end on fresh clones of the project.

Two clones run the whole DAG from the raw demo files, from scratch, on a shortened schedule (one
epoch per training stage; the README's numbers come from the full demo schedule). The first proves
every artifact and the report (with heatmap and SAR rows side by side, and the notebook over the
outputs); the pair proves reproducibility: every metrics file of ``dvc.yaml`` is byte-identical and
the training logs differ only in their wall-clock columns.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from ._project import REPO_ROOT, copy_project, execute_notebook, project_env, run, tool

#: One epoch per training stage and per transfer comparison row (the PoseBH transfer rows keep the
#: epochs their freeze/thaw events need), no progress bars; the rest as in conf/base.
TRANSFER_VARIANTS = ("vitpose_finetune", "aic_init", "scratch")
SHORT_SCHEDULE = ",".join([
    *(f"{stage}.stage.epochs=1" for stage in ("baseline", "stage1", "stage2", "stage3")),
    *(f"{task}.variants.{v}.stage.epochs=1" for task in ("transfer_interhand", "transfer_3dpw") for v in TRANSFER_VARIANTS),
    "training.progress=false", "evaluate.progress=false",
])  # fmt: skip
MDT_DATASETS = ("coco", "aic", "mpii", "ap10k", "apt36k", "coco_wholebody")
ROWS = ("baseline", "posebh", "baseline_sar")


def _mdt(project) -> None:
    run([tool("kedro"), "run", "--pipeline=mdt", f"--params={SHORT_SCHEDULE}"], project, project_env(project), timeout=1200)


def _dvc_files(kind: str) -> list[str]:
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    return [p for s in stages.values() for e in s.get(kind) or [] for p in ([e] if isinstance(e, str) else list(e))]


@pytest.fixture(scope="module")
def clones(tmp_path_factory):
    projects = [copy_project(tmp_path_factory.mktemp(f"mdt_{i}") / "project") for i in range(2)]
    for project in projects:
        _mdt(project)
    return projects


@pytest.mark.slow
def test_every_dvc_out_metric_and_plot_is_written(clones):
    project = clones[0]
    missing = [p for kind in ("outs", "metrics", "plots") for p in _dvc_files(kind) if not (project / p).exists()]
    assert not missing, missing
    assert not list(project.glob("data/**/.*.tmp")), "an atomic write left a temporary file"


@pytest.mark.slow
def test_the_evaluation_has_every_row_and_both_heads(clones):
    metrics = json.loads((clones[0] / "data/07_model_output/evaluation_metrics.json").read_text())
    assert set(metrics["rows"]) == set(ROWS)
    for row in ROWS:
        keys = {k.split("/")[0] for k in metrics["rows"][row]}
        assert set(MDT_DATASETS) <= keys, (row, keys)
        assert {"PCKh@0.1", "PCKh@0.5", "pixel_error"} <= set(metrics["rows"][row]["mpii"])
    cost = metrics["head_cost"]
    assert set(cost) == {"heatmap", "sar"} and all(c["params"] > 0 and c["flops"] > 0 for c in cost.values())
    assert set(metrics["transfer"]) == {"interhand", "3dpw"}


@pytest.mark.slow
def test_the_report_shows_heatmap_and_sar_rows_side_by_side(clones):
    report = clones[0] / "data/08_reporting/report"
    md = (report / "report.md").read_text()
    section = md.split("## Keypoint heads: heatmap vs SAR regression", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("| ViTPose++") or ln.startswith("| PoseBH")]
    assert [ln.split("|")[2].strip() for ln in lines] == ["heatmap", "heatmap", "SAR"], section
    assert (report / "report.html").stat().st_size > 0
    index = json.loads((clones[0] / "data/08_reporting/report_index.json").read_text())
    assert index["files"] and all((clones[0] / f).is_file() for f in index["files"])


@pytest.mark.slow
def test_the_notebook_runs_over_the_outputs(clones):
    nb = execute_notebook(clones[0])
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2, "predictions and report figures drawn"


@pytest.mark.slow
def test_two_runs_from_scratch_give_identical_metrics(clones):
    from posebh.engine.trainer import TIMING_COLUMNS

    a, b = clones
    different = [p for p in _dvc_files("metrics") if (a / p).read_bytes() != (b / p).read_bytes()]
    assert not different, different
    for p in _dvc_files("plots"):
        logs = [pd.read_csv(c / p).drop(columns=[c for c in TIMING_COLUMNS], errors="ignore") for c in (a, b)]
        pd.testing.assert_frame_equal(*logs, check_exact=True, obj=p)
    for p in ("data/07_model_output/predictions.parquet", "data/06_models/stage3.pt"):
        assert (a / p).read_bytes() == (b / p).read_bytes(), p
