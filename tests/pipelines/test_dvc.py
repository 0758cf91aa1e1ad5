"""``dvc.yaml`` against the Kedro pipelines it mirrors, and ``dvc repro`` behaviour in a throwaway clone.

Static checks (cheap, no run): one stage per pipeline of ``mdt`` in DAG order; outs, deps and params
derived from the pipelines' nodes and the catalog; ``dvc dag`` has exactly Kedro's pipeline-level
edges; no out holds a git-tracked file. The slow test runs ``dvc repro ingest prepare`` in a git
repository made from a copy of the project: a second repro does nothing, and changing one ``prepare``
parameter re-runs ``prepare`` only.
"""

from __future__ import annotations

import ast
import json
import os
import re
from pathlib import Path, PurePosixPath

import pytest
import yaml

from ._project import REPO_ROOT, copy_project, project_env, run, tool, tracked_files

STAGE_FIELDS = ("outs", "metrics", "plots")
#: package markers with no code; every pipeline imports them, no stage needs to list them
NO_CODE = {"src/posebh/__init__.py", "src/posebh/pipelines/__init__.py"}
#: folders a pipeline writes by parameter rather than through a catalog entry
PARAM_WRITES = {"report": ["report.out_dir"]}


def _paths(entries) -> list[str]:
    """File paths of a dvc.yaml ``deps``/``outs``/``metrics``/``plots`` list (str or {path: opts})."""
    out = []
    for e in entries or []:
        out.extend([e] if isinstance(e, str) else list(e))
    return out


def _under(path: str, parent: str) -> bool:
    return path == parent or PurePosixPath(path).is_relative_to(PurePosixPath(parent))


def _stage_outs(stage: dict) -> list[str]:
    return [p for f in STAGE_FIELDS for p in _paths(stage.get(f))]


def _stage_params(stage: dict) -> dict[str, list[str]]:
    """{params file: [keys]} of a stage (a bare string entry means params.yaml)."""
    result: dict[str, list[str]] = {}
    for e in stage.get("params") or []:
        if isinstance(e, str):
            result.setdefault("params.yaml", []).append(e)
        else:
            for file, keys in e.items():
                result.setdefault(file, []).extend(keys or [])
    return result


@pytest.fixture(scope="module")
def dvc_stages() -> dict[str, dict]:
    return yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]


# ---------------------------------------------------------------------------------------------
# What the Kedro pipelines read and write, from the nodes and the catalog
# ---------------------------------------------------------------------------------------------


def _module_file(module: str) -> Path | None:
    base = REPO_ROOT / "src" / Path(*module.split("."))
    for f in (base / "__init__.py", base.with_suffix(".py")):
        if f.is_file():
            return f
    return None


def _posebh_imports(file: Path, module: str, classes: set[str] | None = None) -> set[str]:
    """posebh modules a file imports anywhere (module level and inside functions); with ``classes``,
    only its module-level imports and those inside these classes (and their bases in the file)."""
    package = module if file.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(file.read_text())
    scopes: list[ast.AST] = [tree]
    if classes is not None:
        defs = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
        wanted, todo = set(), list(classes)
        while todo:
            name = todo.pop()
            if name in defs and name not in wanted:
                wanted.add(name)
                todo.extend(b.id for b in defs[name].bases if isinstance(b, ast.Name))
        top = [n for n in tree.body if not isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
        scopes = top + [defs[n] for n in wanted]
    found: set[str] = set()
    for node in (n for scope in scopes for n in ast.walk(scope)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import module`
    return {m for m in found if m.split(".")[0] == "posebh" and _module_file(m) is not None}


def import_closure(modules: set[str], classes: dict[str, set[str]] | None = None) -> set[str]:
    """Repository-relative source files of ``modules`` and everything they import from posebh;
    ``classes`` ({module: class names}) adds only what those classes of a module need."""
    seen: set[str] = set()
    todo = list(modules)
    for mod, names in (classes or {}).items():
        if mod not in modules:
            seen.add(mod)
            todo.extend(_posebh_imports(_module_file(mod), mod, names))
            parts = mod.split(".")
            todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
    while todo:
        mod = todo.pop()
        if mod in seen or _module_file(mod) is None:
            continue
        seen.add(mod)
        parts = mod.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages run first
        todo.extend(_posebh_imports(_module_file(mod), mod))
    return {_module_file(m).relative_to(REPO_ROOT).as_posix() for m in seen}


@pytest.fixture(scope="module")
def kedro_pipelines(tmp_path_factory) -> dict[str, dict]:
    """Per pipeline of ``mdt``: catalog inputs/outputs as project paths, params, code files."""
    from kedro.framework.project import pipelines
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from posebh.pipeline_registry import MDT_PIPELINES

    project = copy_project(tmp_path_factory.mktemp("dvc_static") / "project", ("pyproject.toml", "conf"))
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env="local") as session:
        context = session.load_context()
        catalog, params = context.catalog, context.params

    def path_of(name: str) -> str:
        desc = catalog.get(name)._describe()
        raw = Path(desc.get("filepath") or desc["path"])
        return (raw.relative_to(project) if raw.is_absolute() else raw).as_posix()

    def param(key: str):
        value = params
        for part in key.split("."):
            value = value[part]
        return value

    result = {}
    for name in MDT_PIPELINES:
        pipe = pipelines[name]
        datasets_in = {d for d in pipe.inputs() if not d.startswith("params:") and d != "parameters"}
        datasets_out = set(pipe.all_outputs())
        modules = {f"posebh.pipelines.{name}.pipeline"} | {n.func.__module__ for n in pipe.nodes}
        dataset_classes: dict[str, set[str]] = {}
        for d in datasets_in | datasets_out:
            cls = type(catalog.get(d))
            dataset_classes.setdefault(cls.__module__, set()).add(cls.__name__)
        result[name] = {
            "inputs": {d: path_of(d) for d in datasets_in},
            "outputs": {d: path_of(d) for d in datasets_out},
            "writes": [str(param(k)).rstrip("/") for k in PARAM_WRITES.get(name, [])],
            "params": {i[len("params:"):] for i in pipe.inputs() if i.startswith("params:")},
            "code": import_closure(
                {m for m in modules if m.startswith("posebh.")},
                {m: c for m, c in dataset_classes.items() if m.startswith("posebh.")},
            ),
        }
    return result


def kedro_edges(kp: dict[str, dict]) -> set[tuple[str, str]]:
    return {(a, b) for a in kp for b in kp if a != b and set(kp[a]["outputs"]) & set(kp[b]["inputs"])}


# ---------------------------------------------------------------------------------------------
# Static checks
# ---------------------------------------------------------------------------------------------


def test_one_stage_per_pipeline_in_dag_order(dvc_stages):
    from posebh.pipeline_registry import MDT_PIPELINES

    assert list(dvc_stages) == list(MDT_PIPELINES)
    for name, stage in dvc_stages.items():
        assert stage["cmd"] == f"kedro run --pipeline={name}"


def test_outs_are_exactly_what_each_pipeline_writes(dvc_stages, kedro_pipelines):
    for name, kp in kedro_pipelines.items():
        outs = _stage_outs(dvc_stages[name])
        assert len(outs) == len(set(outs)), f"{name}: an out is listed twice"
        for ds, path in kp["outputs"].items():
            assert any(_under(path, o) for o in outs), f"{name}: {ds} ({path}) is written but not a DVC out"
        written = list(kp["outputs"].values()) + kp["writes"]
        for o in outs:
            assert any(_under(w, o) or _under(o, w) for w in written), f"{name}: out {o} is not written by the pipeline"


def test_outs_do_not_overlap_or_hold_tracked_files(dvc_stages):
    all_outs = [(name, o) for name, s in dvc_stages.items() for o in _stage_outs(s)]
    for i, (n1, o1) in enumerate(all_outs):
        for n2, o2 in all_outs[i + 1 :]:
            assert not (_under(o1, o2) or _under(o2, o1)), f"outs overlap: {n1}:{o1} and {n2}:{o2}"
    tracked = tracked_files(("data",))
    for name, o in all_outs:
        held = [f for f in tracked if _under(f, o)]
        assert not held, f"{name}: out {o} holds git-tracked files {held[:3]} (DVC refuses outs tracked by SCM)"


def test_top_level_plots_show_stage_outputs():
    doc = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())
    outs = [o for s in doc["stages"].values() for o in _stage_outs(s)]
    files = []
    for entry in doc.get("plots") or []:
        if isinstance(entry, str):
            files.append(entry)
        else:
            for props in entry.values():
                y = props.get("y")
                files.extend(y if isinstance(y, dict) else [])
    assert files, "no top-level plots"
    for f in files:
        assert any(_under(f, o) for o in outs), f"plot {f} is not an output of any stage"


def test_deps_name_upstream_outs_exactly(dvc_stages, kedro_pipelines):
    producer = {p: name for name, s in dvc_stages.items() for p in _stage_outs(s)}
    for name, kp in kedro_pipelines.items():
        deps = _paths(dvc_stages[name].get("deps"))
        for ds, path in kp["inputs"].items():
            covering = [d for d in deps if _under(path, d)]
            assert covering, f"{name}: input {ds} ({path}) is not a dep"
            for d in covering:
                assert d in producer and producer[d] != name, (
                    f"{name}: dep {d} (for {ds}) must be exactly an out of the stage that writes it"
                )
        used = list(kp["inputs"].values())
        for d in deps:
            if d.startswith("data/") and not d.startswith("data/01_raw/"):
                assert any(_under(u, d) for u in used), f"{name}: data dep {d} is not read by the pipeline"


def test_stages_reading_raw_files_depend_on_them(dvc_stages, kedro_pipelines):
    for name, kp in kedro_pipelines.items():
        if any(p == "ingest" or p.startswith("ingest.") for p in kp["params"]):
            deps = _paths(dvc_stages[name].get("deps"))
            for needed in ("data/01_raw/demo", "conf/base/globals.yml"):
                assert needed in deps, f"{name} reads raw files (params:ingest.*) but does not depend on {needed}"


def test_params_cover_every_parameter_the_nodes_read(dvc_stages, kedro_pipelines):
    for name, kp in kedro_pipelines.items():
        listed = _stage_params(dvc_stages[name])
        keys = [k for ks in listed.values() for k in ks]
        for file, file_keys in listed.items():
            content = yaml.safe_load((REPO_ROOT / file).read_text())
            for key in file_keys:
                value = content
                for part in key.split("."):
                    assert isinstance(value, dict) and part in value, f"{name}: {key} is not in {file}"
                    value = value[part]
        for used in kp["params"]:
            assert any(used == k or used.startswith(k + ".") for k in keys), f"{name}: params:{used} is not tracked"
        for k in keys:
            assert any(u == k or u.startswith(k + ".") or k.startswith(u + ".") for u in kp["params"]), (
                f"{name}: tracks param {k} that no node reads (needless re-runs)"
            )


def test_deps_cover_the_code_each_pipeline_imports(dvc_stages, kedro_pipelines):
    problems, produced, tracked = [], set(), tracked_files()
    for name, kp in kedro_pipelines.items():
        deps = _paths(dvc_stages[name].get("deps"))
        problems += [f"{name}: imports {f}, which no dep covers" for f in sorted(kp["code"] - NO_CODE)
                     if not any(_under(f, d) for d in deps)]  # fmt: skip
        problems += [f"{name}: dep {d} is neither in the repository nor an out of an earlier stage"
                     for d in deps if d not in produced and not any(_under(f, d) for f in tracked)]  # fmt: skip
        produced.update(_stage_outs(dvc_stages[name]))
    assert not problems, "\n".join(problems)


def test_dvcignore_keeps_bytecode_out_of_code_deps():
    lines = (REPO_ROOT / ".dvcignore").read_text().split()
    assert "__pycache__/" in lines and "*.pyc" in lines


def _dag_edges(mermaid: str) -> tuple[set[str], set[tuple[str, str]]]:
    names = dict(re.findall(r'(node\d+)\["([^"]+)"\]', mermaid))
    edges = {(names[a], names[b]) for a, b in re.findall(r"(node\d+)-->(node\d+)", mermaid)}
    return set(names.values()), edges


def test_dvc_dag_is_the_kedro_dag(kedro_pipelines, tmp_path):
    project = copy_project(tmp_path / "project", ("dvc.yaml", ".dvc", ".dvcignore"))
    _git(project, "init", "-q")
    out = run([tool("dvc"), "dag", "--md"], project, project_env(project)).stdout
    stages, edges = _dag_edges(out)
    assert stages == set(kedro_pipelines)
    assert edges == kedro_edges(kedro_pipelines)
    listed = run([tool("dvc"), "stage", "list", "--name-only"], project, project_env(project)).stdout.split()
    assert listed == list(kedro_pipelines)
    position = {n: i for i, n in enumerate(listed)}
    assert all(position[a] < position[b] for a, b in edges), "dvc.yaml lists a stage before one it depends on"


# ---------------------------------------------------------------------------------------------
# dvc repro in a throwaway clone
# ---------------------------------------------------------------------------------------------


def _git(project: Path, *args: str) -> None:
    run(["git", "-c", "user.name=posebh-tests", "-c", "user.email=tests@posebh.invalid", *args], project, dict(os.environ))


def _ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def _skipped(output: str) -> set[str]:
    return set(re.findall(r"Stage '([^']+)' didn't change, skipping", output))


@pytest.mark.slow
def test_repro_runs_once_and_reruns_only_what_a_param_change_touches(tmp_path):
    project = copy_project(tmp_path / "clone")
    _git(project, "init", "-q")
    _git(project, "add", "-A")
    _git(project, "commit", "-q", "-m", "fresh clone")
    env = project_env(project)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # bytecode lands in the code deps, as on any machine
    dvc = tool("dvc")

    first = run([dvc, "repro", "ingest", "prepare"], project, env).stdout
    assert _ran(first) == {"ingest", "prepare"}, first
    assert (project / "data/05_model_input/prepare/instances.parquet").is_file()
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"ingest", "prepare"}
    assert list((project / "src/posebh/pipelines/ingest").glob("__pycache__/*.pyc")), "no bytecode: guard untested"

    second = run([dvc, "repro", "ingest", "prepare"], project, env).stdout
    assert _ran(second) == set(), second
    assert _skipped(second) == {"ingest", "prepare"}, second
    status = run([dvc, "status", "ingest", "prepare"], project, env).stdout
    assert "up to date" in status, status

    metrics = json.loads(run([dvc, "metrics", "show", "--json"], project, env).stdout)
    shown = json.dumps(metrics)
    assert "data/08_reporting/validation.json" in shown and "data/08_reporting/prepare/apt36k_split.json" in shown

    params_file = project / "conf/base/parameters_prepare.yml"
    text = params_file.read_text()
    changed = re.sub(r"(apt36k_split:\n(?:    .*\n)*?    seed:) 0\n", r"\1 1\n", text)
    assert changed != text
    params_file.write_text(changed)
    diff = run([dvc, "params", "diff", "--json"], project, env).stdout
    assert "prepare.apt36k_split.seed" in diff, diff

    third = run([dvc, "repro", "ingest", "prepare"], project, env).stdout
    assert _ran(third) == {"prepare"}, third
    assert _skipped(third) == {"ingest"}, third
    split = json.loads((project / "data/08_reporting/prepare/apt36k_split.json").read_text())
    assert split, "prepare wrote an empty split report"
