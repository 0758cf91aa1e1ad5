"""``prepare``: APT-36K video-disjoint split, 3DPW reprojection, detection boxes, one model-input table."""

from kedro.pipeline import Node, Pipeline

from posebh.pipelines.prepare import nodes
from posebh.skeletons import SKELETONS

#: Datasets whose validated table needs a prepare step before it is model input.
_TRANSFORMED = {"apt36k": "apt36k_split_instances", "3dpw": "pw3d_instances"}


def create_pipeline(**kwargs) -> Pipeline:
    model_inputs = [_TRANSFORMED.get(d, f"{d}.instances") for d in SKELETONS]
    return Pipeline(
        [
            Node(
                nodes.split_apt36k,
                ["apt36k.instances", "params:prepare.apt36k_split"],
                ["apt36k_split_instances", "apt36k_split_counts"],
                name="split_apt36k",
            ),
            Node(nodes.reproject_3dpw, ["3dpw.instances", "params:prepare.pw3d"], "pw3d_instances", name="reproject_3dpw"),
            Node(
                nodes.detection_instances,
                ["coco.instances", "coco.images", "coco.detections", "params:prepare.detections"],
                ["detection_instances", "detection_report"],
                name="attach_detections",
            ),
            Node(nodes.assemble, model_inputs, "model_input_instances", name="assemble_model_input"),
            Node(
                nodes.manifests,
                ["model_input_instances", "detection_instances", "detection_report", "apt36k_split_counts"],
                "manifests",
                name="write_manifests",
            ),
        ]
    )
