"""Validation of the unified instance table: clean rows, quarantined rows, and a report.

A Great Expectations suite is built from :mod:`posebh.data.schema` and :mod:`posebh.skeletons`
and does the checking. Row checks that need the array columns (``keypoints``, ``bbox``) or
several rows (duplicates, APT-36K video disjointness) are first reduced to one scalar per row
with numpy (for example the number of visible keypoints outside the image); GX validates
those columns and the rows it lists in ``unexpected_index_list`` go to quarantine. Nothing is
dropped: rows in = clean + quarantined, per dataset and split, and the report says so.

Derived columns hold NaN where a check does not apply because another check already covers
the root cause (for example the box-size check on a box with a NaN); GX skips missing values,
so each defect is reported once, under the check that names its cause.

Checks (the ``check`` column of the quarantine joins the failed ones with ";"):

``not_null``               non-nullable scalar columns hold a value
``reader_issue``           the reader left no ``issue`` for the row
``dataset_known``          ``dataset`` is a key of the skeleton registry
``image_size_positive``    width and height >= 1
``file_name_safe``         ``file_name`` is a normalised relative path (``is_safe_file_name``)
``bbox_shape``             the box has 4 values
``bbox_finite``            all 4 values are finite
``bbox_positive``          box width and height > 0
``area_valid``             area >= 0 (NaN is caught by ``not_null``)
``iscrowd_values``         iscrowd in {0, 1}
``keypoint_count``         3*K values for the row's dataset
``keypoints_finite``       no NaN/inf in x, y, v
``visibility_values``      v in {0, 1, 2}
``keypoints_inside_image`` labelled keypoints (v > 0) lie within [-t*W, (1+t)*W] x [-t*H, (1+t)*H]
                           with t = ``keypoint_tolerance`` (a fraction of the image size, so one
                           rule fits 640-pixel COCO images and 1920-pixel AIC images alike;
                           annotators place truncated joints just past the border)
``unique_instance_id``     (dataset, split, instance_id) occurs once; the first occurrence stays
                           clean, later ones are quarantined
``video_id_present``       rows of a video dataset (APT-36K) carry a video_id
``video_split_disjoint``   a video of a video dataset lies in one split; when it spans several,
                           its rows stay clean in the split that holds most of them (ties: train,
                           val, test, then by name) and are quarantined in the others, so the
                           clean table is disjoint by construction

Table-level failures (a missing schema column, a wrong dtype) make the whole table unusable:
:func:`validate` raises :class:`TableValidationError` naming them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from posebh import skeletons
from posebh.data.paths import is_safe_file_name
from posebh.data.schema import COLUMNS, KEY, SchemaError

log = logging.getLogger(__name__)

#: GX's in-type-list check compares the dtype's class name for extension dtypes (checked on GX 1.24).
_GX_TYPES = {"string": ["StringDtype"], "int64": ["int64"], "Int64": ["Int64Dtype"], "float64": ["float64"]}
_SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}

CHECKS: tuple[str, ...] = (
    "not_null",
    "reader_issue",
    "dataset_known",
    "image_size_positive",
    "file_name_safe",
    "bbox_shape",
    "bbox_finite",
    "bbox_positive",
    "area_valid",
    "iscrowd_values",
    "keypoint_count",
    "keypoints_finite",
    "visibility_values",
    "keypoints_inside_image",
    "unique_instance_id",
    "video_id_present",
    "video_split_disjoint",
)


class TableValidationError(SchemaError):
    """The table as a whole is unusable (missing column, wrong dtype): no row can be trusted."""


@dataclass
class Validation:
    """``clean``: the passing rows, unchanged, in input order (RangeIndex).
    ``quarantine``: the failing rows, unchanged, plus ``check`` (failed checks, ";"-joined, in
    :data:`CHECKS` order), ``reason`` (one readable reason per failure naming the offending
    value, "; "-joined) and ``row`` (position in the input table).
    ``report``: JSON-able counts per dataset and split, per-check failures with examples, and
    every GX expectation's type, column, success and unexpected count.
    """

    clean: pd.DataFrame
    quarantine: pd.DataFrame
    report: dict[str, Any] = field(default_factory=dict)


def validate(
    table: pd.DataFrame,
    *,
    keypoint_tolerance: float = 0.05,
    name: str = "instances",
    video_disjoint_datasets: tuple[str, ...] | list[str] = ("apt36k",),
    max_examples: int = 3,
) -> Validation:
    """Split ``table`` into clean and quarantined rows with a GX suite built from the schema.

    ``keypoint_tolerance`` is the fraction of the image width/height by which a labelled
    keypoint may lie outside the image; ``video_disjoint_datasets`` lists the datasets whose
    splits must not share a video; ``max_examples`` caps the example reasons per check.
    """
    t0 = time.perf_counter()
    table = table.reset_index(drop=True)
    gx_run = _GX(name)
    present = [c for c in COLUMNS if c.name in table.columns]
    table_items = _table_items(present)
    # Array columns enter as their per-row lengths: GX hashes every batch and would pickle
    # hundreds of thousands of small arrays; their presence is what this phase checks.
    lengths = {c.name: _lengths(table[c.name].to_numpy(dtype=object)) for c in present if c.dtype == "array"}
    frame = pd.DataFrame({c.name: lengths[c.name] if c.dtype == "array" else table[c.name] for c in present})
    results = gx_run.run(frame, table_items)
    table_failures = [r for r in results if not r["success"]]
    if table_failures:
        detail = "; ".join(f"{r['type']}({r['column']}): observed {r['observed']}" for r in table_failures)
        raise TableValidationError(f"{name}: table-level expectations failed: {detail}")
    t_table = time.perf_counter()

    derived, ctx = _derive(table, lengths, keypoint_tolerance, tuple(video_disjoint_datasets))
    t_derive = time.perf_counter()
    results += gx_run.run(derived, _row_items(), offset=len(table_items))
    t_gx = time.perf_counter()

    n = len(table)
    failed: dict[str, dict[int, list[str]]] = {c: {} for c in CHECKS}
    for r in results:
        if r["level"] != "row" or r["success"]:
            continue
        rows = np.asarray(r["unexpected_index_list"], dtype=np.int64)
        for pos, text in zip(rows.tolist(), _reasons(r["check"], r, rows, table, ctx)):
            failed[r["check"]].setdefault(pos, []).append(text)

    bad = np.zeros(n, dtype=bool)
    for rows in failed.values():
        if rows:
            bad[np.fromiter(rows, dtype=np.int64)] = True
    q_pos = np.flatnonzero(bad)
    check_col, reason_col = [], []
    for p in q_pos.tolist():
        names = [c for c in CHECKS if p in failed[c]]
        check_col.append(";".join(names))
        reason_col.append("; ".join(t for c in names for t in failed[c][p]))

    clean = table.iloc[np.flatnonzero(~bad)].reset_index(drop=True)
    quarantine = table.iloc[q_pos].reset_index(drop=True)
    quarantine["check"] = pd.array(check_col, dtype="string")
    quarantine["reason"] = pd.array(reason_col, dtype="string")
    quarantine["row"] = pd.array(q_pos, dtype="int64")

    report = _report(table, bad, failed, results, name, keypoint_tolerance, video_disjoint_datasets, max_examples)
    # Timings go to the log, not the report, so identical inputs give byte-identical reports.
    log.debug(
        "%s: validation took %.3f s (table %.3f, derive %.3f, GX %.3f)",
        name, time.perf_counter() - t0, t_table - t0, t_derive - t_table, t_gx - t_derive,
    )
    if len(quarantine) != report["quarantined"] or len(clean) + len(quarantine) != n:
        raise AssertionError("validation lost rows")  # guards the invariant, never expected
    log.info("%s: %d rows in, %d clean, %d quarantined", name, n, len(clean), len(quarantine))
    return Validation(clean, quarantine, report)


# ----------------------------------------------------------------------------------------------
# Derived per-row columns (numpy on stacked arrays, one stack per array length)
# ----------------------------------------------------------------------------------------------


def _lengths(values: np.ndarray) -> np.ndarray:
    def n(v) -> int:
        try:
            return len(v)
        except TypeError:
            return -1

    return np.fromiter((n(v) for v in values), dtype=np.int64, count=len(values))


def _int_or(series: pd.Series, fill: int) -> np.ndarray:
    return pd.array(series, dtype="Int64").to_numpy(dtype=np.int64, na_value=fill)


def _derive(table: pd.DataFrame, lengths: dict[str, np.ndarray], tol: float, video_datasets: tuple[str, ...]) -> tuple[pd.DataFrame, dict]:
    n = len(table)
    dataset = table["dataset"].astype("string")
    ds_codes, ds_uniques = pd.factorize(dataset, use_na_sentinel=True)
    registry = skeletons.SKELETONS
    k_of = np.array([3 * registry[d].num_keypoints if d in registry else -1 for d in ds_uniques] + [-1], dtype=np.int64)
    width = pd.array(table["width"], dtype="Float64").to_numpy(dtype=np.float64, na_value=np.nan)
    height = pd.array(table["height"], dtype="Float64").to_numpy(dtype=np.float64, na_value=np.nan)
    w_ok = np.where(width >= 1, width, np.nan)
    h_ok = np.where(height >= 1, height, np.nan)

    kp = table["keypoints"].to_numpy(dtype=object)
    klen = lengths["keypoints"]
    expected = k_of[ds_codes]  # code -1 (NA dataset) picks the trailing -1
    unknown = expected < 0
    expected = np.where(unknown, klen, expected)  # unknown datasets are reported by dataset_known only
    kp_nonfinite = np.zeros(n, np.int64)
    kp_badvis = np.zeros(n, np.int64)
    kp_outside = np.zeros(n, np.int64)
    for length in np.unique(klen):
        if length <= 0 or length % 3:
            continue
        pos = np.flatnonzero(klen == length)
        arr = np.stack(kp[pos]).astype(np.float64, copy=False).reshape(len(pos), -1, 3)
        finite = np.isfinite(arr)
        kp_nonfinite[pos] = (~finite).sum(axis=(1, 2))
        x, y, v = arr[..., 0], arr[..., 1], arr[..., 2]
        all_finite = finite.all(axis=2)
        kp_badvis[pos] = (all_finite & (v != 0) & (v != 1) & (v != 2)).sum(axis=1)
        labelled = all_finite & ((v == 1) | (v == 2))
        w, h = w_ok[pos, None], h_ok[pos, None]
        with np.errstate(invalid="ignore"):
            out = (x < -tol * w) | (x > (1 + tol) * w) | (y < -tol * h) | (y > (1 + tol) * h)
        kp_outside[pos] = (labelled & out).sum(axis=1)

    bb = table["bbox"].to_numpy(dtype=object)
    blen = lengths["bbox"]
    bb_nonfinite = np.zeros(n, np.int64)
    bb_min_side = np.full(n, np.nan)
    pos = np.flatnonzero(blen == 4)
    if len(pos):
        arr = np.stack(bb[pos]).astype(np.float64, copy=False)
        finite = np.isfinite(arr)
        bb_nonfinite[pos] = (~finite).sum(axis=1)
        bb_min_side[pos] = np.where(finite.all(axis=1), np.minimum(arr[:, 2], arr[:, 3]), np.nan)

    fn_safe = _file_names_safe(table["file_name"])

    dup_rank = table.groupby(list(KEY), dropna=False, sort=False).cumcount().to_numpy(np.int64)

    video_missing, video_conflict, keep_split = _video_checks(table, dataset, video_datasets)

    derived = pd.DataFrame(
        {c.name: table[c.name] for c in COLUMNS if c.dtype != "array"}
        | {
            "file_name_safe": fn_safe,
            "bbox_values": blen,
            "bbox_nonfinite": bb_nonfinite,
            "bbox_min_side": bb_min_side,
            "keypoint_values": klen,
            "keypoint_values_expected": expected,
            "keypoints_nonfinite": kp_nonfinite,
            "keypoints_bad_visibility": kp_badvis,
            "keypoints_outside": kp_outside,
            "duplicate_rank": dup_rank,
            "video_id_missing": video_missing,
            "video_split_conflict": video_conflict,
        },
        index=pd.RangeIndex(n),
    )
    ctx = {"tol": tol, "w": w_ok, "h": h_ok, "keep_split": keep_split}
    return derived, ctx


#: Names that normalise to themselves by construction: relative, no empty, "." or ".." component,
#: no backslash, drive or NUL. Only the others need the exact (slower, per-name) check.
_PLAIN_NAME = r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]*(?:/[A-Za-z0-9_\-][A-Za-z0-9_.\-]*)*"


def _file_names_safe(names: pd.Series) -> np.ndarray:
    codes, uniques = pd.factorize(names.astype("string"), use_na_sentinel=True)
    uniques = pd.Series(uniques, dtype="string")
    safe_u = uniques.str.fullmatch(_PLAIN_NAME).to_numpy(dtype=bool, na_value=False)
    for i in np.flatnonzero(~safe_u):
        safe_u[i] = is_safe_file_name(uniques.iat[i])
    return np.where(codes >= 0, np.append(safe_u, True)[codes], True)  # null names: not_null reports them


def _video_checks(table: pd.DataFrame, dataset: pd.Series, video_datasets: tuple[str, ...]):
    n = len(table)
    missing = np.zeros(n, np.int64)
    conflict = np.zeros(n, np.int64)
    keep_split: dict[tuple[str, int], tuple[str, dict[str, int]]] = {}
    in_video_ds = dataset.isin(list(video_datasets)).to_numpy(dtype=bool, na_value=False)
    if not in_video_ds.any():
        return missing, conflict, keep_split
    vid_na = table["video_id"].isna().to_numpy()
    missing[in_video_ds & vid_na] = 1
    sel = np.flatnonzero(in_video_ds & ~vid_na)
    if len(sel) == 0:
        return missing, conflict, keep_split
    sub = pd.DataFrame(
        {
            "dataset": dataset.iloc[sel].to_numpy(dtype=object),
            "video_id": _int_or(table["video_id"].iloc[sel], -1),
            "split": table["split"].iloc[sel].astype("string").fillna("<NA>").to_numpy(dtype=object),
        }
    )
    counts = sub.groupby(["dataset", "video_id", "split"], sort=False).size()
    n_splits = counts.groupby(level=[0, 1]).size()
    shared = n_splits[n_splits > 1]
    if shared.empty:
        return missing, conflict, keep_split
    for (ds, vid), _ in shared.items():
        per_split = {str(s): int(c) for s, c in counts.loc[(ds, vid)].items()}
        keep = min(per_split, key=lambda s: (-per_split[s], _SPLIT_ORDER.get(s, 3), s))
        keep_split[(ds, int(vid))] = (keep, per_split)
    keys = pd.MultiIndex.from_arrays([sub["dataset"], sub["video_id"]])
    kept = pd.Series({k: v[0] for k, v in keep_split.items()}, dtype=object)
    kept.index = pd.MultiIndex.from_tuples(kept.index)
    keep_for_row = kept.reindex(keys).to_numpy(dtype=object)
    has = pd.notna(keep_for_row)
    conflict[sel[has & (keep_for_row != sub["split"].to_numpy(dtype=object))]] = 1
    return missing, conflict, keep_split


# ----------------------------------------------------------------------------------------------
# The GX suite
# ----------------------------------------------------------------------------------------------


def _table_items(present) -> list[tuple[str, str, str, dict]]:
    """Table-level expectations from the schema: every column exists, present scalar columns have their dtype."""
    items: list[tuple[str, str, str, dict]] = []
    for col in COLUMNS:
        items.append(("table", "column_exists", "ExpectColumnToExist", {"column": col.name}))
    for col in present:
        if col.dtype != "array":
            items.append(("table", "column_type", "ExpectColumnValuesToBeInTypeList", {"column": col.name, "type_list": _GX_TYPES[col.dtype]}))
    return items


def _row_items() -> list[tuple[str, str, str, dict]]:
    """(level, check, expectation class name, kwargs) of the row expectations, from the schema and registry."""
    registry = sorted(skeletons.SKELETONS)
    items: list[tuple[str, str, str, dict]] = []
    for col in COLUMNS:
        if col.dtype != "array" and not col.nullable:
            items.append(("row", "not_null", "ExpectColumnValuesToNotBeNull", {"column": col.name}))
    between = "ExpectColumnValuesToBeBetween"
    items += [
        ("row", "reader_issue", "ExpectColumnValuesToBeNull", {"column": "issue"}),
        ("row", "dataset_known", "ExpectColumnValuesToBeInSet", {"column": "dataset", "value_set": registry}),
        ("row", "image_size_positive", between, {"column": "width", "min_value": 1}),
        ("row", "image_size_positive", between, {"column": "height", "min_value": 1}),
        ("row", "file_name_safe", "ExpectColumnValuesToBeInSet", {"column": "file_name_safe", "value_set": [True]}),
        ("row", "bbox_shape", between, {"column": "bbox_values", "min_value": 4, "max_value": 4}),
        ("row", "bbox_finite", between, {"column": "bbox_nonfinite", "min_value": 0, "max_value": 0}),
        ("row", "bbox_positive", between, {"column": "bbox_min_side", "min_value": 0, "strict_min": True}),
        ("row", "area_valid", between, {"column": "area", "min_value": 0}),
        ("row", "iscrowd_values", "ExpectColumnValuesToBeInSet", {"column": "iscrowd", "value_set": [0, 1]}),
        ("row", "keypoint_count", "ExpectColumnPairValuesToBeEqual", {"column_A": "keypoint_values", "column_B": "keypoint_values_expected"}),
        ("row", "keypoints_finite", between, {"column": "keypoints_nonfinite", "min_value": 0, "max_value": 0}),
        ("row", "visibility_values", between, {"column": "keypoints_bad_visibility", "min_value": 0, "max_value": 0}),
        ("row", "keypoints_inside_image", between, {"column": "keypoints_outside", "min_value": 0, "max_value": 0}),
        ("row", "unique_instance_id", between, {"column": "duplicate_rank", "min_value": 0, "max_value": 0}),
        ("row", "video_id_present", between, {"column": "video_id_missing", "min_value": 0, "max_value": 0}),
        ("row", "video_split_disjoint", between, {"column": "video_split_conflict", "min_value": 0, "max_value": 0}),
    ]
    return items


class _GX:
    """One ephemeral GX context (no project folder, no progress bars) reused for both phases."""

    def __init__(self, name: str):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import great_expectations as gx
            from great_expectations.data_context.types.base import ProgressBarsConfig

        self.gx = gx
        self.name = name
        with _quiet_gx():
            self.ctx = gx.get_context(mode="ephemeral")
            self.ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
            self.batch_def = self.ctx.data_sources.add_pandas("posebh").add_dataframe_asset(name).add_batch_definition_whole_dataframe("all")

    def run(self, frame: pd.DataFrame, items: list[tuple[str, str, str, dict]], offset: int = 0) -> list[dict]:
        gx = self.gx
        with _quiet_gx():
            batch = self.batch_def.get_batch(batch_parameters={"dataframe": frame})
            suite = gx.ExpectationSuite(name=f"posebh_{self.name}_{offset}")
            for i, (lvl, check, cls, kwargs) in enumerate(items, start=offset):
                suite.add_expectation(getattr(gx.expectations, cls)(**kwargs, meta={"item": i, "level": lvl, "check": check}))
            res = batch.validate(suite, result_format="COMPLETE")
        return _results(res)


class _quiet_gx:
    """GX logs INFO per context (one of its loggers sets its own level); keep WARNING and above."""

    names = ("great_expectations", "great_expectations.data_context.types.base")

    def __enter__(self):
        self.saved = [(lg, lg.level) for lg in map(logging.getLogger, self.names)]
        for lg, level in self.saved:
            lg.setLevel(max(level, logging.WARNING))

    def __exit__(self, *exc):
        for lg, level in self.saved:
            lg.setLevel(level)


def _results(res) -> list[dict]:
    out: list[dict] = []
    for r in res.results:
        cfg = r.expectation_config
        meta = cfg.meta or {}
        if r.exception_info and r.exception_info.get("raised_exception"):
            raise RuntimeError(f"GX expectation {cfg.type} failed to run: {r.exception_info.get('exception_message')}")
        kw = cfg.kwargs
        column = kw.get("column") or ",".join(str(kw[k]) for k in ("column_A", "column_B") if k in kw)
        result = r.result or {}
        out.append(
            {
                "item": int(meta.get("item", -1)),
                "level": meta.get("level"),
                "check": meta.get("check"),
                "type": cfg.type,
                "column": column,
                "success": bool(r.success),
                "unexpected_count": int(result.get("unexpected_count") or 0),
                "unexpected_index_list": result.get("unexpected_index_list") or [],
                "observed": result.get("observed_value"),
                "kwargs": {k: v for k, v in kw.items() if k not in ("batch_id", "column", "column_A", "column_B")},
            }
        )
    out.sort(key=lambda r: r["item"])
    return out


# ----------------------------------------------------------------------------------------------
# Reasons (computed for the quarantined rows only)
# ----------------------------------------------------------------------------------------------


def _kp_name(dataset: Any, i: int) -> str:
    sk = skeletons.SKELETONS.get(dataset) if isinstance(dataset, str) else None
    if sk is not None and i < sk.num_keypoints:
        return f"keypoint {i} ({sk.keypoints[i]})"
    return f"keypoint {i}"


def _more(count: int) -> str:
    return f" and {count - 1} more" if count > 1 else ""


def _reasons(check: str, r: dict, rows: np.ndarray, table: pd.DataFrame, ctx: dict) -> list[str]:
    col = r["column"]
    out: list[str] = []
    for p in rows.tolist():
        row = table.iloc[p]
        ds = row["dataset"] if pd.notna(row["dataset"]) else None
        if check == "not_null":
            out.append(f"{col} is null")
        elif check == "reader_issue":
            out.append(f"reader issue: {row['issue']}")
        elif check == "dataset_known":
            out.append(f"dataset {ds!r} is not in the skeleton registry")
        elif check == "image_size_positive":
            out.append(f"image {col} {row[col]} is not positive")
        elif check == "file_name_safe":
            out.append(f"file_name {row['file_name']!r} is not a normalised path inside the image root")
        elif check == "bbox_shape":
            out.append(f"bbox has {_len(row['bbox'])} values, expected 4")
        elif check == "bbox_finite":
            out.append(f"bbox {_fmt(row['bbox'])} is not finite")
        elif check == "bbox_positive":
            b = np.asarray(row["bbox"], np.float64)
            out.append(f"bbox width {b[2]:g} / height {b[3]:g}: both must be > 0")
        elif check == "area_valid":
            out.append(f"area {row['area']:g} is negative")
        elif check == "iscrowd_values":
            out.append(f"iscrowd {row['iscrowd']} not in {{0, 1}}")
        elif check == "keypoint_count":
            k = skeletons.SKELETONS[ds].num_keypoints
            out.append(f"{_len(row['keypoints'])} keypoint values, expected {3 * k} (3 x {k} for {ds})")
        elif check in ("keypoints_finite", "visibility_values", "keypoints_inside_image"):
            a = np.asarray(row["keypoints"], np.float64).reshape(-1, 3)
            fin = np.isfinite(a).all(axis=1)
            if check == "keypoints_finite":
                idx = np.flatnonzero(~fin)
                x, y, v = a[idx[0]]
                out.append(f"{_kp_name(ds, idx[0])} is ({x:g}, {y:g}, {v:g}): not finite{_more(len(idx))}")
            elif check == "visibility_values":
                idx = np.flatnonzero(fin & ~np.isin(a[:, 2], (0, 1, 2)))
                out.append(f"visibility {a[idx[0], 2]:g} at {_kp_name(ds, idx[0])}, allowed 0, 1, 2{_more(len(idx))}")
            else:
                w, h, t = ctx["w"][p], ctx["h"][p], ctx["tol"]
                x, y = a[:, 0], a[:, 1]
                lab = fin & np.isin(a[:, 2], (1, 2))
                idx = np.flatnonzero(lab & ((x < -t * w) | (x > (1 + t) * w) | (y < -t * h) | (y > (1 + t) * h)))
                i = idx[0]
                out.append(
                    f"{_kp_name(ds, i)} at ({x[i]:.1f}, {y[i]:.1f}) lies outside the {w:g}x{h:g} image "
                    f"by more than {t:.0%} of its size{_more(len(idx))}"
                )
        elif check == "unique_instance_id":
            out.append(f"instance_id {row['instance_id']} repeats in ({ds}, {row['split']}); the first occurrence stays clean")
        elif check == "video_id_present":
            out.append(f"{ds} row has no video_id, so split disjointness cannot be checked")
        elif check == "video_split_disjoint":
            vid = int(row["video_id"])
            keep, per_split = ctx["keep_split"][(ds, vid)]
            spread = ", ".join(f"{s} ({c} rows)" for s, c in sorted(per_split.items(), key=lambda kv: -kv[1]))
            out.append(f"video {vid} of {ds} spans splits {spread}; its rows stay in {keep}, not {row['split']}")
        else:  # pragma: no cover - every suite check has a reason
            out.append(check)
    return out


def _len(v: Any) -> int:
    try:
        return len(v)
    except TypeError:
        return -1


def _fmt(v: Any) -> str:
    return "[" + ", ".join(f"{float(x):g}" for x in np.asarray(v).ravel()) + "]"


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------


def _label(v: Any) -> str:
    return "<NA>" if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)) else str(v)


def _report(table, bad, failed, results, name, tol, video_datasets, max_examples) -> dict[str, Any]:
    n = len(table)
    ds = table["dataset"].astype("string").fillna("<NA>").to_numpy(dtype=object)
    sp = table["split"].astype("string").fillna("<NA>").to_numpy(dtype=object)
    frame = pd.DataFrame({"dataset": ds, "split": sp, "bad": bad})
    datasets: dict[str, Any] = {}
    for (d, s), g in frame.groupby(["dataset", "split"], sort=True):
        entry = datasets.setdefault(d, {"rows_in": 0, "clean": 0, "quarantined": 0, "splits": {}, "checks": {}, "examples": {}})
        q = int(g["bad"].sum())
        entry["splits"][s] = {"rows_in": len(g), "clean": len(g) - q, "quarantined": q}
        entry["rows_in"] += len(g)
        entry["clean"] += len(g) - q
        entry["quarantined"] += q
    checks: dict[str, Any] = {}
    for c in CHECKS:
        rows = sorted(failed[c])
        examples = []
        for p in rows[:max_examples]:
            examples.append(f"row {p} ({ds[p]}/{sp[p]}, instance {_label(table['instance_id'].iat[p])}): " + "; ".join(failed[c][p]))
        checks[c] = {"failures": len(rows), "examples": examples}
        if rows:
            per_ds = pd.Series(ds[rows]).value_counts()
            for d, cnt in per_ds.items():
                datasets[d]["checks"][c] = int(cnt)
            for p in rows:
                ex = datasets[ds[p]]["examples"].setdefault(c, [])
                if len(ex) < max_examples:
                    ex.append("; ".join(failed[c][p]))
    q = int(bad.sum())
    return {
        "name": name,
        "parameters": {"keypoint_tolerance": float(tol), "video_disjoint_datasets": list(video_datasets)},
        "rows_in": n,
        "clean": n - q,
        "quarantined": q,
        "success": q == 0,
        "datasets": datasets,
        "checks": checks,
        "expectations": [
            {
                "check": r["check"],
                "level": r["level"],
                "type": r["type"],
                "column": r["column"],
                "success": r["success"],
                "unexpected_count": r["unexpected_count"],
            }
            for r in results
        ],
        "gx": {
            "evaluated": len(results),
            "successful": sum(r["success"] for r in results),
            "success": all(r["success"] for r in results),
        },
    }


def render_report_markdown(report: dict[str, Any], *, top: int = 5) -> str:
    """A readable summary of a validation report: totals, a table per dataset, top reasons."""
    n, q = report["rows_in"], report["quarantined"]
    pct = f" ({100 * q / n:.2f}%)" if n else ""
    tol = report.get("parameters", {}).get("keypoint_tolerance")
    lines = [
        f"# Validation report: {report['name']}",
        "",
        f"{n} rows in: {report['clean']} clean, {q} quarantined{pct}.",
    ]
    if tol is not None:
        lines.append(f"Keypoint tolerance: {tol:.0%} of the image size outside its border.")
    gx_info = report.get("gx", {})
    if gx_info:
        lines.append(f"Great Expectations: {gx_info['successful']} of {gx_info['evaluated']} expectations met.")
    for d, entry in report["datasets"].items():
        lines += ["", f"## {d}", "", "| split | rows in | clean | quarantined |", "|---|---:|---:|---:|"]
        for s, c in entry["splits"].items():
            lines.append(f"| {s} | {c['rows_in']} | {c['clean']} | {c['quarantined']} |")
        lines.append(f"| **all** | {entry['rows_in']} | {entry['clean']} | {entry['quarantined']} |")
        if entry["checks"]:
            lines += ["", "| failed check | rows | example |", "|---|---:|---|"]
            ranked = sorted(entry["checks"].items(), key=lambda kv: -kv[1])[:top]
            for c, cnt in ranked:
                ex = entry["examples"].get(c, [""])[0].replace("|", "\\|")
                lines.append(f"| {c} | {cnt} | {ex} |")
        else:
            lines += ["", "No failed checks."]
    failing = [e for e in report.get("expectations", []) if not e["success"]]
    lines += ["", "## Expectations", ""]
    if failing:
        lines += ["| check | expectation | column | unexpected |", "|---|---|---|---:|"]
        for e in failing:
            lines.append(f"| {e['check']} | {e['type']} | {e['column']} | {e['unexpected_count']} |")
    else:
        lines.append("All expectations met.")
    return "\n".join(lines) + "\n"


def merge_reports(reports: list[dict[str, Any]], *, name: str = "all datasets") -> dict[str, Any]:
    """One report over several per-dataset reports, in the same shape (so it renders the same)."""
    merged: dict[str, Any] = {
        "name": name,
        "rows_in": sum(r["rows_in"] for r in reports),
        "clean": sum(r["clean"] for r in reports),
        "quarantined": sum(r["quarantined"] for r in reports),
        "success": all(r["success"] for r in reports),
        "datasets": {},
        "checks": {},
        "expectations": [dict(e, report=r["name"]) for r in reports for e in r.get("expectations", []) if not e["success"]],
    }
    if reports:
        merged["parameters"] = reports[0].get("parameters", {})
    for r in reports:
        for d, entry in r["datasets"].items():
            if d in merged["datasets"]:
                raise ValueError(f"dataset {d!r} appears in two validation reports")
            merged["datasets"][d] = entry
        for c, entry in r["checks"].items():
            acc = merged["checks"].setdefault(c, {"failures": 0, "examples": []})
            acc["failures"] += entry["failures"]
            acc["examples"] = (acc["examples"] + entry["examples"])[: max(len(entry["examples"]), 3)]
    return merged


__all__ = ["CHECKS", "TableValidationError", "Validation", "merge_reports", "render_report_markdown", "validate"]
