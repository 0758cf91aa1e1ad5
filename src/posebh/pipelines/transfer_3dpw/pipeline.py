"""``transfer_3dpw``: 3DPW (24 SMPL joints) from the split COCO model with new prototypes
(reference 5.3), plus the ViTPose++ fine-tuning, from-scratch and AIC-init rows."""

from posebh.pipelines.transfer_interhand.pipeline import transfer_pipeline


def create_pipeline(**kwargs):
    return transfer_pipeline("transfer_3dpw")
