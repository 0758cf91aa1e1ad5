"""Per-dataset heatmap heads and the keypoint-embedding module (reference 1.2, 1.3).

Module names mirror the official checkpoints: ``deconv_layers.{0..5}`` and ``final_layer`` for
``TopdownHeatmapSimpleHead``; ``deconv_layers``, ``neck.{conv1,bn1,conv2,bn2,downsample.0,downsample.1}``
and ``head.{0,1,3}`` for PoseBH's ``KptProtoHead``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from torch import Tensor, nn

HEAD_INIT_STD = 0.001
DECONV_CHANNELS = 256
NUM_DECONV = 2
#: the method's embedding width F and the neck width of the keypoint-embedding module
EMBED_CHANNELS = 64


def deconv_stack(in_channels: int, channels: int = DECONV_CHANNELS, num_deconv: int = NUM_DECONV) -> nn.Sequential:
    """``num_deconv`` x [ConvTranspose2d(k4, s2, p1, no bias), BN, ReLU]: each doubles the resolution."""
    layers: list[nn.Module] = []
    for i in range(num_deconv):
        layers += [
            nn.ConvTranspose2d(in_channels if i == 0 else channels, channels, kernel_size=4, stride=2, padding=1,
                               output_padding=0, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


def _init_head(module: nn.Module) -> None:
    """normal(0.001) weights and zero biases for convs/deconvs/linears; BN weight 1, bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, std=HEAD_INIT_STD)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class HeatmapHead(nn.Module):
    """ViTPose classic decoder: (B, D, Hp, Wp) -> (B, K, 4Hp, 4Wp) heatmaps (with two deconvs)."""

    def __init__(self, in_channels: int, num_keypoints: int, deconv_channels: int = DECONV_CHANNELS,
                 num_deconv: int = NUM_DECONV):
        super().__init__()
        self.num_keypoints = num_keypoints
        self.deconv_layers = deconv_stack(in_channels, deconv_channels, num_deconv)
        self.final_layer = nn.Conv2d(deconv_channels, num_keypoints, kernel_size=1)
        _init_head(self)

    def forward(self, features: Tensor) -> Tensor:
        return self.final_layer(self.deconv_layers(features))


class ResidualNeck(nn.Module):
    """conv3x3-BN-SiLU-conv3x3-BN plus a 1x1-conv-BN shortcut, then SiLU."""

    def __init__(self, in_channels: int, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.act = nn.SiLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = (
            nn.Sequential(nn.Conv2d(in_channels, channels, 1, bias=False), nn.BatchNorm2d(channels))
            if in_channels != channels
            else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))
        return self.act(out + self.downsample(x))


class KeypointEmbedding(nn.Module):
    """PoseBH's keypoint-embedding module: own deconv stack, residual neck, conv head.

    (B, D, Hp, Wp) -> (B, out_channels, 4Hp, 4Wp); not normalised (the prototypes L2-normalise).
    """

    def __init__(self, in_channels: int, deconv_channels: int = DECONV_CHANNELS, channels: int = EMBED_CHANNELS,
                 out_channels: int = EMBED_CHANNELS, num_deconv: int = NUM_DECONV):
        super().__init__()
        self.out_channels = out_channels
        self.deconv_layers = deconv_stack(in_channels, deconv_channels, num_deconv)
        self.neck = ResidualNeck(deconv_channels, channels)
        self.head = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.SiLU(),
            nn.Conv2d(channels, out_channels, 1),
        )
        _init_head(self)

    def forward(self, features: Tensor) -> Tensor:
        return self.head(self.neck(self.deconv_layers(features)))


class MultiHead(nn.ModuleDict):
    """One ``HeatmapHead`` per dataset, keyed by dataset name, in the given (expert-index) order;
    state-dict keys are ``{name}.deconv_layers...``/``{name}.final_layer...``.

    ``forward`` runs only the requested heads: a sequence of names runs each on the whole batch
    (CSS: a head on other datasets' images); a mapping ``name -> sample indices`` (LongTensor or
    bool mask over the batch) runs each head on its own samples only (the supervised loss).
    """

    def __init__(self, in_channels: int, num_keypoints: Mapping[str, int], deconv_channels: int = DECONV_CHANNELS,
                 num_deconv: int = NUM_DECONV):
        super().__init__(
            {name: HeatmapHead(in_channels, k, deconv_channels, num_deconv) for name, k in num_keypoints.items()}
        )

    @property
    def names(self) -> list[str]:
        return list(self.keys())

    def forward(self, features: Tensor, names: Iterable[str] | Mapping[str, Tensor], **head_kwargs) -> dict[str, Tensor]:
        """``head_kwargs`` go to every head run (``heatmap_only`` for SAR heads)."""
        if isinstance(names, str):
            raise TypeError("names must be a sequence or mapping of head names, not a string")
        unknown = [n for n in names if n not in self]
        if unknown:
            raise KeyError(f"no head for {unknown}; heads: {self.names}")
        if isinstance(names, Mapping):
            return {n: self[n](features[idx], **head_kwargs) for n, idx in names.items()}
        return {n: self[n](features, **head_kwargs) for n in names}
