"""The PoseBH model: a ViT-MoE backbone, one heatmap head per dataset, the keypoint-embedding
module and the J x M x F keypoint prototypes over the global MDT keypoint space.

``ModelConfig.head = "sar"`` swaps the heatmap heads for spatial-aware regression heads
(:mod:`posebh.models.sar`, same trunk and state-dict prefix ``heads.<dataset>.``); the backbone,
embedding module and prototypes are the same either way.

State-dict prefixes: ``backbone.``, ``heads.<dataset>.``, ``embedding.``, ``prototypes.prototypes``.
The expert index of a sample is its dataset's position in ``config.datasets`` (the MDT order,
PoseBH's ``dataset_idx``), which is also the prototype-row order of :class:`~posebh.skeletons.MDTSpace`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from posebh import skeletons
from posebh.models import DEFAULT_HEAD, HEADS
from posebh.models.heads import KeypointEmbedding, MultiHead
from posebh.models.prototypes import EMBED_DIM, PROTOTYPES_PER_KEYPOINT, Prototypes
from posebh.models.sar import MultiSARHead
from posebh.models.vit_moe import build_backbone, spec

#: keypoint head types: per-dataset heatmap heads (ViTPose++) or SAR heads

@dataclass(frozen=True)
class ModelConfig:
    """Everything that fixes the architecture (saved in checkpoints to rebuild the model)."""

    size: str = "tiny"
    datasets: tuple[str, ...] = skeletons.PAPER_MDT_DATASETS
    #: input (H, W); None takes the size's default (256x192, or 128x96 for ``tiny``)
    img_size: tuple[int, int] | None = None
    embed_dim: int = EMBED_DIM
    prototypes_per_keypoint: int = PROTOTYPES_PER_KEYPOINT
    drop_path_rate: float | None = None
    part_features: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: "heatmap" (ViTPose++ heads) or "sar" (spatial-aware regression heads)
    head: str = DEFAULT_HEAD

    def __post_init__(self):
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}; known: {list(HEADS)}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown model setting(s) {unknown}; known: {sorted(known)}")
        d = dict(d)
        if "datasets" in d:
            d["datasets"] = tuple(skeletons.get(n).name for n in d["datasets"])
        if d.get("img_size") is not None:
            d["img_size"] = tuple(int(v) for v in d["img_size"])
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["datasets"] = list(self.datasets)
        out["img_size"] = list(self.input_hw)
        if out["head"] == DEFAULT_HEAD:
            # left out so that heatmap models keep the saved configs and run fingerprints they
            # had before the option existed; from_dict reads a missing head as the default
            del out["head"]
        return out

    @property
    def input_hw(self) -> tuple[int, int]:
        return tuple(self.img_size) if self.img_size is not None else spec(self.size).img_size

    @property
    def input_wh(self) -> tuple[int, int]:
        h, w = self.input_hw
        return (w, h)

    @property
    def heatmap_wh(self) -> tuple[int, int]:
        """The heads' output size (heatmaps or the SAR grid): the token grid upsampled 4x by two
        stride-2 deconvolutions."""
        w, h = self.input_wh
        return (w // 4, h // 4)

    @property
    def space(self) -> skeletons.MDTSpace:
        return skeletons.mdt_space(self.datasets)


class PoseBH(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.space = config.space
        sp = spec(config.size)
        self.backbone = build_backbone(
            config.size,
            num_experts=len(config.datasets),
            img_size=config.input_hw,
            drop_path_rate=config.drop_path_rate,
            part_features=config.part_features,
        )
        dim = self.backbone.embed_dim
        head_cls = MultiSARHead if config.head == "sar" else MultiHead
        self.heads = head_cls(
            dim, {d: skeletons.get(d).num_keypoints for d in config.datasets}, deconv_channels=sp.head_channels
        )
        self.embedding = KeypointEmbedding(
            dim, deconv_channels=sp.head_channels, channels=config.embed_dim, out_channels=config.embed_dim
        )
        self.prototypes = Prototypes(self.space.total, config.prototypes_per_keypoint, config.embed_dim)

    @property
    def datasets(self) -> tuple[str, ...]:
        return self.config.datasets

    @property
    def is_sar(self) -> bool:
        return self.config.head == "sar"

    def dataset_index(self, dataset: str) -> int:
        return self.space.dataset_index(skeletons.get(dataset).name)

    def features(self, images: Tensor, dataset_idx: Tensor | int) -> Tensor:
        """Backbone features (B, D, h, w), each sample through its own expert."""
        return self.backbone(images, dataset_idx)

    def embed(self, features: Tensor) -> Tensor:
        """Pixel embeddings (B, F, 4h, 4w), L2-normalised per pixel."""
        return F.normalize(self.embedding(features).float(), dim=1)

    def predict(self, images: Tensor, dataset: str, *, expert: str | None = None) -> Tensor:
        """Heatmaps of ``dataset``'s keypoints on any images (cross-skeleton prediction); a
        :class:`~posebh.data.sar_codec.SAROutput` for SAR heads (decoded by the inference code).

        The expert defaults to the dataset's own, as the split per-dataset model does.
        """
        idx = self.dataset_index(expert or dataset)
        return self.heads[skeletons.get(dataset).name](self.features(images, idx))

    def prototype_heatmap(self, images: Tensor, dataset: str, *, expert: str | None = None) -> Tensor:
        """Any dataset's keypoints through the prototypes (|cos|, max over in-class prototypes)."""
        idx = self.dataset_index(expert or dataset)
        emb = self.embed(self.features(images, idx))
        return self.prototypes.heatmap(emb, self.space.slice(skeletons.get(dataset).name))

    def forward(
        self,
        images: Tensor,
        dataset_idx: Tensor,
        *,
        own_heads: bool = True,
        embedding: bool = False,
        cross_heads: bool = False,
    ) -> dict[str, Any]:
        """One training forward (through DDP), computing only what the stage's losses need.

        ``heads[d]`` = (sample positions of dataset d, head d on them); ``emb`` = normalised pixel
        embeddings of the whole batch; ``cross[d]`` = (positions of the OTHER datasets' samples,
        head d on them), the head side of cross-type self-supervision. Heads that no loss needs
        never run (stage 1 runs none). SAR heads give :class:`~posebh.data.sar_codec.SAROutput`;
        on the cross side only their auxiliary heatmap is computed (what CSS uses).
        """
        feats = self.features(images, dataset_idx)
        present = dataset_idx.unique().tolist()
        out: dict[str, Any] = {}
        if own_heads:
            groups = {self.datasets[d]: (dataset_idx == d).nonzero().flatten() for d in present}
            hm = self.heads(feats, groups)
            out["heads"] = {d: (groups[d], hm[d]) for d in groups}
        if embedding:
            out["emb"] = self.embed(feats)
        if cross_heads:
            cross = {}
            for d, name in enumerate(self.datasets):
                others = (dataset_idx != d).nonzero().flatten()
                if len(others):
                    if self.is_sar:
                        cross[name] = (others, self.heads[name](feats[others], heatmap_only=True))
                    else:
                        cross[name] = (others, self.heads[name](feats[others]))
            out["cross"] = cross
        return out


def build_model(config: ModelConfig | dict) -> PoseBH:
    if isinstance(config, dict):
        config = ModelConfig.from_dict(config)
    return PoseBH(config)
