"""``ingest`` and ``prepare`` through a real KedroSession, with raw sources pointed at the real samples."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO_ROOT, sample


def _project_copy(tmp_path: Path) -> Path:
    """A throwaway copy of the project's configuration, so runs never touch the repository's data/."""
    proj = tmp_path / "project"
    proj.mkdir()
    shutil.copy(REPO_ROOT / "pyproject.toml", proj / "pyproject.toml")
    shutil.copytree(REPO_ROOT / "conf", proj / "conf", ignore=shutil.ignore_patterns("local"))
    (proj / "conf" / "local").mkdir()
    (proj / "data").mkdir()
    (proj / "src").mkdir()  # Kedro wants the folder; the package itself is the installed one
    return proj


def sample_sources(samples: Path) -> dict:
    s = lambda *p: str(sample(samples, *p))  # noqa: E731
    return {
        "coco": [
            {"format": "coco", "split": "val", "annotations": s("coco", "test_coco.json"), "image_root": s("coco")},
            {"format": "detections", "split": "val", "dataset": "coco", "annotations": s("coco", "test_coco_det_AP_H_56.json")},
        ],
        "aic": [{"format": "aic_raw", "split": "val", "annotations": s("aic", "aic_raw_format_3imgs.json"), "image_root": s("aic")}],
        "mpii": [{"format": "mpii", "split": "val", "annotations": s("mpii", "test_mpii.json"), "image_root": s("mpii")}],
        "ap10k": [{"format": "coco", "dataset": "ap10k", "split": "val", "annotations": s("ap10k", "test_ap10k.json"), "image_root": s("ap10k")}],
        "apt36k": [],
        "coco_wholebody": [
            {"format": "coco_wholebody", "split": "val", "annotations": s("coco_wholebody", "test_coco_wholebody.json"), "image_root": s("coco")}
        ],
        "crowdpose": [{"format": "coco", "dataset": "crowdpose", "split": "test", "annotations": s("crowdpose", "test_crowdpose.json"), "image_root": s("crowdpose")}],
        "ochuman": [{"format": "coco", "dataset": "ochuman", "split": "val", "annotations": s("ochuman", "test_ochuman.json"), "image_root": s("ochuman")}],
        "interhand": [
            {
                "format": "interhand",
                "split": "test",
                "data": s("interhand2.6m", "test_interhand2.6m_data.json"),
                "camera": s("interhand2.6m", "test_interhand2.6m_camera.json"),
                "joint_3d": s("interhand2.6m", "test_interhand2.6m_joint_3d.json"),
                "image_root": s("interhand2.6m"),
            }
        ],
        "3dpw": [],
    }


@pytest.mark.slow
def test_ingest_and_prepare_on_real_samples(samples, tmp_path, monkeypatch):
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    proj = _project_copy(tmp_path)
    monkeypatch.chdir(proj)
    bootstrap_project(proj)
    sources = sample_sources(samples)
    with KedroSession.create(project_path=proj, runtime_params={"ingest": {"datasets": sources}}) as session:
        session.run(pipeline_name="ingest")
    with KedroSession.create(project_path=proj, runtime_params={"ingest": {"datasets": sources}}) as session:
        session.run(pipeline_name="prepare")

    report = json.loads((proj / "data/08_reporting/validation.json").read_text())
    coco_raw = json.loads(sample(samples, "coco", "test_coco.json").read_text())
    coco = pd.read_parquet(proj / "data/03_primary/instances/coco.parquet")
    coco_q = pd.read_parquet(proj / "data/03_primary/quarantine/coco.parquet")
    assert len(coco) + len(coco_q) == len(coco_raw["annotations"])
    assert report["rows_in"] == report["clean"] + report["quarantined"]

    model_input = pd.read_parquet(proj / "data/05_model_input/prepare/instances.parquet")
    expected = {d for d, srcs in sources.items() if srcs}
    assert set(model_input["dataset"]) == expected
    dets = pd.read_parquet(proj / "data/05_model_input/prepare/detection_instances.parquet")
    det_raw = json.loads(sample(samples, "coco", "test_coco_det_AP_H_56.json").read_text())
    assert len(dets) == len(det_raw)
    manifests = json.loads((proj / "data/05_model_input/prepare/manifests.json").read_text())
    assert manifests["annotations"]
