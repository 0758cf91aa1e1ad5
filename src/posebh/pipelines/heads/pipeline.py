"""``heads``: the baseline with the keypoint head ``model.head`` is not (SAR when it is heatmap, heatmap
when it is SAR), same data and schedule, split like the others; ``evaluate`` scores it beside them."""

from kedro.pipeline import Node, Pipeline

from posebh.pipelines.heads import nodes
from posebh.pipelines.split.nodes import to_model
from posebh.pipelines.training.pipeline import SHARED_INPUTS


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                nodes.train_other_head,
                ["model_input_instances", "params:heads", "params:baseline", *SHARED_INPUTS],
                ["heads_model", "heads_history", "heads_summary"],
                name="train_heads",
            ),
            Node(to_model, "heads_model", "heads_split", name="split_heads"),
        ]
    )
