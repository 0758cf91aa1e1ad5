"""Transfer to a new skeleton (reference 5.2, 5.3): a single-dataset PoseBH initialised from a
multi-dataset checkpoint.

The new model keeps one expert. Its backbone is the source model's split for ``source_dataset``
(shared fc2 rows + that dataset's expert rows, the COCO split in the paper); the new head takes
the source head's deconvolutions (the final 1x1 layer has another number of outputs and keeps
its fresh initialisation unless the skeletons match); the keypoint-embedding module is copied
(frozen during transfer, it carries the multi-dataset knowledge); the K x M x F prototypes of the
new skeleton are new and learned by momentum.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from posebh import skeletons

#: The starting points of the domain-transfer comparison (the paper's Table 7).
INIT_SOURCES = ("posebh", "vitpose_finetune", "aic_init", "scratch")


def transfer_checkpoint(
    source: Mapping[str, Any] | None,
    target: str,
    *,
    source_dataset: str = "coco",
    keep_embedding: bool = True,
    model: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``{"config", "state_dict"}`` checkpoint of a one-dataset model for ``target``.

    ``source`` None gives a randomly initialised model of ``model``'s size (training from scratch).
    """
    from posebh.models.posebh import ModelConfig, PoseBH

    target = skeletons.get(target).name
    if source is None:
        base = dict(model or {})
        base["datasets"] = [target]
        net = PoseBH(ModelConfig.from_dict(base))
        return {"config": net.config.to_dict(), "state_dict": net.state_dict()}

    src_cfg = dict(source["config"])
    src_state = source["state_dict"]
    src_datasets = [skeletons.get(d).name for d in src_cfg["datasets"]]
    source_dataset = skeletons.get(source_dataset).name
    if source_dataset not in src_datasets:
        raise ValueError(f"the source model has no {source_dataset!r} expert/head (it has {src_datasets})")
    expert = src_datasets.index(source_dataset)
    cfg = dict(src_cfg, datasets=[target])
    net = PoseBH(ModelConfig.from_dict(cfg))
    state = net.state_dict()
    for key in list(state):
        if key.startswith("backbone."):
            src_key = key.replace(".mlp.experts.0.", f".mlp.experts.{expert}.")
        elif key.startswith(f"heads.{target}."):
            src_key = key.replace(f"heads.{target}.", f"heads.{source_dataset}.")
        elif key.startswith("embedding."):
            if not keep_embedding:
                continue
            src_key = key
        else:  # the new skeleton's prototypes
            continue
        if src_key in src_state and tuple(src_state[src_key].shape) == tuple(state[key].shape):
            state[key] = src_state[src_key].clone()
    net.load_state_dict(state)
    return {"config": net.config.to_dict(), "state_dict": net.state_dict()}
