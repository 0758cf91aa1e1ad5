"""Paper-style tables as pandas DataFrames, rendered to Markdown and HTML.

One number convention for the whole report (:data:`CONVENTIONS`): OKS AP/AR, PCK and AUC come
from the evaluation as fractions and are printed x100 with one decimal (77.3), as papers print
them; PCKh is already a percentage and gets one decimal; pixel errors get two decimals; missing
values print :data:`NA`. A difference column (Δ) is the difference of the two printed numbers,
so every row checks by eye; averages are taken over unrounded values and then printed.

Each table is a :class:`Table`: ``frame`` (the printed strings) and ``values`` (the same cells
as display-scale floats, NaN where missing) for tests and further use.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import pandas as pd

from posebh import skeletons
from posebh.evaluation.protocols import PIXEL_ERROR, get_protocol
from posebh.evaluation.rows import BASELINE, DEFAULT_HEAD, METHOD, PAIR, row_name, split_row

if TYPE_CHECKING:
    from posebh.reporting.report import ReportMetrics

# ----------------------------------------------------------------------------------------------
# Number convention
# ----------------------------------------------------------------------------------------------

NA = "n/a"
#: Fractions (OKS AP/AR, PCK, AUC) are multiplied by this for printing.
PERCENT = 100.0
#: Decimals of AP-like numbers (x100) and PCKh.
DECIMALS = 1
#: Decimals of pixel errors (EPE, mean pixel error), as the paper prints EPE (4.02).
PIXEL_DECIMALS = 2
#: Decimals of params (M) and FLOPs (G).
COST_DECIMALS = 2
PARAMS_UNIT = 1e6
FLOPS_UNIT = 1e9
#: Decimals of display-scale numbers in metrics.json; significant digits in plot CSVs.
JSON_DECIMALS = 3
CSV_DIGITS = 6
#: pycocotools' value for "no ground truth in this subset".
UNDEFINED = -1.0
PIXEL_METRICS = frozenset({"EPE", PIXEL_ERROR})

Kind = Literal["fraction", "percent", "pixels", "count"]

CONVENTIONS = (
    f"AP/AR, PCK@0.2 and AUC are printed x{PERCENT:g} with {DECIMALS} decimal; PCKh is a percentage "
    f"({DECIMALS} decimal); EPE and pixel errors are in pixels ({PIXEL_DECIMALS} decimals); "
    f"missing entries print \"{NA}\"; Δ is the difference of the printed numbers."
)


def metric_kind(metric: str, dataset: str | None = None) -> Kind:
    """How a metric of ``dataset`` is scaled: MPII's whole report (PCKh and parts) is in percent."""
    if metric in PIXEL_METRICS:
        return "pixels"
    if metric.startswith("num_") or "_num_" in metric:
        return "count"
    if metric.startswith("PCKh") or _PROTOCOL_METRIC.get(dataset) == "pckh":
        return "percent"
    return "fraction"


def display_value(value: float | None, kind: Kind) -> float | None:
    """Raw evaluated value -> the unit the tables print (None for missing/undefined)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if kind == "fraction":
        return None if value == UNDEFINED else float(value) * PERCENT
    return float(value)


def decimals(kind: Kind) -> int:
    return {"pixels": PIXEL_DECIMALS, "count": 0}.get(kind, DECIMALS)


def _rounded(x: float, n: int) -> float:
    """Round as ``format`` prints, so Δ of printed numbers equals the printed Δ."""
    return float(f"{x:.{n}f}")


def format_number(x: float | None, n: int = DECIMALS) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return NA
    r = _rounded(x, n)
    return f"{r + 0.0:.{n}f}"  # + 0.0 turns -0.0 into 0.0


def format_delta(a: float | None, b: float | None, n: int = DECIMALS) -> str:
    """Signed ``b - a`` of the printed numbers ("+0.3", "-0.2", "0.0")."""
    d = delta(a, b, n)
    if d is None:
        return NA
    return f"{d:.{n}f}" if d == 0 else f"{d:+.{n}f}"


def delta(a: float | None, b: float | None, n: int = DECIMALS) -> float | None:
    if a is None or b is None or math.isnan(a) or math.isnan(b):
        return None
    return _rounded(_rounded(b, n) - _rounded(a, n), n) + 0.0


def rounded_json(x: float | None) -> float | None:
    return None if x is None else round(x, JSON_DECIMALS)


# ----------------------------------------------------------------------------------------------
# Names: datasets, splits, rows, heads
# ----------------------------------------------------------------------------------------------

#: The six MDT datasets of the main table, in the paper's order.
MAIN_DATASETS: tuple[str, ...] = skeletons.PAPER_MDT_DATASETS
AVERAGE_KEY = "mdt_average"
#: The split a bare dataset key means (the split each dataset's paper number is reported on).
DEFAULT_SPLITS: Mapping[str, str] = {
    "coco": "val", "aic": "val", "mpii": "val", "ap10k": "val", "apt36k": "val", "coco_wholebody": "val",
    "ochuman": "test", "crowdpose": "test", "interhand": "test", "3dpw": "test",
}  # fmt: skip
SPLIT_SEP = "/"
TESTDEV = "test-dev"
DATASET_LABELS: Mapping[str, str] = {
    "coco": "COCO", "aic": "AIC", "mpii": "MPII", "ap10k": "AP-10K", "apt36k": "APT-36K",
    "coco_wholebody": "COCO-WholeBody", "ochuman": "OCHuman", "crowdpose": "CrowdPose",
    "interhand": "InterHand2.6M", "3dpw": "3DPW", AVERAGE_KEY: "Average (6 MDT)",
}  # fmt: skip
METRIC_LABELS: Mapping[str, str] = {
    "wholebody_AP": "whole-body AP", "PCKh@0.5": "PCKh@0.5", "PCKh@0.1": "PCKh@0.1",
    "AP_easy": "AP (easy)", "AP_medium": "AP (medium)", "AP_hard": "AP (hard)",
    "occ_AP": "AP (occluded)", PIXEL_ERROR: "pixel error (px)", "EPE": "EPE (px)",
}  # fmt: skip

ROW_LABELS: Mapping[str, str] = {BASELINE: "ViTPose++", METHOD: "PoseBH"}
HEAD_LABELS: Mapping[str, str] = {DEFAULT_HEAD: "heatmap", "sar": "SAR"}
TRANSFER_LABELS: Mapping[str, str] = {
    "vitpose_finetune": "ViTPose++ fine-tuning",
    "scratch": "Training from scratch",
    "aic_init": "From an AIC-only model",
    "posebh": "PoseBH",
}

_PROTOCOL_METRIC = {name: get_protocol(name).metric for name in DEFAULT_SPLITS}


def canonical_dataset(name: str) -> str:
    """Registry name of a dataset (aliases accepted); KeyError names the known ones."""
    canon = skeletons.get(name).name
    get_protocol(canon)
    return canon


def parse_dataset_key(key: str) -> tuple[str, str | None]:
    name, _, split = key.partition(SPLIT_SEP)
    return name, (split or None)


def dataset_key(dataset: str, split: str | None = None) -> str:
    """``coco`` for the default split, ``ochuman/val`` otherwise (the canonical metrics key)."""
    if split is None or split == DEFAULT_SPLITS.get(dataset):
        return dataset
    return f"{dataset}{SPLIT_SEP}{split}"


def dataset_label(key: str) -> str:
    name, split = parse_dataset_key(key)
    label = DATASET_LABELS.get(name, name)
    return f"{label} {split}" if split else label


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def head_label(head: str) -> str:
    return HEAD_LABELS.get(head, head)


def row_label(row: str) -> str:
    base, head = split_row(row)
    label = ROW_LABELS.get(base, base)
    return label if head == DEFAULT_HEAD else f"{label} ({head_label(head)} head)"


def delta_key(head: str) -> str:
    return "delta" if head == DEFAULT_HEAD else f"delta_{head}"


def _head_order(head: str) -> tuple[int, str]:
    return (0 if head == DEFAULT_HEAD else 1, head)


def ordered_rows(rows: Iterable[str]) -> list[str]:
    """Heatmap rows first, then each other head; ViTPose++ before PoseBH; other rows last, sorted."""

    def key(row: str):
        base, head = split_row(row)
        return (_head_order(head), PAIR.index(base) if base in PAIR else len(PAIR), base)

    return sorted(set(rows), key=key)


def heads_present(m: ReportMetrics) -> list[str]:
    """Heads with at least one of the pair's rows (``heatmap`` first)."""
    heads = {split_row(r)[1] for r in m.rows if split_row(r)[0] in PAIR}
    return sorted(heads, key=_head_order)


def headline_metric(dataset: str) -> str:
    return get_protocol(parse_dataset_key(dataset)[0]).headline


def headline_display(m: ReportMetrics, row: str, dataset: str) -> float | None:
    """The dataset's headline metric for ``row`` in print units; the MDT average for AVERAGE_KEY."""
    if dataset == AVERAGE_KEY:
        vals = [headline_display(m, row, ds) for ds in MAIN_DATASETS]
        return None if any(v is None for v in vals) else sum(vals) / len(vals)
    name, split = parse_dataset_key(dataset)
    metric = headline_metric(name)
    return display_value(m.value(row, name, metric, split), metric_kind(metric, name))


def bar_datasets(m: ReportMetrics) -> list[str]:
    """Datasets of the per-dataset figure: the MDT six, then every other evaluated key, sorted."""
    keys = {k for per_ds in m.rows.values() for k in per_ds if parse_dataset_key(k)[1] != TESTDEV}
    rest = sorted(k for k in keys if k not in MAIN_DATASETS)
    return [*MAIN_DATASETS, *rest]


def _coerce(metrics) -> ReportMetrics:
    from posebh.reporting.report import coerce_metrics

    return coerce_metrics(metrics)


# ----------------------------------------------------------------------------------------------
# Table object and rendering
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    """A titled table: printed strings in ``frame``, display-scale floats in ``values``."""

    key: str
    title: str
    frame: pd.DataFrame
    values: pd.DataFrame
    notes: tuple[str, ...] = ()

    def _numeric(self) -> list[bool]:
        return [pd.api.types.is_float_dtype(self.values[c]) for c in self.frame.columns]

    def to_markdown(self) -> str:
        """GitHub-flavoured table (index as the first column, numbers right-aligned), then notes."""
        esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
        header = [self.frame.index.name or "", *self.frame.columns]
        align = [":---", *("---:" if n else ":---" for n in self._numeric())]
        lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "|".join(align) + "|"]
        for idx, row in zip(self.frame.index, self.frame.itertuples(index=False)):
            lines.append("| " + " | ".join(esc(c) for c in (idx, *row)) + " |")
        lines.extend(f"\n{n}" for n in self.notes)
        return "\n".join(lines) + "\n"

    def to_html(self) -> str:
        """A plain ``<table>`` (escaped) with numeric cells classed ``num`` and notes below."""
        numeric = self._numeric()
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in (self.frame.index.name or "", *self.frame.columns))
        body = []
        for idx, row in zip(self.frame.index, self.frame.itertuples(index=False)):
            cells = [f"<th>{html.escape(str(idx))}</th>"]
            for c, n in zip(row, numeric):
                cls = ' class="num"' if n else ""
                na = ' class="num na"' if n and c == NA else cls
                cells.append(f"<td{na}>{html.escape(str(c))}</td>")
            body.append("<tr>" + "".join(cells) + "</tr>")
        notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in self.notes)
        return (
            f'<table id="{html.escape(self.key)}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>{notes}"
        )


class _Builder:
    """Collects rows of (label, {column: (display value or text, kind)}) into a Table."""

    def __init__(self, index_name: str, columns: Sequence[str]):
        self.index_name = index_name
        self.columns = list(columns)
        self.labels: list[str] = []
        self.text: list[list[str]] = []
        self.vals: list[list[object]] = []
        self.numeric = dict.fromkeys(self.columns, False)

    def add(self, label: str, cells: Mapping[str, tuple[object, str | None]]) -> None:
        """``cells[col] = (value, kind)``; kind "text" for strings, "delta:<n>" for a preformatted Δ."""
        texts, vals = [], []
        for col in self.columns:
            value, kind = cells.get(col, (None, None))
            if kind == "text":
                texts.append(NA if value is None else str(value))
                vals.append(NA if value is None else str(value))
                continue
            self.numeric[col] = True
            if kind is not None and kind.startswith("delta:"):
                texts.append(str(value))
                vals.append(_parse_float(value))
                continue
            n = decimals(kind) if kind in ("fraction", "percent", "pixels", "count") else COST_DECIMALS
            texts.append(format_number(value, n))
            vals.append(math.nan if value is None else float(value))
        self.labels.append(label)
        self.text.append(texts)
        self.vals.append(vals)

    def build(self, key: str, title: str, notes: Sequence[str] = ()) -> Table:
        index = pd.Index(self.labels, name=self.index_name, dtype=object)
        frame = pd.DataFrame(self.text, index=index, columns=self.columns, dtype=object)
        values = pd.DataFrame(self.vals, index=index, columns=self.columns, dtype=object)
        for col in self.columns:
            values[col] = values[col].astype(float) if self.numeric[col] else values[col].astype(object)
        return Table(key, title, frame, values, tuple(notes))


def _parse_float(text: object) -> float:
    try:
        return float(str(text))
    except ValueError:
        return math.nan


def _delta_cell(a: float | None, b: float | None, n: int = DECIMALS) -> tuple[str, str]:
    return format_delta(a, b, n), f"delta:{n}"


# ----------------------------------------------------------------------------------------------
# Paper reference numbers (reference posebh-method.md 7: repository README, ViT-B and ViT-H)
# ----------------------------------------------------------------------------------------------

#: Headline per MDT dataset in print units (MAIN_DATASETS order), for Table 6's "(paper)" rows.
PAPER_MDT: Mapping[str, Mapping[str, float]] = {
    label: dict(zip(MAIN_DATASETS, values))
    for label, values in (
        ("ViTPose++-B (paper)", (77.0, 31.8, 92.8, 74.5, 75.9, 57.4)),
        ("PoseBH-B (paper)", (77.3, 32.1, 93.2, 75.0, 87.2, 57.9)),
        ("ViTPose++-H (paper)", (79.4, 34.8, 94.2, 82.4, 82.3, 60.6)),
        ("PoseBH-H (paper)", (79.5, 35.1, 94.2, 82.6, 90.6, 62.0)),
    )
}
APT36K_NOTE = (
    "APT-36K (paper rows): the ViTPose++ numbers were measured on ViTPose's unreleased split, PoseBH's "
    "on its own 7:1:2 split, so the paper's APT-36K gap is not a like-for-like comparison; the rows of "
    "this run share one split."
)
#: Table 7 reference rows (ViT-B): InterHand PCK/AUC in percent, EPE px; 3DPW AP/AR.
PAPER_TRANSFER: Mapping[str, Mapping[str, float]] = {
    "ViTPose++-B (paper)": {"PCK@0.2": 98.3, "AUC": 86.2, "EPE": 4.02, "AP": 81.7, "AR": 85.2},
    "PoseBH-B (paper)": {"PCK@0.2": 98.6, "AUC": 87.1, "EPE": 3.70, "AP": 83.6, "AR": 87.1},
}


# ----------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------


def _head_columns(head: str) -> tuple[str, str, str]:
    suffix = "" if head == DEFAULT_HEAD else f" [{head_label(head)}]"
    return tuple(f"{ROW_LABELS[b]}{suffix}" for b in PAIR) + (f"Δ{suffix}",)  # type: ignore[return-value]


def main_table(metrics) -> Table:
    """Per MDT dataset: the headline metric of ViTPose++ and PoseBH and Δ, per head; then the average."""
    m = _coerce(metrics)
    heads = heads_present(m) or [DEFAULT_HEAD]
    columns = ["Metric", *(c for h in heads for c in _head_columns(h))]
    b = _Builder("Dataset", columns)
    for ds in (*MAIN_DATASETS, AVERAGE_KEY):
        metric = "mean" if ds == AVERAGE_KEY else metric_label(headline_metric(ds))
        cells: dict[str, tuple[object, str | None]] = {"Metric": (metric, "text")}
        for head in heads:
            base_col, method_col, delta_col = _head_columns(head)
            base = headline_display(m, row_name(BASELINE, head), ds)
            method = headline_display(m, row_name(METHOD, head), ds)
            cells[base_col] = (base, "percent")
            cells[method_col] = (method, "percent")
            cells[delta_col] = _delta_cell(base, method)
        b.add(dataset_label(ds), cells)
    notes = [
        "Headline metric per dataset: COCO, AIC, AP-10K, APT-36K AP; MPII PCKh@0.5; COCO-WholeBody "
        "whole-body AP. The average is over the six MDT datasets and needs all six.",
    ]
    return b.build("main", "Main results: ViTPose++ vs PoseBH on the six MDT datasets", notes)


COCO_COLUMNS = ("AP", "AP50", "AP75", "APm", "APl", "AR")


def coco_table(metrics) -> Table:
    """Table 4: COCO val (and test-dev where the server's numbers were added as ``coco/test-dev``)."""
    m = _coerce(metrics)
    b = _Builder("Method", ["Split", *COCO_COLUMNS])
    for split in ("val", TESTDEV):
        for row in m.row_names():
            if split == TESTDEV and row not in m.testdev and dataset_key("coco", TESTDEV) not in m.rows.get(row, {}):
                continue
            cells = {"Split": (split, "text")}
            for metric in COCO_COLUMNS:
                cells[metric] = (display_value(m.value(row, "coco", metric, split), "fraction"), "fraction")
            b.add(row_label(row), cells)
    notes = ["COCO val2017 with the HRNet person detections (AP_H 56). test-dev has no local ground "
             "truth: its numbers come from the evaluation server (see the submission files)."]  # fmt: skip
    return b.build("table4", "Table 4: COCO keypoints (val2017 and test-dev)", notes)


def testdev_table(metrics) -> Table | None:
    """The COCO test-dev results files to upload, with their result counts."""
    m = _coerce(metrics)
    if not m.testdev:
        return None
    b = _Builder("Method", ["Results file", "Results"])
    for row in ordered_rows(m.testdev):
        e = m.testdev[row]
        b.add(row_label(row), {"Results file": (e["results_file"], "text"), "Results": (e["num_results"], "count")})
    notes = ["Upload each file (zipped) to the COCO test-dev server; add the returned numbers as "
             "metrics['rows'][row]['coco/test-dev'] to fill Table 4's test-dev lines."]  # fmt: skip
    return b.build("testdev", "COCO test-dev submission files", notes)


OCHUMAN_METRICS = (("AP", "AP"), ("AR", "AR"), ("occ_AP", "AP (occluded)"))


def ochuman_table(metrics) -> Table:
    """Table 5: OCHuman val and test AP/AR and AP over occluded keypoints only."""
    m = _coerce(metrics)
    splits = ("val", "test")
    columns = [f"{s} {label}" for s in splits for _, label in OCHUMAN_METRICS]
    b = _Builder("Method", columns)
    for row in m.row_names():
        cells = {}
        for s in splits:
            for metric, label in OCHUMAN_METRICS:
                cells[f"{s} {label}"] = (display_value(m.value(row, "ochuman", metric, s), "fraction"), "fraction")
        b.add(row_label(row), cells)
    notes = ["GT boxes. AP (occluded): OKS AP over the labelled-but-occluded joints only (v = 1), "
             "a reconstruction of PCT's protocol."]  # fmt: skip
    return b.build("table5", "Table 5: OCHuman (occlusion)", notes)


def comparison_table(metrics, *, include_paper: bool = True) -> Table:
    """Table 6: every row (and the paper's rows) on each MDT dataset's headline, plus the average."""
    m = _coerce(metrics)
    columns = [dataset_label(ds) for ds in (*MAIN_DATASETS, AVERAGE_KEY)]
    b = _Builder("Method", columns)
    for row in m.row_names():
        if not m.rows.get(row):
            continue
        b.add(row_label(row), {dataset_label(ds): (headline_display(m, row, ds), "percent")
                               for ds in (*MAIN_DATASETS, AVERAGE_KEY)})  # fmt: skip
    notes = []
    if include_paper:
        for label, vals in PAPER_MDT.items():
            cells = {dataset_label(ds): (vals.get(ds), "percent") for ds in MAIN_DATASETS}
            avg = [vals.get(ds) for ds in MAIN_DATASETS]
            cells[dataset_label(AVERAGE_KEY)] = (None if None in avg else sum(avg) / len(avg), "percent")
            b.add(label, cells)
        notes.append(APT36K_NOTE)
    notes.append("Headline metrics as in the main table.")
    return b.build("table6", "Table 6: multi-dataset training comparison", notes)


TRANSFER_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("interhand", "PCK@0.2", "InterHand PCK@0.2"),
    ("interhand", "AUC", "InterHand AUC"),
    ("interhand", "EPE", "InterHand EPE (px)"),
    ("3dpw", "AP", "3DPW AP"),
    ("3dpw", "AR", "3DPW AR"),
)


def transfer_table(metrics, *, include_paper: bool = True) -> Table:
    """Table 7: domain transfer to InterHand2.6M (PCK/AUC/EPE) and 3DPW (AP/AR) per variant."""
    m = _coerce(metrics)
    present = {v for variants in m.transfer.values() for v in variants}
    variants = [*TRANSFER_LABELS, *sorted(present - set(TRANSFER_LABELS))]
    b = _Builder("Variant", [c for _, _, c in TRANSFER_COLUMNS])
    for v in variants:
        cells = {}
        for task, metric, col in TRANSFER_COLUMNS:
            kind = metric_kind(metric, task)
            cells[col] = (display_value(m.transfer_value(task, v, metric), kind), kind)
        b.add(TRANSFER_LABELS.get(v, v), cells)
    notes = []
    if include_paper:
        for label, vals in PAPER_TRANSFER.items():
            b.add(label, {col: (vals.get(metric), metric_kind(metric, task)) for task, metric, col in TRANSFER_COLUMNS})
        notes.append("Paper rows: ViT-B numbers from the PoseBH README (InterHand PCK/AUC x100, EPE in px).")
    return b.build("table7", "Table 7: domain transfer (InterHand2.6M, 3DPW)", notes)


CROWDPOSE_EXTRAS = ("AP", "AP_easy", "AP_medium", "AP_hard")


def extras_table(metrics) -> Table:
    """CrowdPose AP by crowd level, MPII PCKh@0.1 and the mean pixel error of every dataset."""
    m = _coerce(metrics)
    rows = [r for r in m.row_names() if m.rows.get(r)]
    b = _Builder("Dataset", ["Metric", *(row_label(r) for r in rows)])
    wanted: list[tuple[str, str]] = [("crowdpose", x) for x in CROWDPOSE_EXTRAS] + [("mpii", "PCKh@0.1")]
    keys = sorted({k for r in rows for k, vals in m.rows[r].items() if PIXEL_ERROR in vals},
                  key=lambda k: (_dataset_order(k), k))  # fmt: skip
    wanted += [(k, PIXEL_ERROR) for k in keys]
    for key, metric in wanted:
        name, split = parse_dataset_key(key)
        kind = metric_kind(metric, name)
        cells = {"Metric": (metric_label(metric), "text")}
        for r in rows:
            cells[row_label(r)] = (display_value(m.value(r, name, metric, split), kind), kind)
        b.add(dataset_label(key), cells)
    notes = ["CrowdPose levels by crowd index (easy < 0.2 <= medium <= 0.8 < hard). Pixel error: mean "
             "distance over labelled joints of GT-box runs, in original-image pixels (lower is better)."]  # fmt: skip
    return b.build("extras", "Additional metrics", notes)


def _dataset_order(key: str) -> int:
    order = [*MAIN_DATASETS, *(d for d in DEFAULT_SPLITS if d not in MAIN_DATASETS)]
    name = parse_dataset_key(key)[0]
    return order.index(name) if name in order else len(order)


#: (dataset, metric) columns of the head table: the strict threshold is where regression heads differ.
HEAD_METRICS: tuple[tuple[str, str], ...] = (("coco", "AP"), ("mpii", "PCKh@0.5"), ("mpii", "PCKh@0.1"))


def mean_pixel_error(m: ReportMetrics, row: str) -> float | None:
    """Mean over the MDT datasets that report it (COCO val is scored on detected boxes: it has none)
    of the row's mean keypoint pixel error in input-image pixels; None when none does."""
    vals = [m.value(row, ds, PIXEL_ERROR) for ds in MAIN_DATASETS]
    vals = [v for v in vals if v is not None]
    return sum(vals) / len(vals) if vals else None


def head_table(metrics) -> Table | None:
    """Every model row with its keypoint head, side by side: head cost, strict and loose accuracy,
    pixel error, MDT average; None with one head and no costs."""
    m = _coerce(metrics)
    heads = sorted(set(heads_present(m)) | set(m.head_cost), key=_head_order)
    if len(heads) < 2 and not m.head_cost:
        return None
    metric_cols = {f"{DATASET_LABELS[ds]} {metric_label(metric)}": (ds, metric) for ds, metric in HEAD_METRICS}
    pixel_col = f"mean {metric_label(PIXEL_ERROR)}"
    cols = ["Head", "Params (M)", "GFLOPs", *metric_cols, pixel_col, DATASET_LABELS[AVERAGE_KEY]]
    b = _Builder("Model", cols)
    rows = [r for r in ordered_rows(m.rows) if split_row(r)[0] in PAIR]
    for row in rows:
        base, head = split_row(row)
        cost = m.head_cost.get(head)
        cells: dict[str, tuple[object, str | None]] = {
            "Head": (head_label(head), "text"),
            "Params (M)": (None if cost is None else cost["params"] / PARAMS_UNIT, "cost"),
            "GFLOPs": (None if cost is None else cost["flops"] / FLOPS_UNIT, "cost"),
            pixel_col: (mean_pixel_error(m, row), "pixels"),
            DATASET_LABELS[AVERAGE_KEY]: (headline_display(m, row, AVERAGE_KEY), "percent"),
        }
        for col, (ds, metric) in metric_cols.items():
            kind = metric_kind(metric, ds)
            cells[col] = (display_value(m.value(row, ds, metric), kind), kind)
        b.add(ROW_LABELS[base], cells)
    notes = [
        "Params and GFLOPs: one dataset's keypoint head (COCO's, 17 keypoints) alone on one input crop's backbone features "
        "(FlopCounterMode, 2 FLOPs per multiply-accumulate). Mean pixel error: the average over the six "
        "MDT datasets' mean keypoint distance in input-image pixels (COCO val, scored on detected boxes, has "
        "none).",
    ]
    return b.build("heads", "Keypoint heads: heatmap vs SAR regression", notes)


def all_tables(metrics) -> list[Table]:
    """Every table of the report in order (optional ones only when they have content)."""
    m = _coerce(metrics)
    out = [main_table(m), coco_table(m), testdev_table(m), ochuman_table(m), comparison_table(m),
           transfer_table(m), extras_table(m), head_table(m)]  # fmt: skip
    return [t for t in out if t is not None]


__all__ = [
    "NA",
    "PERCENT",
    "DECIMALS",
    "PIXEL_DECIMALS",
    "CONVENTIONS",
    "MAIN_DATASETS",
    "DEFAULT_SPLITS",
    "Table",
    "metric_kind",
    "display_value",
    "format_number",
    "format_delta",
    "dataset_key",
    "parse_dataset_key",
    "row_label",
    "ordered_rows",
    "headline_display",
    "main_table",
    "coco_table",
    "testdev_table",
    "ochuman_table",
    "comparison_table",
    "transfer_table",
    "extras_table",
    "head_table",
    "all_tables",
]
