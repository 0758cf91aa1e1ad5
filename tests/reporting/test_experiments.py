"""posebh.reporting.experiments: sweep commands from the config, and ``dvc exp show --json`` -> paper tables.

The fixture below is written by hand in the shape DVC 3.67 prints (checked against a real
``dvc exp show --json`` of a toy project): a workspace entry, the baseline commit, and the
experiments under it with their executor state.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from posebh.reporting import experiments as ex

REPO_ROOT = Path(__file__).resolve().parents[2]
PARAMS = "conf/base/parameters_model.yml"
METRICS = "data/08_reporting/report/metrics.json"

CONFIG = {
    "experiments": {
        "params_file": PARAMS,
        "metrics_file": METRICS,
        "metrics": {"COCO AP": "main.coco.posebh", "MDT avg": "main.mdt_average.posebh"},
        "sweeps": [
            {"name": "F", "table": "Table 1", "title": "F", "params": {"F": "model.embed_dim"}, "settings": [[32], [64], [128]]},
            {"name": "alpha", "table": "Table 2", "title": "alpha", "params": {"α": "objective.weights.alpha"},
             "settings": [[3.33e-6], [6.25e-6], [1.25e-5]]},
            {"name": "beta-gamma", "table": "Table 2", "title": "beta, gamma",
             "params": {"β": "objective.weights.beta", "γ": "objective.weights.gamma"},
             "settings": [[1.0e-7, 1.0e-8], [1.25e-7, 1.25e-8]]},
        ],
    }
}  # fmt: skip


def _params(embed_dim=64, alpha=3.33e-6, beta=1.25e-7, gamma=1.25e-8) -> dict:
    return {PARAMS: {"data": {
        "model": {"size": "tiny", "embed_dim": embed_dim, "prototypes_per_keypoint": 3},
        "objective": {"sigma": 2.0, "weights": {"alpha": alpha, "beta": beta, "gamma": gamma, "delta": 0.01, "zeta": 0.001}},
    }}}  # fmt: skip


def _metrics(coco: float, avg: float) -> dict:
    return {METRICS: {"data": {"main": {"coco": {"baseline": 0.5, "posebh": coco}, "mdt_average": {"posebh": avg}}}}}


def _rev(rev: str, name: str | None, params: dict, metrics: dict | None, error=None) -> dict:
    data = {"rev": rev, "timestamp": "2026-11-21T12:00:00", "params": params, "deps": {}, "outs": {}, "meta": {}}
    if metrics is not None:
        data["metrics"] = metrics
    return {"rev": rev, "name": name, "data": data, "error": error, "experiments": None}


def _exp(rev: dict, state: str | None) -> dict:
    executor = None if state is None else {"state": state, "name": "dvc-task", "local": None}
    return {"revs": [rev], "executor": executor, "name": rev["name"]}


def exp_show_fixture() -> list[dict]:
    workspace = _rev("workspace", None, _params(), _metrics(9.9, 9.9))  # stale workspace numbers
    workspace["data"]["timestamp"] = None
    commit = _rev("a" * 40, "main", _params(), _metrics(7.1, 20.5))
    commit["experiments"] = [
        _exp(_rev("b" * 40, "F-0", _params(embed_dim=32), _metrics(6.0, 18.0)), "success"),
        _exp(_rev("c" * 40, "F-2", _params(embed_dim=128), _metrics(7.4, 21.0)), None),  # run in the workspace
        _exp(_rev("d" * 40, "alpha-1", _params(alpha=6.25e-6), _metrics(7.2, 20.0)), "success"),
        # changes two sweeps at once: belongs to no table
        _exp(_rev("e" * 40, "mixed", _params(embed_dim=32, alpha=1.25e-5), _metrics(1.0, 1.0)), "success"),
        # failed and queued runs fill nothing
        _exp(_rev("f" * 40, "beta-gamma-0", _params(beta=1e-7, gamma=1e-8), _metrics(3.0, 3.0),
                  error={"type": "ReproductionError", "msg": "failed"}), "failed"),  # fmt: skip
        _exp(_rev("0" * 40, "alpha-2", _params(alpha=1.25e-5), None), "queued"),
    ]
    return [workspace, commit]


def _runs(df) -> list:
    return [r if isinstance(r, str) else None for r in df["run"]]


@pytest.fixture
def config() -> ex.ExperimentsConfig:
    return ex.parse_config(CONFIG)


def test_tables_in_paper_layout(config):
    tables = ex.paper_tables(json.loads(json.dumps(exp_show_fixture())), config)
    assert list(tables) == ["Table 1", "Table 2"]
    (sweep, t1), = tables["Table 1"]
    assert list(t1.columns) == ["F", "COCO AP", "MDT avg", "run", "default"]
    assert t1["F"].tolist() == ["32", "64", "128"]
    assert t1["COCO AP"].tolist() == [6.0, 7.1, 7.4]
    assert _runs(t1) == ["F-0", "main", "F-2"]  # the commit, not the stale workspace
    assert t1["default"].tolist() == [False, True, False]

    (_, alpha), (_, beta_gamma) = tables["Table 2"]
    assert _runs(alpha) == ["main", "alpha-1", None]  # alpha-2 is only queued
    assert alpha["MDT avg"].tolist()[:2] == [20.5, 20.0] and math.isnan(alpha["MDT avg"].tolist()[2])
    assert list(beta_gamma.columns[:2]) == ["β", "γ"]
    assert _runs(beta_gamma) == [None, "main"]  # beta-gamma-0 failed
    assert "mixed" not in set(_runs(t1)) | set(_runs(alpha))


def test_markdown_section(config):
    md = ex.to_markdown(ex.paper_tables(exp_show_fixture(), config), config)
    assert "**Table 1.** F." in md and "| F | COCO AP | MDT avg | run |" in md
    assert "| **64** | **7.1** | **20.5** | **main** |" in md
    assert f"| 1.25e-05 | {ex.MISSING} | {ex.MISSING} | {ex.MISSING} |" in md
    assert md.index("**Table 1.**") < md.index("**Table 2.** alpha.") < md.index("**Table 2.** beta, gamma.")


def test_commands_skip_the_default_and_round_trip_values(config):
    defaults = {"model.embed_dim": 64, "objective.weights.alpha": 3.33e-6,
                "objective.weights.beta": 1.25e-7, "objective.weights.gamma": 1.25e-8}  # fmt: skip
    commands = ex.exp_run_commands(config, defaults)
    assert commands[0] == f"dvc exp run --queue -n F-0 -S '{PARAMS}:model.embed_dim=32'"
    assert len(commands) == 3 - 1 + 3 - 1 + 2 - 1
    assert not any("-n F-1 " in c or "-n alpha-0 " in c or "beta-gamma-1" in c for c in commands)
    bg = next(c for c in commands if "-n beta-gamma-0 " in c)
    assert "objective.weights.beta=1.0e-07" in bg and "objective.weights.gamma=1.0e-08" in bg
    for value in (3.33e-6, 1e-7, 0.01, 1.25e-05, 32, 5e-2):
        text = ex.format_value(value)
        assert yaml.safe_load(text) == value, text  # even YAML 1.1 reads it back as a number
    assert len(ex.exp_run_commands(config)) == 8 and "--queue" not in ex.exp_run_commands(config, queue=False)[0]


def test_bad_configs_are_rejected():
    bad = json.loads(json.dumps(CONFIG))
    bad["experiments"]["sweeps"][2]["settings"] = [[1e-7]]
    with pytest.raises(ex.ExperimentsConfigError, match="1 values for 2 params"):
        ex.parse_config(bad)
    bad = json.loads(json.dumps(CONFIG))
    bad["experiments"]["sweeps"][1]["name"] = "F"
    with pytest.raises(ex.ExperimentsConfigError, match="unique"):
        ex.parse_config(bad)
    with pytest.raises(ex.ExperimentsConfigError, match="metrics_file"):
        ex.parse_config({"experiments": {"params_file": PARAMS, "metrics": {}, "sweeps": []}})


def test_no_commit_means_no_defaults(config):
    with pytest.raises(ValueError, match="no commit"):
        ex.paper_tables(exp_show_fixture()[:1], config)


def test_project_config_matches_the_project():
    """Every swept key exists in the params file, and every sweep includes the current (bold) value."""
    config = ex.load_config(REPO_ROOT / ex.DEFAULT_CONFIG)
    params = yaml.safe_load((REPO_ROOT / config.params_file).read_text())
    for sweep in config.sweeps:
        current = [ex._get(params, k) for k in sweep.keys]
        assert all(v is not None for v in current), f"{sweep.name}: {sweep.keys} not all in {config.params_file}"
        assert any(all(ex._same(c, v) for c, v in zip(current, s)) for s in sweep.settings), (
            f"{sweep.name}: the current value {current} is not one of the settings"
        )
    assert {s.table for s in config.sweeps} == {"Table 1", "Table 2", "Table 3"}


def test_cli(tmp_path, capsys):
    show = tmp_path / "exps.json"
    show.write_text(json.dumps(exp_show_fixture()))
    cfg = tmp_path / "experiments.yml"
    cfg.write_text(yaml.safe_dump(CONFIG, allow_unicode=True))
    assert ex.main(["table", str(show), str(cfg)]) == 0
    assert "**Table 2.** beta, gamma." in capsys.readouterr().out
    assert ex.main(["bogus"]) == 2
