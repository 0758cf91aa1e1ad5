"""Factories for the training pipelines ``baseline``, ``stage1``, ``stage2``, ``stage3``."""

from kedro.pipeline import Node, Pipeline

from posebh.pipelines.training import nodes

#: Inputs every training node takes after its stage parameters.
SHARED_INPUTS = ["params:model", "params:objective", "params:training", "params:ingest.datasets"]


def stage_pipeline(name: str, init: str | None) -> Pipeline:
    """Stage ``name`` trains from the model ``init`` (None: from scratch or an import)."""
    outputs = [f"{name}_model", f"{name}_history", f"{name}_summary"]
    if init is None:
        node = Node(nodes.train_baseline, ["model_input_instances", f"params:{name}", *SHARED_INPUTS], outputs, name=f"train_{name}")
    else:
        node = Node(nodes.train_stage, ["model_input_instances", init, f"params:{name}", *SHARED_INPUTS], outputs, name=f"train_{name}")
    return Pipeline([node])
