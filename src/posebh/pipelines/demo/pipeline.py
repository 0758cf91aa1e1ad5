"""``demo``: rewrite data/01_raw/demo (deterministic; the committed copy is seed 0, scale 1)."""

from kedro.pipeline import Node, Pipeline

from posebh.pipelines.demo import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([Node(nodes.generate, "params:demo", "demo_summary", name="generate_demo")])
