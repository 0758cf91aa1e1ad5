"""Split nodes: a multi-dataset checkpoint -> one plain ViT + head per dataset."""

from __future__ import annotations


def to_model(checkpoint: dict):
    from posebh.models.posebh import ModelConfig, PoseBH

    net = PoseBH(ModelConfig.from_dict(checkpoint["config"]))
    net.load_state_dict(checkpoint["state_dict"])
    return net.eval()
