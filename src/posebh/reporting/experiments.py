"""Hyperparameter sweeps as DVC experiments, and their results in the supplementary's table layout.

The sweeps are data (``conf/base/parameters_experiments.yml``, key ``experiments``): each names
the parameters it varies (paper symbol -> dotted key in the params file), the settings, and the
supplementary table it reproduces. :func:`exp_run_commands` writes one ``dvc exp run --queue`` per
setting; :func:`paper_tables` reads ``dvc exp show --json`` and lays the results out as the paper
does: one table per sweep, a row per setting, the swept symbols then one column per metric.

A result belongs to a row when the swept keys have the row's values and every other swept key has
its default (the value at the baseline commit), so an experiment of one sweep never shows up in
another's table while the baseline commit fills the default row of every table. No kedro here::

    python -m posebh.reporting.experiments commands [CONFIG]
    python -m posebh.reporting.experiments table EXP_SHOW_JSON [CONFIG]
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

DEFAULT_CONFIG = "conf/base/parameters_experiments.yml"
#: what an empty cell shows (no finished experiment for that setting, or a missing metric)
MISSING = "–"


class ExperimentsConfigError(ValueError):
    """The sweeps configuration is malformed."""


@dataclass(frozen=True)
class Sweep:
    name: str
    table: str
    title: str
    params: tuple[tuple[str, str], ...]  # (paper symbol, dotted key), in column order
    settings: tuple[tuple[Any, ...], ...]  # one value per param, in the same order

    @property
    def symbols(self) -> list[str]:
        return [s for s, _ in self.params]

    @property
    def keys(self) -> list[str]:
        return [k for _, k in self.params]


@dataclass(frozen=True)
class ExperimentsConfig:
    params_file: str
    metrics_file: str
    metrics: tuple[tuple[str, str], ...]  # (column label, dotted key in metrics_file)
    sweeps: tuple[Sweep, ...]

    @property
    def swept_keys(self) -> list[str]:
        return list(dict.fromkeys(k for s in self.sweeps for k in s.keys))


def parse_config(doc: Mapping[str, Any]) -> ExperimentsConfig:
    """Validate the ``experiments`` mapping (or a document holding it under that key)."""
    doc = doc.get("experiments", doc) if isinstance(doc, Mapping) else doc
    if not isinstance(doc, Mapping):
        raise ExperimentsConfigError("experiments: expected a mapping")
    for key in ("params_file", "metrics_file", "metrics", "sweeps"):
        if key not in doc:
            raise ExperimentsConfigError(f"experiments: missing {key!r}")
    metrics = doc["metrics"]
    if not isinstance(metrics, Mapping) or not metrics:
        raise ExperimentsConfigError("experiments.metrics: expected {column label: dotted key}")
    sweeps, names = [], set()
    for i, raw in enumerate(doc["sweeps"] or []):
        where = f"experiments.sweeps[{i}]"
        try:
            name, params, settings = str(raw["name"]), raw["params"], raw["settings"]
        except (KeyError, TypeError) as exc:
            raise ExperimentsConfigError(f"{where}: needs name, params and settings") from exc
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name) or name in names:
            raise ExperimentsConfigError(f"{where}: name {name!r} must be unique and usable in an experiment name")
        names.add(name)
        if not isinstance(params, Mapping) or not params:
            raise ExperimentsConfigError(f"{where}.params: expected {{symbol: dotted key}}")
        rows = []
        for j, setting in enumerate(settings or []):
            values = tuple(setting) if isinstance(setting, (list, tuple)) else (setting,)
            if len(values) != len(params):
                raise ExperimentsConfigError(f"{where}.settings[{j}]: {len(values)} values for {len(params)} params")
            rows.append(values)
        if not rows:
            raise ExperimentsConfigError(f"{where}: no settings")
        sweeps.append(Sweep(name, str(raw.get("table", name)), str(raw.get("title", name)),
                            tuple((str(s), str(k)) for s, k in params.items()), tuple(rows)))  # fmt: skip
    if not sweeps:
        raise ExperimentsConfigError("experiments.sweeps: empty")
    return ExperimentsConfig(str(doc["params_file"]), str(doc["metrics_file"]),
                             tuple((str(c), str(k)) for c, k in metrics.items()), tuple(sweeps))  # fmt: skip


def load_config(path: str | Path = DEFAULT_CONFIG) -> ExperimentsConfig:
    import yaml

    return parse_config(yaml.safe_load(Path(path).read_text()))


# ----------------------------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------------------------


def format_value(value: Any) -> str:
    """A value as ``dvc exp run -S`` reads it back unchanged (floats keep a mantissa dot: 1.0e-07)."""
    if isinstance(value, bool) or not isinstance(value, float):
        return json.dumps(value) if isinstance(value, (bool, type(None))) else str(value)
    text = repr(value)
    mantissa, e, exponent = text.partition("e")
    if e and "." not in mantissa:
        text = f"{mantissa}.0e{exponent}"
    return text


def experiment_name(sweep: Sweep, index: int) -> str:
    return f"{sweep.name}-{index}"


def exp_run_commands(config: ExperimentsConfig, defaults: Mapping[str, Any] | None = None, *, queue: bool = True) -> list[str]:
    """One ``dvc exp run`` per setting; settings equal to ``defaults`` (the baseline) are left out."""
    commands = []
    for sweep in config.sweeps:
        for i, setting in enumerate(sweep.settings):
            if defaults is not None and all(_same(defaults.get(k), v) for k, v in zip(sweep.keys, setting)):
                continue
            sets = " ".join(f"-S '{config.params_file}:{k}={format_value(v)}'" for k, v in zip(sweep.keys, setting))
            commands.append(f"dvc exp run{' --queue' if queue else ''} -n {experiment_name(sweep, i)} {sets}")
    return commands


# ----------------------------------------------------------------------------------------------
# dvc exp show --json
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExperimentResult:
    name: str | None
    rev: str
    kind: str  # "workspace" | "commit" | "experiment"
    params: Mapping[str, Any]  # params file -> its parameters
    metrics: Mapping[str, Any]  # metrics file -> its content
    ok: bool  # finished without error and has metrics


def _record(entry: Mapping[str, Any], kind: str) -> ExperimentResult:
    data = entry.get("data") or {}

    def files(section: str) -> dict[str, Any]:
        return {f: (v or {}).get("data", {}) for f, v in (data.get(section) or {}).items()}

    metrics = files("metrics")
    ok = not entry.get("error") and not data.get("error") and bool(metrics)
    return ExperimentResult(entry.get("name"), str(entry.get("rev", "")), kind, files("params"), metrics, ok)


def experiment_results(show: Sequence[Mapping[str, Any]]) -> list[ExperimentResult]:
    """Flatten ``dvc exp show --json`` (DVC 3.x): the workspace, each commit, each experiment's revs."""
    if not isinstance(show, Sequence) or isinstance(show, (str, bytes)):
        raise ValueError("dvc exp show --json: expected a list of revisions")
    results = []
    for entry in show:
        results.append(_record(entry, "workspace" if entry.get("rev") == "workspace" else "commit"))
        for exp in entry.get("experiments") or []:
            state = (exp.get("executor") or {}).get("state")
            for rev in exp.get("revs") or []:
                rec = _record({**rev, "name": rev.get("name") or exp.get("name")}, "experiment")
                if state not in (None, "success"):  # queued, running or failed
                    rec = ExperimentResult(rec.name, rec.rev, rec.kind, rec.params, rec.metrics, False)
                results.append(rec)
    return results


def _get(doc: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(doc, Mapping) or part not in doc:
            return None
        doc = doc[part]
    return doc


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _same(a: Any, b: Any) -> bool:
    x, y = _number(a), _number(b)
    if x is not None and y is not None:
        return math.isclose(x, y, rel_tol=1e-9, abs_tol=0.0)
    return a == b


def baseline_defaults(results: Iterable[ExperimentResult], config: ExperimentsConfig) -> dict[str, Any]:
    """The swept keys' values at the baseline commit (the first commit in ``dvc exp show``)."""
    for r in results:
        if r.kind == "commit":
            params = r.params.get(config.params_file, {})
            return {k: _get(params, k) for k in config.swept_keys}
    raise ValueError("dvc exp show holds no commit: cannot tell the default setting")


_PREFERENCE = {"experiment": 0, "commit": 1, "workspace": 2}


def sweep_table(results: Sequence[ExperimentResult], config: ExperimentsConfig, sweep: Sweep,
                defaults: Mapping[str, Any]) -> pd.DataFrame:  # fmt: skip
    """Rows = the sweep's settings; columns = its symbols, the metrics, the experiment that filled the row."""
    others = [k for k in config.swept_keys if k not in sweep.keys]
    rows = []
    for setting in sweep.settings:
        candidates = []
        for r in results:
            if not r.ok:
                continue
            params = r.params.get(config.params_file, {})
            if all(_same(_get(params, k), v) for k, v in zip(sweep.keys, setting)) and all(
                _same(_get(params, k), defaults.get(k)) for k in others
            ):
                candidates.append(r)
        best = min(candidates, key=lambda r: _PREFERENCE[r.kind], default=None)
        row: dict[str, Any] = {s: format_value(v) for s, v in zip(sweep.symbols, setting)}
        for label, key in config.metrics:
            value = _number(_get(best.metrics.get(config.metrics_file, {}), key)) if best else None
            row[label] = value
        row["run"] = (best.name or best.rev[:7]) if best else None
        row["default"] = all(_same(defaults.get(k), v) for k, v in zip(sweep.keys, setting))
        rows.append(row)
    return pd.DataFrame(rows, columns=[*sweep.symbols, *(c for c, _ in config.metrics), "run", "default"])


def paper_tables(show: Sequence[Mapping[str, Any]], config: ExperimentsConfig) -> dict[str, list[tuple[Sweep, pd.DataFrame]]]:
    """Per supplementary table (in config order), its sweeps' tables."""
    results = experiment_results(show)
    defaults = baseline_defaults(results, config)
    tables: dict[str, list[tuple[Sweep, pd.DataFrame]]] = {}
    for sweep in config.sweeps:
        tables.setdefault(sweep.table, []).append((sweep, sweep_table(results, config, sweep, defaults)))
    return tables


def _cell(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def to_markdown(tables: Mapping[str, list[tuple[Sweep, pd.DataFrame]]], config: ExperimentsConfig) -> str:
    """The report section: one Markdown table per sweep under its paper table; the default row in bold."""
    lines = ["## Hyperparameter sweeps (supplementary Tables 1-3)", "",
             f"From `dvc exp show --json`; metrics from `{config.metrics_file}`; bold: the paper's setting "
             f"(the baseline commit); {MISSING}: not run yet.", ""]  # fmt: skip
    for table, sweeps in tables.items():
        for sweep, df in sweeps:
            lines += [f"**{table}.** {sweep.title}.", ""]
            cols = [*sweep.symbols, *(c for c, _ in config.metrics), "run"]
            lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            for _, r in df.iterrows():
                cells = [_cell(r[c]) for c in cols]
                if r["default"]:
                    cells = [f"**{c}**" if c != MISSING else c for c in cells]
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    usage = "usage: python -m posebh.reporting.experiments commands [CONFIG] | table EXP_SHOW_JSON [CONFIG]"
    if not args or args[0] not in ("commands", "table") or (args[0] == "table" and len(args) < 2):
        print(usage, file=sys.stderr)
        return 2
    if args[0] == "commands":
        config = load_config(args[1] if len(args) > 1 else DEFAULT_CONFIG)
        import yaml

        params = yaml.safe_load(Path(config.params_file).read_text()) if Path(config.params_file).is_file() else None
        defaults = {k: _get(params, k) for k in config.swept_keys} if params else None
        print("\n".join(exp_run_commands(config, defaults)))
        return 0
    config = load_config(args[2] if len(args) > 2 else DEFAULT_CONFIG)
    show = json.loads(Path(args[1]).read_text())
    print(to_markdown(paper_tables(show, config), config))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
