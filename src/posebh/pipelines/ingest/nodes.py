"""Ingest nodes: raw release files -> unified table -> validated table + quarantine + report."""

from __future__ import annotations

import pandas as pd


def read_raw(sources: list[dict] | None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    from posebh.data import read_sources

    tables = read_sources(sources)
    return tables["instances"], tables["images"], tables["detections"]


def validate(raw: pd.DataFrame, params: dict) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    from posebh.data.validation import validate as run_validation

    result = run_validation(raw, **params)
    return result.clean, result.quarantine, result.report


def summarise(*reports: dict) -> tuple[dict, str]:
    """One validation report over every dataset (JSON for DVC metrics, Markdown for people)."""
    from posebh.data.validation import merge_reports, render_report_markdown

    merged = merge_reports(list(reports))
    return merged, render_report_markdown(merged)
