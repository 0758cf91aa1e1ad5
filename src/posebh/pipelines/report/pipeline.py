"""``report``: Markdown and HTML reports with the paper's tables, figures, and DVC metrics/plots files."""

from kedro.pipeline import Node, Pipeline

from posebh.pipelines.report import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                nodes.build,
                [
                    "evaluation_metrics", "baseline_history", "stage1_history", "stage2_history", "stage3_history",
                    "stage3_model", "baseline_split", "posebh_split", "model_input_instances",
                    "params:report", "params:ingest.datasets",
                ],
                "report_index",
                name="build_report",
            )
        ]
    )
