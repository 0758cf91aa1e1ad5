"""Paper-style reports: tables (Markdown/HTML), figures (PNG), ``metrics.json`` and dvc plot data.

:func:`build_report` is the entry point; :mod:`.tables` and :mod:`.figures` are usable alone.
The input contract (``metrics``, ``histories``, ``prototypes``, ``qualitative``) is documented
in :mod:`posebh.reporting.report`. No kedro import here: nodes call these functions.
"""

from __future__ import annotations

from posebh.reporting.report import (
    HeadCost,
    MetricsInput,
    PrototypeInput,
    QualitativeItem,
    ReportInputError,
    ReportMetrics,
    TestDevEntry,
    build_report,
    coerce_metrics,
    metrics_summary,
    validate_inputs,
)
from posebh.reporting.tables import CONVENTIONS, NA, Table, all_tables

__all__ = [
    "build_report",
    "validate_inputs",
    "coerce_metrics",
    "metrics_summary",
    "ReportInputError",
    "ReportMetrics",
    "MetricsInput",
    "TestDevEntry",
    "HeadCost",
    "PrototypeInput",
    "QualitativeItem",
    "Table",
    "all_tables",
    "NA",
    "CONVENTIONS",
]
