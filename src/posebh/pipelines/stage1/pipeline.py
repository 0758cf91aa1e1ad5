"""``stage1``: PoseBH stage 1 (see conf/base/parameters_stage1.yml), starting from ``baseline``."""

from posebh.pipelines.training.pipeline import stage_pipeline


def create_pipeline(**kwargs):
    return stage_pipeline("stage1", "baseline_model")
