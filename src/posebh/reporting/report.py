"""The report's input contract and :func:`build_report`, which writes every report artifact.

Inputs (all optional except that ``metrics`` must be a mapping; a missing entry prints "n/a"):

* ``metrics`` (:class:`MetricsInput`): ``rows`` = ``{row: {dataset: {metric: value}}}`` with the
  values exactly as :func:`posebh.evaluation.evaluate_dataset` returns them (OKS AP/AR, PCK and
  AUC as fractions, PCKh in percent, EPE/pixel error in pixels); ``transfer`` =
  ``{"interhand" | "3dpw": {variant: {metric: value}}}``; ``testdev`` =
  ``{row: {"results_file", "num_results"}}``; ``head_cost`` = ``{head: {"params", "flops"}}``.
  A dataset key is a registry name (aliases accepted) or ``name/split``; the bare name means the
  dataset's default evaluation split (:data:`~posebh.reporting.tables.DEFAULT_SPLITS`). Row
  names: ``baseline`` (ViTPose++) and ``posebh`` with the heatmap head, ``<row>_<head>`` with
  another head (``baseline_sar``); other names are shown as they are.
* ``histories``: ``{stage: DataFrame}`` with at least ``epoch``, ``step``, ``loss``.
* ``prototypes``: :class:`PrototypeInput`, a (J, M, F) array and the MDT dataset list.
* ``qualitative``: a list of :class:`QualitativeItem`.

Everything is validated up front (:func:`coerce_metrics`, :func:`validate_inputs`) so a bad
input fails with the path of the offending entry instead of deep inside a plot.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import pandas as pd

from posebh import skeletons
from posebh.reporting import figures, tables

# ----------------------------------------------------------------------------------------------
# Contract
# ----------------------------------------------------------------------------------------------

#: Columns every training history must have.
HISTORY_REQUIRED = ("epoch", "step", "loss")
#: Transfer tasks of Table 7 and their variants in the paper's row order.
TRANSFER_TASKS = ("interhand", "3dpw")
TRANSFER_VARIANTS = ("vitpose_finetune", "scratch", "aic_init", "posebh")
METRICS_SECTIONS = ("rows", "transfer", "testdev", "head_cost")
#: Stage names become file names.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: Slack on "fractions are <= 1" for float noise.
_FRACTION_TOL = 1e-6


class ReportInputError(ValueError):
    """An input of the report is malformed; ``where`` names the entry (``metrics.rows.posebh``)."""

    def __init__(self, where: str, problem: str):
        self.where = where
        self.problem = problem
        super().__init__(f"{where}: {problem}")


class TestDevEntry(TypedDict):
    """A COCO test-dev results file to upload (no GT locally; the server computes AP)."""

    results_file: str
    num_results: int


class HeadCost(TypedDict):
    """Cost of one keypoint head: parameter count and FLOPs per input crop."""

    params: int
    flops: float


class MetricsInput(TypedDict, total=False):
    rows: dict[str, dict[str, dict[str, float]]]
    transfer: dict[str, dict[str, dict[str, float]]]
    testdev: dict[str, TestDevEntry]
    head_cost: dict[str, HeadCost]


class QualitativeItem(TypedDict):
    """One image predicted with several skeletons by several rows (Figures 1-4)."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    title: str
    predictions: dict[str, dict[str, np.ndarray]]  # {row: {skeleton: (N, K, 3) or (K, 3)}}


@dataclass(frozen=True)
class PrototypeInput:
    """The (J, M, F) prototype tensor and the MDT datasets that define its J rows (in order)."""

    array: np.ndarray
    datasets: tuple[str, ...]


@dataclass(frozen=True)
class ReportMetrics:
    """Validated metrics: dataset keys canonical (``coco``, ``ochuman/val``), values floats.

    NaN and pycocotools' -1 ("undefined") are dropped here, so every lookup has one meaning of
    missing: ``None``.
    """

    rows: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    transfer: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    testdev: dict[str, TestDevEntry] = field(default_factory=dict)
    head_cost: dict[str, HeadCost] = field(default_factory=dict)

    def value(self, row: str, dataset: str, metric: str, split: str | None = None) -> float | None:
        """Raw value (as evaluated) or None; ``split=None`` is the dataset's default split."""
        key = tables.dataset_key(dataset, split)
        return self.rows.get(row, {}).get(key, {}).get(metric)

    def transfer_value(self, task: str, variant: str, metric: str) -> float | None:
        return self.transfer.get(task, {}).get(variant, {}).get(metric)

    def row_names(self) -> list[str]:
        return tables.ordered_rows(set(self.rows) | set(self.testdev))


def _number(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ReportInputError(where, f"expected a number, got {type(value).__name__} {value!r}")
    v = float(value)
    return None if math.isnan(v) else v


def _mapping(value: Any, where: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise ReportInputError(where, f"expected a mapping, got {type(value).__name__}")
    for k in value:
        if not isinstance(k, str) or not k:
            raise ReportInputError(where, f"keys must be non-empty strings, got {k!r}")
    return value


def _metric_values(values: Any, where: str, dataset: str | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for metric, raw in _mapping(values, where).items():
        v = _number(raw, f"{where}.{metric}")
        if v is None:
            continue
        kind = tables.metric_kind(metric, dataset)
        if kind in ("fraction", "percent") and v == tables.UNDEFINED:
            continue  # pycocotools: no GT in this subset
        if kind == "fraction" and not -_FRACTION_TOL <= v <= 1 + _FRACTION_TOL:
            raise ReportInputError(
                f"{where}.{metric}",
                f"{v!r} is not a fraction in [0, 1]; pass values as evaluate_dataset returns them "
                f"(OKS AP, PCK and AUC as fractions; this looks already multiplied by {tables.PERCENT:g})",
            )
        if kind in ("percent", "pixels", "count") and v < 0:
            raise ReportInputError(f"{where}.{metric}", f"{v!r} is negative")
        out[metric] = v
    return out


def _canonical_dataset(name: str, where: str) -> str:
    try:
        return tables.canonical_dataset(name)
    except KeyError as e:
        raise ReportInputError(where, str(e.args[0])) from None


def coerce_metrics(metrics: Mapping[str, Any] | ReportMetrics | None) -> ReportMetrics:
    """Validate :class:`MetricsInput` into :class:`ReportMetrics` (idempotent)."""
    if isinstance(metrics, ReportMetrics):
        return metrics
    if metrics is None:
        return ReportMetrics()
    top = _mapping(metrics, "metrics")
    unknown = sorted(set(top) - set(METRICS_SECTIONS))
    if unknown:
        raise ReportInputError("metrics", f"unknown section(s) {unknown}; expected {list(METRICS_SECTIONS)}")

    rows: dict[str, dict[str, dict[str, float]]] = {}
    for row, per_ds in _mapping(top.get("rows", {}), "metrics.rows").items():
        out_row: dict[str, dict[str, float]] = {}
        for key, values in _mapping(per_ds, f"metrics.rows.{row}").items():
            where = f"metrics.rows.{row}.{key}"
            name, split = tables.parse_dataset_key(key)
            ckey = tables.dataset_key(_canonical_dataset(name, where), split)
            if ckey in out_row:
                raise ReportInputError(where, f"names the same dataset and split as another key ({ckey!r})")
            out_row[ckey] = _metric_values(values, where, tables.parse_dataset_key(ckey)[0])
        rows[row] = out_row

    transfer: dict[str, dict[str, dict[str, float]]] = {}
    for task, variants in _mapping(top.get("transfer", {}), "metrics.transfer").items():
        ctask = _canonical_dataset(task, f"metrics.transfer.{task}")
        if ctask not in TRANSFER_TASKS:
            raise ReportInputError(f"metrics.transfer.{task}", f"not a transfer task; expected one of {TRANSFER_TASKS}")
        transfer[ctask] = {
            v: _metric_values(vals, f"metrics.transfer.{task}.{v}", ctask)
            for v, vals in _mapping(variants, f"metrics.transfer.{task}").items()
        }

    testdev: dict[str, TestDevEntry] = {}
    for row, entry in _mapping(top.get("testdev", {}), "metrics.testdev").items():
        where = f"metrics.testdev.{row}"
        entry = _mapping(entry, where)
        missing = {"results_file", "num_results"} - set(entry)
        if missing:
            raise ReportInputError(where, f"missing {sorted(missing)}")
        if not isinstance(entry["results_file"], str) or not entry["results_file"]:
            raise ReportInputError(f"{where}.results_file", "expected a non-empty path string")
        n = entry["num_results"]
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ReportInputError(f"{where}.num_results", f"expected a non-negative int, got {n!r}")
        testdev[row] = TestDevEntry(results_file=entry["results_file"], num_results=int(n))

    head_cost: dict[str, HeadCost] = {}
    for head, cost in _mapping(top.get("head_cost", {}), "metrics.head_cost").items():
        where = f"metrics.head_cost.{head}"
        cost = _mapping(cost, where)
        params = _number(cost.get("params"), f"{where}.params")
        flops = _number(cost.get("flops"), f"{where}.flops")
        if params is None or flops is None or params < 0 or flops < 0:
            raise ReportInputError(where, f"needs non-negative 'params' and 'flops', got {dict(cost)!r}")
        head_cost[head] = HeadCost(params=int(params), flops=float(flops))

    return ReportMetrics(rows=rows, transfer=transfer, testdev=testdev, head_cost=head_cost)


def coerce_histories(histories: Mapping[str, pd.DataFrame] | None) -> dict[str, pd.DataFrame]:
    """Check the training logs: safe stage names, required columns, numeric values."""
    if histories is None:
        return {}
    out: dict[str, pd.DataFrame] = {}
    for stage, df in _mapping(histories, "histories").items():
        where = f"histories.{stage}"
        if not _SAFE_NAME.match(stage):
            raise ReportInputError(where, "stage names become file names: letters, digits, '_', '-', '.' only")
        if not isinstance(df, pd.DataFrame):
            raise ReportInputError(where, f"expected a pandas DataFrame, got {type(df).__name__}")
        missing = [c for c in HISTORY_REQUIRED if c not in df.columns]
        if missing:
            raise ReportInputError(where, f"missing column(s) {missing}; has {list(df.columns)}")
        for c in HISTORY_REQUIRED:
            if not pd.api.types.is_numeric_dtype(df[c]):
                raise ReportInputError(f"{where}.{c}", f"expected numbers, got dtype {df[c].dtype}")
        out[stage] = df.sort_values("step", kind="stable").reset_index(drop=True)
    return out


def coerce_prototypes(prototypes: PrototypeInput | Mapping | Sequence | None) -> PrototypeInput | None:
    """Accept :class:`PrototypeInput`, ``{"array", "datasets"}`` or ``(array, datasets)``."""
    if prototypes is None:
        return None
    if isinstance(prototypes, PrototypeInput):
        array, datasets = prototypes.array, prototypes.datasets
    elif isinstance(prototypes, Mapping):
        if set(prototypes) != {"array", "datasets"}:
            raise ReportInputError("prototypes", f"expected keys 'array' and 'datasets', got {sorted(prototypes)}")
        array, datasets = prototypes["array"], prototypes["datasets"]
    elif isinstance(prototypes, Sequence) and len(prototypes) == 2:
        array, datasets = prototypes
    else:
        raise ReportInputError("prototypes", "expected PrototypeInput, {'array', 'datasets'} or (array, datasets)")
    array = np.asarray(array)
    if array.ndim != 3 or not np.issubdtype(array.dtype, np.number):
        problem = f"expected a numeric (J, M, F) array, got {array.dtype} {array.shape}"
        raise ReportInputError("prototypes.array", problem)
    if not np.isfinite(array).all():
        raise ReportInputError("prototypes.array", "contains NaN or inf")
    if isinstance(datasets, str) or not isinstance(datasets, Sequence):
        raise ReportInputError("prototypes.datasets", f"expected a list of dataset names, got {datasets!r}")
    try:
        space = skeletons.mdt_space(tuple(datasets))
    except (KeyError, ValueError) as e:
        raise ReportInputError("prototypes.datasets", str(e.args[0])) from None
    if space.total != array.shape[0]:
        raise ReportInputError(
            "prototypes", f"J = {array.shape[0]} rows, but the datasets {space.datasets} have {space.total} keypoints"
        )
    return PrototypeInput(array=array.astype(np.float64), datasets=space.datasets)


def coerce_qualitative(items: Sequence[Mapping] | None) -> list[QualitativeItem]:
    """Check images (uint8 RGB) and that each prediction fits its skeleton."""
    if items is None:
        return []
    if isinstance(items, Mapping) or not isinstance(items, Sequence):
        raise ReportInputError("qualitative", f"expected a list of items, got {type(items).__name__}")
    out: list[QualitativeItem] = []
    for i, item in enumerate(items):
        where = f"qualitative[{i}]"
        item = _mapping(item, where)
        missing = {"image", "title", "predictions"} - set(item)
        if missing:
            raise ReportInputError(where, f"missing {sorted(missing)}")
        image = np.asarray(item["image"])
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
            problem = f"expected an (H, W, 3) uint8 image, got {image.dtype} {image.shape}"
            raise ReportInputError(f"{where}.image", problem)
        preds: dict[str, dict[str, np.ndarray]] = {}
        for row, per_skel in _mapping(item["predictions"], f"{where}.predictions").items():
            preds[row] = {}
            for skel, kps in _mapping(per_skel, f"{where}.predictions.{row}").items():
                w = f"{where}.predictions.{row}.{skel}"
                name = _canonical_dataset(skel, w)
                k = skeletons.get(name).num_keypoints
                arr = np.asarray(kps, dtype=np.float64)
                if arr.ndim == 2:
                    arr = arr[None]
                if arr.ndim != 3 or arr.shape[1:] != (k, 3):
                    raise ReportInputError(w, f"expected (N, {k}, 3) keypoints for {name}, got {np.shape(kps)}")
                preds[row][name] = arr
        out.append(QualitativeItem(image=image, title=str(item["title"]), predictions=preds))
    return out


# ----------------------------------------------------------------------------------------------
# metrics.json and plot data
# ----------------------------------------------------------------------------------------------


def _json_number(value: float | None, kind: str) -> float | int | None:
    d = tables.display_value(value, kind)
    if d is None:
        return None
    return int(d) if kind == "count" else round(d, tables.JSON_DECIMALS)


def _drop_none(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None and v != {}}


def metrics_summary(metrics: Mapping | ReportMetrics) -> dict:
    """The ``metrics.json`` document: values in the tables' units (AP x100), rounded, no NaN.

    ``main`` holds the headline per dataset and row plus ``delta`` (PoseBH - ViTPose++ per
    head) and the MDT average; ``rows``/``transfer`` hold every metric; missing ones are absent.
    """
    m = coerce_metrics(metrics)
    main: dict[str, dict] = {}
    for ds in (*tables.MAIN_DATASETS, tables.AVERAGE_KEY):
        entry: dict[str, float | None] = {}
        for row in m.row_names():
            entry[row] = tables.rounded_json(tables.headline_display(m, row, ds))
        for head in tables.heads_present(m):
            b, p = (tables.headline_display(m, tables.row_name(r, head), ds) for r in tables.PAIR)
            if b is not None and p is not None:
                entry[tables.delta_key(head)] = tables.rounded_json(p - b)
        main[ds] = _drop_none(entry)
    rows = {
        row: _drop_none({
            key: _drop_none({
                metric: _json_number(v, tables.metric_kind(metric, tables.parse_dataset_key(key)[0]))
                for metric, v in vals.items()
            })
            for key, vals in per_ds.items()
        })
        for row, per_ds in m.rows.items()
    }  # fmt: skip
    transfer = {
        task: {
            variant: _drop_none({k: _json_number(v, tables.metric_kind(k, task)) for k, v in vals.items()})
            for variant, vals in variants.items()
        }
        for task, variants in m.transfer.items()
    }
    doc = {
        "main": _drop_none(main),
        "rows": _drop_none(rows),
        "transfer": _drop_none(transfer),
        "testdev": {row: {"num_results": e["num_results"]} for row, e in m.testdev.items()},
        "head_cost": {h: {"params": c["params"], "flops": c["flops"]} for h, c in m.head_cost.items()},
    }
    return _drop_none(doc)


def _csv_bytes(df: pd.DataFrame) -> bytes:
    return df.to_csv(index=False, lineterminator="\n", float_format=f"%.{tables.CSV_DIGITS}g").encode()


PER_DATASET_COLUMNS = ("dataset", "metric", "row", "label", "value")


def per_dataset_frame(metrics: Mapping | ReportMetrics) -> pd.DataFrame:
    """Long format ``dataset, metric, row, label, value`` of every headline (for dvc plots)."""
    m = coerce_metrics(metrics)
    records = []
    for ds in tables.bar_datasets(m):
        for row in m.row_names():
            v = tables.headline_display(m, row, ds)
            if v is not None:
                label = f"{tables.dataset_label(ds)} / {tables.row_label(row)}"
                metric = tables.headline_metric(ds)
                records.append({"dataset": ds, "metric": metric, "row": row, "label": label, "value": v})
    return pd.DataFrame.from_records(records, columns=list(PER_DATASET_COLUMNS))


def training_frame(history: pd.DataFrame) -> pd.DataFrame:
    """step, epoch, the loss terms that were logged in this stage, lr (wide, for dvc plots)."""
    cols = ["step", "epoch", *figures.loss_columns(history)]
    if "lr" in history.columns and history["lr"].notna().any():
        cols.append("lr")
    return history[cols]


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------

REPORT_TITLE = "PoseBH reproduction report"
FIGURES_DIR = "figures"
PLOTS_DIR = "plots"
_TEMPLATES = Path(__file__).parent / "templates"


def _env(html: bool):
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATES),
        autoescape=html,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


@dataclass
class _Figure:
    key: str
    title: str
    rel: str  # path relative to out_dir
    data: bytes
    caption: str = ""


@dataclass
class _Artifacts:
    """What the report shows and writes besides tables: figures, plot CSVs, notes."""

    figures: list[_Figure] = field(default_factory=list)
    plot_files: dict[str, bytes] = field(default_factory=dict)
    training_terms: dict[str, list[str]] = field(default_factory=dict)  # stage -> plotted y fields
    notes: list[str] = field(default_factory=list)


def _artifacts(m: ReportMetrics, hist, protos: PrototypeInput | None, qual, random_state: int) -> _Artifacts:
    a = _Artifacts()
    bars = per_dataset_frame(m)
    if len(bars):
        png = figures.figure_png(figures.per_dataset_figure(m))
        caption = "ViTPose++ vs PoseBH (and other rows) on each dataset's headline metric."
        title = "Headline metric per dataset"
        a.figures.append(_Figure("per_dataset", title, f"{FIGURES_DIR}/per_dataset.png", png, caption))
        a.plot_files[f"{PLOTS_DIR}/per_dataset.csv"] = _csv_bytes(bars)
    for stage, df in hist.items():
        if df.empty:
            a.notes.append(f"Training stage `{stage}` has no logged steps.")
            continue
        frame = training_frame(df)
        a.training_terms[stage] = [c for c in frame.columns if c not in ("step", "epoch")]
        a.plot_files[f"{PLOTS_DIR}/training_{stage}.csv"] = _csv_bytes(frame)
        png = figures.figure_png(figures.training_curves_figure(df, stage))
        caption = "Loss terms per step (log scale where they differ by orders of magnitude); learning rate below."
        rel = f"{FIGURES_DIR}/training_{stage}.png"
        a.figures.append(_Figure(f"training_{stage}", f"Training curves: {stage}", rel, png, caption))
    if qual:
        png = figures.image_png(figures.qualitative_panel(qual))
        caption = "Each block: one image; each line one skeleton; columns the rows (ViTPose++ | PoseBH)."
        title = "Qualitative: one image, several skeletons (Figures 1-4 style)"
        a.figures.append(_Figure("qualitative", title, f"{FIGURES_DIR}/qualitative.png", png, caption))
    if protos is not None:
        points = figures.tsne_points(protos.array, protos.datasets, random_state=random_state)
        png = figures.figure_png(figures.tsne_figure(points))
        caption = (f"{len(points)} prototypes ({protos.array.shape[1]} per keypoint), coloured by dataset; "
                   f"perplexity {figures.tsne_perplexity(len(points)):g}, random_state {random_state}.")  # fmt: skip
        title = "t-SNE of the keypoint prototypes (Figure 5 style)"
        a.figures.append(_Figure("tsne", title, f"{FIGURES_DIR}/prototypes_tsne.png", png, caption))
        a.plot_files[f"{PLOTS_DIR}/prototypes_tsne.csv"] = _csv_bytes(points)
    return a


def _dvc_path(prefix: str, rel: str) -> str:
    return f"{prefix.rstrip('/')}/{rel}" if prefix else rel


def _plot(template: str, x: str, path: str, y: list[str], title: str, x_label: str, y_label: str) -> dict:
    return {"template": template, "x": x, "y": {path: y}, "title": title, "x_label": x_label, "y_label": y_label}


def _dvc_plots(prefix: str, a: _Artifacts) -> list[dict | str]:
    """Top-level ``dvc.yaml`` ``plots:`` entries: ``{id: options}`` for CSVs, a bare path per PNG."""
    entries: list[dict | str] = []
    for stage, terms in a.training_terms.items():
        path = _dvc_path(prefix, f"{PLOTS_DIR}/training_{stage}.csv")
        losses = [t for t in terms if t != "lr"]
        entries.append({f"training_{stage}_loss": _plot("linear", "step", path, losses, f"{stage}: training losses",
                                                         "step", "loss")})  # fmt: skip
        if "lr" in terms:
            entries.append({f"training_{stage}_lr": _plot("linear", "step", path, ["lr"], f"{stage}: learning rate",
                                                           "step", "lr")})  # fmt: skip
    bars = f"{PLOTS_DIR}/per_dataset.csv"
    if bars in a.plot_files:
        entries.append({"per_dataset": _plot("bar_horizontal", "value", _dvc_path(prefix, bars), ["label"],
                                             "Headline metric per dataset and row", "headline (AP x100 / PCKh %)",
                                             "dataset / row")})  # fmt: skip
    tsne = f"{PLOTS_DIR}/prototypes_tsne.csv"
    if tsne in a.plot_files:
        entries.append({"prototypes_tsne": _plot("scatter", "x", _dvc_path(prefix, tsne), ["y"],
                                                 "t-SNE of keypoint prototypes", "t-SNE 1", "t-SNE 2")})  # fmt: skip
    entries.extend(_dvc_path(prefix, f.rel) for f in a.figures)
    return entries


def build_report(
    metrics: Mapping | ReportMetrics,
    histories: Mapping[str, pd.DataFrame] | None,
    prototypes: PrototypeInput | Mapping | Sequence | None,
    qualitative: Sequence[Mapping] | None,
    out_dir: str | Path,
    *,
    dvc_prefix: str = "",
    title: str = REPORT_TITLE,
    tsne_random_state: int = figures.TSNE_RANDOM_STATE,
) -> dict[str, Any]:
    """Write the report folder; return ``{"files": {relative path: Path}, "dvc_plots": [...]}``.

    Writes ``report.md`` (figures linked relatively), ``report.html`` (figures embedded, opens
    offline), ``metrics.json``, ``figures/*.png`` and ``plots/*.csv``, each atomically, after
    every input was validated (a bad input writes nothing). Output is a pure function of the
    inputs (no dates, fixed seeds). ``dvc_plots`` lists ``dvc.yaml`` top-level ``plots:``
    entries for those files, paths prefixed by ``dvc_prefix`` (the folder as seen from dvc.yaml).
    """
    import markupsafe

    m = coerce_metrics(metrics)
    hist = coerce_histories(histories)
    protos = coerce_prototypes(prototypes)
    qual = coerce_qualitative(qualitative)
    report_tables = tables.all_tables(m)
    a = _artifacts(m, hist, protos, qual, tsne_random_state)

    out = Path(out_dir)
    files: dict[str, Path] = {}

    def put(rel: str, data: bytes) -> None:
        files[rel] = figures.write_bytes_atomic(out / rel, data)

    for f in a.figures:
        put(f.rel, f.data)
    for rel, data in sorted(a.plot_files.items()):
        put(rel, data)
    put("metrics.json", (json.dumps(metrics_summary(m), indent=2, sort_keys=True, allow_nan=False) + "\n").encode())

    context = {"title": title, "tables": report_tables, "figures": a.figures, "notes": a.notes,
               "conventions": tables.CONVENTIONS}  # fmt: skip
    md = _env(html=False).get_template("report.md.j2").render(
        **context, table_text=lambda t: t.to_markdown(), image_src=lambda f: f.rel
    )
    put("report.md", md.encode())
    html = _env(html=True).get_template("report.html.j2").render(
        **context,
        table_text=lambda t: markupsafe.Markup(t.to_html()),
        image_src=lambda f: "data:image/png;base64," + base64.b64encode(f.data).decode("ascii"),
    )
    put("report.html", html.encode())
    return {"files": dict(sorted(files.items())), "dvc_plots": _dvc_plots(dvc_prefix, a)}


def validate_inputs(metrics, histories=None, prototypes=None, qualitative=None) -> None:
    """Run every check of :func:`build_report` without writing anything (for a pipeline's early fail)."""
    coerce_metrics(metrics)
    coerce_histories(histories)
    coerce_prototypes(prototypes)
    coerce_qualitative(qualitative)


__all__ = [
    "ReportInputError",
    "MetricsInput",
    "TestDevEntry",
    "HeadCost",
    "QualitativeItem",
    "PrototypeInput",
    "ReportMetrics",
    "coerce_metrics",
    "coerce_histories",
    "coerce_prototypes",
    "coerce_qualitative",
    "validate_inputs",
    "metrics_summary",
    "per_dataset_frame",
    "training_frame",
    "build_report",
]
