"""kedro-viz: the static site of the project's pipelines, checked as JSON and rendered in a real browser.

``kedro viz build`` runs in a copy of the project; ``build/api/main`` must hold every registered
pipeline and every node. The site is then served on loopback and opened in headless Chromium (the
Debian package; ``.ci/run`` installs it), with every non-loopback host unresolvable, and the rendered
graph must show every node of the default pipeline by name. The same page is screenshotted at
1400x900; set ``POSEBH_VIZ_SCREENSHOT=docs/kedro_viz.png`` to refresh the README's screenshot.
"""

from __future__ import annotations

import collections
import functools
import html
import http.server
import json
import os
import re
import shutil
import struct
import subprocess
import threading
import urllib.parse
from pathlib import Path

import pytest

from ._project import REPO_ROOT, copy_project, project_env, run, tool

#: nodes the README's screenshot must show, one per stretch of the DAG
LANDMARKS = ("split_apt36k", "train_baseline", "train_stage3", "evaluate_all", "build_report")
WINDOW = (1400, 900)

# Seeds kedro-viz's saved settings from the site's own origin, then opens the app: no feature-hint
# popup over the graph, namespaces expanded, no minimap; `next` carries the app's URL query.
SEED_PAGE = """<!doctype html><meta charset="utf-8"><title>seed</title><script>
var q = new URLSearchParams(location.search);
localStorage.setItem("KedroViz", JSON.stringify(
  {showFeatureHints: false, expandAllPipelines: true, visible: {miniMap: false}}));
location.replace("./index.html" + (q.get("next") || ""));
</script>
"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.skip("Chromium is not installed (apt-get install -y chromium; .ci/run installs it)")


@pytest.fixture(scope="module")
def viz_build(tmp_path_factory) -> Path:
    project = copy_project(tmp_path_factory.mktemp("viz") / "project", ("pyproject.toml", "conf", "src"))
    run([tool("kedro"), "viz", "build"], project, project_env(project), timeout=300)
    build = project / "build"
    assert (build / "index.html").is_file() and (build / "api" / "main").is_file()
    return build


@pytest.fixture(scope="module")
def registered() -> dict:
    from posebh.pipeline_registry import register_pipelines

    return register_pipelines()


def _api(build: Path) -> dict:
    return json.loads((build / "api" / "main").read_text())


def test_api_holds_every_pipeline_and_node(viz_build, registered):
    api = _api(viz_build)
    assert {p["id"] for p in api["pipelines"]} == set(registered)
    assert api["selected_pipeline"] == "__default__"
    # api/main holds the default pipeline's graph; api/pipelines/<id> each pipeline's
    tasks = {n["full_name"]: n for n in api["nodes"] if n["type"] == "task"}
    assert set(tasks) == {n.name for n in registered["__default__"].nodes}
    for name, pipe in registered.items():
        for node in pipe.nodes:
            if node.name in tasks:
                assert name in tasks[node.name]["pipelines"], f"{node.name} not listed under pipeline {name}"
        per_pipeline = json.loads((viz_build / "api" / "pipelines" / name).read_text())
        shown = {n["full_name"] for n in per_pipeline["nodes"] if n["type"] == "task"}
        assert shown == {n.name for n in pipe.nodes}, name
    datasets = {n["name"] for n in api["nodes"] if n["type"] == "data"}
    assert {"model_input_instances", "stage3_model", "evaluation_metrics", "report_index"} <= datasets
    ids = {n["id"] for n in api["nodes"]}
    assert api["edges"] and all(e["source"] in ids and e["target"] in ids for e in api["edges"])


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - signature of the base class
        pass


@pytest.fixture(scope="module")
def served(viz_build):
    """The build served on 127.0.0.1 (a free port) with the localStorage seed page beside it."""
    (viz_build / "seed.html").write_text(SEED_PAGE)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(viz_build)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _browse(url: str, profile: Path, *action: str) -> subprocess.CompletedProcess:
    """Headless Chromium with no network beyond loopback (fonts and update checks fail fast)."""
    cmd = [
        chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
        "--disable-extensions", "--hide-scrollbars", "--mute-audio",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--virtual-time-budget=20000", *action, url,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc


def _page(base: str, query: str) -> str:
    return f"{base}/seed.html?next={urllib.parse.quote(query)}"


def _rendered_tasks(dom: str) -> collections.Counter:
    """Names of the task nodes drawn in the flowchart (SVG groups), not the sidebar list."""
    groups = re.findall(r"<g\b[^>]*\bclass=\"pipeline-node pipeline-node--task\b[^>]*>", dom)
    return collections.Counter(html.unescape(m) for g in groups for m in re.findall(r'data-node-fullname="([^"]*)"', g))


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def test_browser_renders_every_node_by_name(served, viz_build, tmp_path):
    dom = _browse(_page(served, "?pid=__default__&types=nodes"), tmp_path / "profile", "--dump-dom").stdout
    assert "pipeline-node" in dom, f"kedro-viz did not render a graph:\n{dom[:2000]}"
    expected = collections.Counter(
        n["name"] for n in _api(viz_build)["nodes"] if n["type"] == "task" and "__default__" in n["pipelines"]
    )
    assert _rendered_tasks(dom) == expected
    labels = set(re.findall(r'<text class="pipeline-node__text"[^>]*>([^<]+)</text>', dom))
    for name in LANDMARKS:
        assert name in labels, f"{name} is not drawn in the graph"
    assert "Workflow run status" not in dom, "the feature-hint popup covers the graph"


def test_screenshot(served, tmp_path):
    shot = tmp_path / "kedro_viz.png"
    _browse(_page(served, "?pid=__default__&types=nodes"), tmp_path / "profile", f"--screenshot={shot}")
    assert _png_size(shot) == WINDOW
    assert shot.stat().st_size > 20_000, "the screenshot is (nearly) blank"
    if target := os.environ.get("POSEBH_VIZ_SCREENSHOT"):
        dest = Path(target) if Path(target).is_absolute() else REPO_ROOT / target
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, dest)
