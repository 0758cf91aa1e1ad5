"""Throwaway copies of the project for tests that run its tools (kedro, dvc, kedro-viz, a notebook).

The copy holds what a fresh clone holds (git-tracked files plus untracked files git does not ignore),
so generated data in the working tree never leaks into a test. Commands run with the venv's tools
and with the copy's ``src`` first on ``PYTHONPATH``, so the copy's code is the code that runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    """Path of a console script installed next to the running interpreter (the project's venv)."""
    path = shutil.which(name, path=str(VENV_BIN)) or shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed in this environment (pip install -e '.[dev]')")
    return path


def tracked_files(paths: tuple[str, ...] = ()) -> list[str]:
    """Files a fresh clone would have, relative to the repository root (optionally under ``paths``)."""
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("the repository is not a git checkout; the project copy needs `git ls-files`")
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *paths],
        cwd=REPO_ROOT, check=True, capture_output=True,
    ).stdout.decode()
    return [f for f in out.split("\0") if f and (REPO_ROOT / f).is_file()]


def copy_project(dest: Path, paths: tuple[str, ...] = ()) -> Path:
    """Copy the repository's files (as a fresh clone has them) into ``dest``; returns ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for rel in tracked_files(paths):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / rel, target)
    for sub in ("conf/local", "data", "src"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
    return dest


def project_env(project: Path, **extra: str) -> dict[str, str]:
    """Environment for commands run in a copy: venv tools first, the copy's code first, no telemetry."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(VENV_BIN), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join([str(project / "src"), *filter(None, [env.get("PYTHONPATH")])])
    env.update(KEDRO_DISABLE_TELEMETRY="1", DVC_NO_ANALYTICS="1", GX_ANALYTICS_ENABLED="false", NO_COLOR="1")
    env.update(extra)
    return env


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a command; on failure the assertion message holds its output."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def execute_notebook(project: Path, notebook: str = "notebooks/explore.ipynb", timeout: int = 600):
    """Run a notebook of ``project`` top to bottom on a kernel of this interpreter; returns it executed.

    The kernelspec lives in a temporary folder and names this interpreter, so no installed
    kernelspec (whose ``python`` depends on PATH) is used; the kernel runs the copy's code from the
    notebook's folder. A cell error raises ``nbclient.exceptions.CellExecutionError``.
    """
    import json
    import tempfile

    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    path = project / notebook
    nb = nbformat.read(path, as_version=4)
    env = project_env(project, MPLBACKEND="module://matplotlib_inline.backend_inline")
    with tempfile.TemporaryDirectory(prefix="posebh-kernels-") as kernels:
        spec_dir = Path(kernels) / "posebh-venv"
        spec_dir.mkdir()
        spec = {
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "posebh (tests)",
            "language": "python",
            "env": {k: env[k] for k in ("PATH", "PYTHONPATH", "KEDRO_DISABLE_TELEMETRY", "MPLBACKEND")},
        }
        (spec_dir / "kernel.json").write_text(json.dumps(spec))
        km = KernelManager(kernel_name="posebh-venv", kernel_spec_manager=KernelSpecManager(kernel_dirs=[kernels]))
        client = NotebookClient(nb, km=km, timeout=timeout, resources={"metadata": {"path": str(path.parent)}})
        # the client does not own this kernel manager: have it shut the kernel and channels down anyway
        client.execute(cleanup_kc=True)
    return nb
