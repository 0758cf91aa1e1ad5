"""``stage2``: PoseBH stage 2 (see conf/base/parameters_stage2.yml), starting from ``stage1``."""

from posebh.pipelines.training.pipeline import stage_pipeline


def create_pipeline(**kwargs):
    return stage_pipeline("stage2", "stage1_model")
