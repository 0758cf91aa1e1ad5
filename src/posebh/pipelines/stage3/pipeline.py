"""``stage3``: PoseBH stage 3 (see conf/base/parameters_stage3.yml), starting from ``stage2``."""

from posebh.pipelines.training.pipeline import stage_pipeline


def create_pipeline(**kwargs):
    return stage_pipeline("stage3", "stage2_model")
