"""Small report inputs shared by the reporting tests (values as evaluate_dataset returns them)."""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Raw headline per MDT dataset (OKS AP fractions, MPII PCKh in percent).
BASELINE_HEADLINE = {"coco": 0.7704, "aic": 0.3181, "mpii": 92.83, "ap10k": 0.7449, "apt36k": 0.7592, "coco_wholebody": 0.5742}
POSEBH_HEADLINE = {"coco": 0.7736, "aic": 0.3208, "mpii": 93.21, "ap10k": 0.7503, "apt36k": 0.8724, "coco_wholebody": 0.5791}
HEADLINE_NAME = {"mpii": "PCKh@0.5", "coco_wholebody": "wholebody_AP"}


def _row(headline: dict[str, float], pixel_error: float) -> dict:
    row = {}
    for ds, v in headline.items():
        name = HEADLINE_NAME.get(ds, "AP")
        row[ds] = {name: v}
        if ds == "coco":
            row[ds].update({"AP50": v + 0.15, "AP75": v + 0.07, "APm": v - 0.03, "APl": v + 0.05, "AR": v + 0.05})
        if ds in ("aic", "ap10k", "apt36k"):
            row[ds]["pixel_error"] = pixel_error
    row["mpii"]["PCKh@0.1"] = 39.1
    return row


def make_metrics() -> dict:
    """Every section filled except a few entries left out on purpose (they must print n/a)."""
    baseline = _row(BASELINE_HEADLINE, 6.5)
    posebh = _row(POSEBH_HEADLINE, 6.25)
    baseline["ochuman"] = {"AP": 0.826, "AR": 0.848, "occ_AP": 0.412}
    baseline["ochuman/val"] = {"AP": 0.81, "AR": 0.83, "occ_AP": 0.40}
    posebh["ochuman"] = {"AP": 0.831, "AR": 0.851, "occ_AP": 0.425}
    # posebh has no ochuman/val: n/a
    baseline["crowdpose"] = {"AP": 0.70, "AP_easy": 0.78, "AP_medium": 0.71, "AP_hard": 0.62}
    posebh["crowdpose"] = {"AP": 0.71, "AP_easy": 0.79, "AP_medium": 0.72, "AP_hard": 0.63}
    return {
        "rows": {"baseline": baseline, "posebh": posebh},
        "transfer": {
            "interhand": {
                "vitpose_finetune": {"PCK@0.2": 0.983, "AUC": 0.862, "EPE": 4.02},
                "scratch": {"PCK@0.2": 0.95, "AUC": 0.80, "EPE": 6.5},
                "aic_init": {"PCK@0.2": 0.97, "AUC": 0.85, "EPE": 4.5},
                "posebh": {"PCK@0.2": 0.986, "AUC": 0.871, "EPE": 3.7},
            },
            "3dpw": {
                "vitpose_finetune": {"AP": 0.817, "AR": 0.852},
                "posebh": {"AP": 0.836, "AR": 0.871},
                # scratch and aic_init not run on 3DPW: n/a
            },
        },
        "testdev": {
            "baseline": {"results_file": "testdev/baseline.json", "num_results": 1200},
            "posebh": {"results_file": "testdev/posebh.json", "num_results": 1210},
        },
    }


def make_history(n: int = 60, *, spread: float = 1e-6) -> pd.DataFrame:
    """A training log whose two auxiliary terms are ``spread`` times the heatmap term."""
    step = np.arange(n)
    heat = 1e-3 * np.exp(-step / n)
    return pd.DataFrame({
        "epoch": step // 10, "step": step, "heatmap": heat, "prototypes": heat * spread, "phm": heat * spread,
        "loss": heat * (1 + 2 * spread), "lr": np.where(step < n // 2, 1e-3, 1e-4),
    })  # fmt: skip


def make_prototypes(m: int = 2, f: int = 8, seed: int = 0) -> tuple[np.ndarray, tuple[str, ...]]:
    """Random (J, M, F) prototypes for COCO + MPII (J = 17 + 16)."""
    datasets = ("coco", "mpii")
    return np.random.default_rng(seed).normal(size=(33, m, f)), datasets


def make_qualitative(h: int = 48, w: int = 64) -> list[dict]:
    """One black image; the baseline predicts COCO only, PoseBH COCO and AIC (all joints confident)."""
    rng = np.random.default_rng(1)

    def kps(k: int) -> np.ndarray:
        xy = rng.uniform([4, 4], [w - 4, h - 4], size=(1, k, 2))
        return np.concatenate([xy, np.ones((1, k, 1))], axis=2)

    coco, aic = kps(17), kps(14)
    image = np.zeros((h, w, 3), np.uint8)
    return [{"image": image, "title": "demo", "predictions": {"baseline": {"coco": coco}, "posebh": {"coco": coco, "aic": aic}}}]
