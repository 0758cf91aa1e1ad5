"""One training stage from tables and configuration: what the Kedro nodes call.

Builds the model (or restores the previous stage's), the top-down training set from the
model-input table, the PoseBH objective, and runs :func:`posebh.engine.trainer.train_stage`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from posebh import skeletons

log = logging.getLogger(__name__)

#: Sources whose split is not a training split but covers a whole release (APT-36K's single file).
WHOLE_RELEASE_SPLIT = "all"


def image_roots(sources: Mapping[str, Sequence[Mapping[str, Any]]], split: str) -> dict[str, str]:
    """Image root of each dataset's ``split``, read from the ingest sources (one source of truth)."""
    roots: dict[str, str] = {}
    for dataset, specs in (sources or {}).items():
        for spec in specs or []:
            if "image_root" in spec and spec.get("split") in (split, WHOLE_RELEASE_SPLIT):
                roots.setdefault(skeletons.get(dataset).name, str(spec["image_root"]))
    return roots


def select_instances(
    table: pd.DataFrame, datasets: Sequence[str], split: str, *, min_keypoints: Mapping[str, int] | None = None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Rows of ``datasets`` in ``split`` that can train a top-down model, and what was left out.

    Crowd regions and instances without labelled keypoints carry no target (the reference loader
    skips them); ``min_keypoints`` raises the bar per dataset (InterHand: more than 11 valid joints).
    """
    min_keypoints = dict(min_keypoints or {})
    in_split = table[table["dataset"].isin(list(datasets)) & (table["split"] == split)]
    need = in_split["dataset"].map(lambda d: max(1, int(min_keypoints.get(d, 1)))).astype("int64")
    keep = (in_split["iscrowd"] == 0) & (in_split["num_keypoints"] >= need)
    out = in_split[keep].reset_index(drop=True)
    report = {
        "split": split,
        "rows": {d: int((in_split["dataset"] == d).sum()) for d in datasets},
        "used": {d: int((out["dataset"] == d).sum()) for d in datasets},
        "left_out_crowd_or_unlabelled": int((~keep).sum()),
    }
    return out, report


def fingerprint(*parts: Any) -> str:
    """A short stable hash of the configuration a checkpoint folder belongs to."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def run_stage(
    stage: Mapping[str, Any],
    *,
    model: Mapping[str, Any],
    objective: Mapping[str, Any],
    data: Mapping[str, Any],
    instances: pd.DataFrame,
    sources: Mapping[str, Sequence[Mapping[str, Any]]],
    init: Mapping[str, Any] | None,
    checkpoint_root: str | Path,
    device: str = "auto",
) -> tuple[dict[str, Any], pd.DataFrame, dict[str, Any]]:
    """Train one stage; returns (model checkpoint, step log, summary).

    ``init`` is the previous stage's checkpoint ({"config", "state_dict"}) or None for a fresh
    model. Checkpoints for exact resume go to ``checkpoint_root/<stage>/<fingerprint>`` so a run
    with another configuration never resumes from a stale folder.
    """
    import torch

    from posebh.data.topdown import TopDownDataset
    from posebh.data.transforms import reference_augment
    from posebh.engine.objective import ObjectiveConfig, PoseBHObjective
    from posebh.engine.stages import StageSpec
    from posebh.engine.trainer import TIMING_COLUMNS, train_stage
    from posebh.models.posebh import ModelConfig, PoseBH

    spec = StageSpec.from_dict(stage)
    config = ModelConfig.from_dict(dict(init["config"]) if init is not None else dict(model))
    torch.manual_seed(spec.seed)  # a fresh model's initial weights depend on the stage seed only
    net = PoseBH(config)
    if init is not None:
        net.load_state_dict(init["state_dict"])
    datasets = list(config.datasets)
    table, selection = select_instances(instances, datasets, data.get("split", "train"), min_keypoints=data.get("min_keypoints"))
    roots = image_roots(sources, data.get("split", "train"))
    obj_cfg = ObjectiveConfig.from_dict(dict(objective))
    train_set = TopDownDataset(
        table,
        image_roots=roots,
        datasets=datasets,
        input_size=config.input_wh,
        udp=set(obj_cfg.udp_datasets),
        augment={d: reference_augment(d) for d in datasets} if data.get("augment", True) else None,
        train=True,
        seed=spec.seed,
    )
    obj = PoseBHObjective(obj_cfg, datasets=tuple(datasets), input_wh=config.input_wh, heatmap_wh=config.heatmap_wh)
    dev = resolve_device(device)
    key = fingerprint(spec.to_dict(), config.to_dict(), obj_cfg.__repr__(), selection, init is not None and _digest(init))
    out_dir = Path(checkpoint_root) / spec.name / key
    log.info("stage %s: %s training instances %s; checkpoints in %s", spec.name, len(table), selection["used"], out_dir)
    num_workers, progress = int(data.get("num_workers", 0)), bool(data.get("progress", True))
    nprocs = int(data.get("processes", 1))
    if nprocs > 1:
        # One machine, several devices: DDP workers spawned from this node; rank 0 writes the
        # finished checkpoint, from which this process then restores the final weights.
        from posebh.engine.distributed import spawn_local

        spawn_local(_ddp_worker, nprocs, net, obj, train_set, spec, str(out_dir), num_workers)
    result = train_stage(net, obj, train_set, spec, out_dir=out_dir, device=dev, num_workers=num_workers, progress=progress)
    state = {"config": config.to_dict(), "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()}}
    history = pd.DataFrame(result.history)
    summary = {
        "stage": spec.name,
        "selection": selection,
        "final_epoch": _plain({k: v for k, v in result.metrics.items() if k not in TIMING_COLUMNS}),
        "global_step": result.global_step,
        "nonfinite_skipped": result.nonfinite_skipped,
    }
    return state, history, summary


def _ddp_worker(info, net, obj, train_set, spec, out_dir: str, num_workers: int) -> None:
    from posebh.engine.trainer import train_stage

    train_stage(net, obj, train_set, spec, out_dir=out_dir, device=info.device, num_workers=num_workers, progress=info.rank == 0)


def _digest(init: Mapping[str, Any]) -> str:
    h = hashlib.sha256()
    for k, v in sorted(init["state_dict"].items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(-1).numpy().tobytes()[:4096])
    return h.hexdigest()[:12]


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "item"):
        return obj.item()
    return obj
