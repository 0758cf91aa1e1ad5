"""``transfer_interhand``: InterHand2.6M (21 hand keypoints) from the split COCO model with new
prototypes (reference 5.2), plus the ViTPose++ fine-tuning, from-scratch and AIC-init rows."""

from kedro.pipeline import Node, Pipeline

from posebh.pipelines.transfer_interhand import nodes


def transfer_pipeline(name: str) -> Pipeline:
    return Pipeline(
        [
            Node(
                nodes.transfer,
                [
                    "model_input_instances", "baseline_model", "stage3_model", f"params:{name}",
                    "params:model", "params:objective", "params:training", "params:ingest.datasets",
                ],
                [f"{name}_results", f"{name}_model"],
                name=f"train_and_evaluate_{name}",
            )
        ]
    )


def create_pipeline(**kwargs) -> Pipeline:
    return transfer_pipeline("transfer_interhand")
