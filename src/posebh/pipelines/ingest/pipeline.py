"""``ingest``: one namespace per dataset of the skeleton registry, then one merged report."""

from kedro.pipeline import Node, Pipeline

from posebh.pipelines.ingest import nodes
from posebh.skeletons import SKELETONS


def dataset_pipeline(dataset: str) -> Pipeline:
    base = Pipeline(
        [
            Node(nodes.read_raw, "params:sources", ["raw_instances", "images", "detections"], name="read_raw"),
            Node(
                nodes.validate,
                ["raw_instances", "params:validation"],
                ["instances", "quarantine", "validation_report"],
                name="validate",
            ),
        ]
    )
    return Pipeline(
        base,
        namespace=dataset,
        parameters={"params:sources": f"params:ingest.datasets.{dataset}", "params:validation": "params:ingest.validation"},
    )


def create_pipeline(**kwargs) -> Pipeline:
    datasets = list(SKELETONS)
    report = Node(
        nodes.summarise,
        [f"{d}.validation_report" for d in datasets],
        ["validation_report", "validation_summary"],
        name="summarise_validation",
    )
    return sum((dataset_pipeline(d) for d in datasets), Pipeline([])) + Pipeline([report])
