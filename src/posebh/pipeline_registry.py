"""Pipelines by name. ``mdt`` is the whole DAG from raw files to reports; ``__default__`` is ``mdt``."""

from __future__ import annotations

import importlib

from kedro.pipeline import Pipeline

#: The DAG in order (DESIGN.md section 2); each name is a package under posebh.pipelines.
MDT_PIPELINES: tuple[str, ...] = (
    "ingest", "prepare", "baseline", "stage1", "stage2", "stage3", "split", "heads",
    "transfer_interhand", "transfer_3dpw", "evaluate", "report",
)

#: Pipelines outside the main DAG.
OTHER_PIPELINES: tuple[str, ...] = ("demo",)


def _create(name: str) -> Pipeline:
    return importlib.import_module(f"posebh.pipelines.{name}.pipeline").create_pipeline()


def register_pipelines() -> dict[str, Pipeline]:
    pipelines = {name: _create(name) for name in MDT_PIPELINES}
    for name in OTHER_PIPELINES:
        try:
            pipelines[name] = _create(name)
        except ModuleNotFoundError:
            pass
    pipelines["mdt"] = sum((pipelines[n] for n in MDT_PIPELINES), Pipeline([]))
    pipelines["__default__"] = pipelines["mdt"]
    return pipelines
