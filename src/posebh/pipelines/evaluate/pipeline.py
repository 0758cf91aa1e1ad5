"""``evaluate``: every evaluation protocol (reference 4.1, datasets.md 13) for every model row."""

from kedro.pipeline import Node, Pipeline

from posebh.pipelines.evaluate import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                nodes.evaluate,
                [
                    "model_input_instances", "detection_instances", "baseline_split", "posebh_split", "heads_split",
                    "transfer_interhand_results", "transfer_3dpw_results",
                    "params:model", "params:evaluate", "params:ingest.datasets",
                ],
                ["evaluation_metrics", "predictions", "testdev_results", "testdev_submission"],
                name="evaluate_all",
            )
        ]
    )
