"""``baseline``: ViTPose++ multi-dataset training, the starting point and the comparison row."""

from posebh.pipelines.training.pipeline import stage_pipeline


def create_pipeline(**kwargs):
    return stage_pipeline("baseline", None)
