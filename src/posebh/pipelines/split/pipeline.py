"""``split``: the MoE models (ViTPose++ baseline and PoseBH) -> per-dataset models (plain ViT + head),
whose output equals the MoE model's for that dataset."""

from kedro.pipeline import Node, Pipeline

from posebh.pipelines.split import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(nodes.to_model, "baseline_model", "baseline_split", name="split_baseline"),
            Node(nodes.to_model, "stage3_model", "posebh_split", name="split_posebh"),
        ]
    )
