"""Names of the evaluated rows: the compared pair, per keypoint head (``posebh``, ``baseline_sar``);
the default head's rows carry no suffix, other heads append ``_<head>``."""

from __future__ import annotations

from posebh.models import DEFAULT_HEAD

BASELINE = "baseline"
METHOD = "posebh"
PAIR = (BASELINE, METHOD)


def split_row(row: str) -> tuple[str, str]:
    """(base, head): ``posebh_sar`` -> (posebh, sar); ``posebh`` -> (posebh, heatmap)."""
    for base in PAIR:
        if row.startswith(base + "_"):
            return base, row[len(base) + 1 :]
    return row, DEFAULT_HEAD


def row_name(base: str, head: str) -> str:
    return base if head == DEFAULT_HEAD else f"{base}_{head}"
