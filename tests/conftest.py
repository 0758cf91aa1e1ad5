"""Shared fixtures. Real annotation samples are read in place from ../shared/samples (never copied
into the repository); tests that need them skip cleanly when that folder is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLES_DIR = Path(os.environ.get("POSEBH_SAMPLES", REPO_ROOT.parent / "shared" / "samples"))

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


@pytest.fixture(scope="session")
def samples() -> Path:
    """Root of the real annotation samples; skips the test when they are not available."""
    if not SAMPLES_DIR.is_dir():
        pytest.skip(f"real samples not found (looked for ../shared/samples or $POSEBH_SAMPLES)")
    return SAMPLES_DIR


def sample(samples_root: Path, *parts: str) -> Path:
    p = samples_root.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"sample {'/'.join(parts)} not present")
    return p


def perturbed_model(datasets=None, seed=0):
    """A tiny PoseBH whose heads give O(1) outputs (the init's 0.001 std would hide differences)."""
    import torch

    from posebh.models.posebh import ModelConfig, build_model
    from posebh.skeletons import PAPER_MDT_DATASETS

    torch.manual_seed(seed)
    m = build_model(ModelConfig(size="tiny", datasets=tuple(datasets or PAPER_MDT_DATASETS)))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return m.eval()
