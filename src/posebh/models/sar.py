"""Spatial-aware regression (SAR) heads: an alternative to the per-dataset heatmap heads.

Same input and trunk as :class:`~posebh.models.heads.HeatmapHead` (the ViTPose classic decoder's
deconvolutions, reference peers.md 2.9); the final 1x1 heatmap conv becomes three 1x1 convs:
per-cell confidence logits (K), offsets (2K) and, optionally, auxiliary heatmap logits (K). The
outputs are decoded by :class:`~posebh.data.sar_codec.SARCodec` and trained with
:func:`~posebh.losses_sar.sar_loss`.

The three 1x1 convs run in fp32 even under autocast: offsets are fractions of the grid, and bf16's
8-bit mantissa would round a 192-pixel crop's coordinates to about 0.75 px.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from posebh.data.sar_codec import SAROutput, focal_prior_bias
from posebh.models.heads import DECONV_CHANNELS, NUM_DECONV, MultiHead, _init_head, deconv_stack
from posebh.models.prototypes import fp32

#: The reference's focal prior for the confidence and heatmap logits (bias -ln 99).
PRIOR = 0.01


class SARHead(nn.Module):
    """(B, D, Hp, Wp) -> :class:`SAROutput` on the (2^num_deconv Hp, 2^num_deconv Wp) grid.

    ``num_deconv=0`` puts SAR directly on the token grid (the cheap variant of reference 2.9).
    """

    def __init__(self, in_channels: int, num_keypoints: int, deconv_channels: int = DECONV_CHANNELS,
                 num_deconv: int = NUM_DECONV, with_heatmap: bool = True):
        super().__init__()
        self.num_keypoints = num_keypoints
        self.with_heatmap = bool(with_heatmap)
        self.deconv_layers = deconv_stack(in_channels, deconv_channels, num_deconv)
        c = deconv_channels if num_deconv else in_channels
        self.logit_conv = nn.Conv2d(c, num_keypoints, kernel_size=1)
        self.offset_conv = nn.Conv2d(c, 2 * num_keypoints, kernel_size=1)
        self.heatmap_conv = nn.Conv2d(c, num_keypoints, kernel_size=1) if with_heatmap else None
        _init_head(self)
        bias = focal_prior_bias(PRIOR)
        nn.init.constant_(self.logit_conv.bias, bias)
        if self.heatmap_conv is not None:
            nn.init.constant_(self.heatmap_conv.bias, bias)

    def forward(self, features: Tensor, *, heatmap_only: bool = False) -> SAROutput:
        """All outputs; ``heatmap_only`` computes just the auxiliary heatmap (the CSS side)."""
        x = self.deconv_layers(features)
        with fp32(x.device):
            x = x.float()
            if heatmap_only:
                if self.heatmap_conv is None:
                    raise ValueError("this SAR head has no auxiliary heatmap branch (with_heatmap=False)")
                return SAROutput(None, None, self.heatmap_conv(x))
            b, _, h, w = x.shape
            logits = self.logit_conv(x)
            offsets = self.offset_conv(x).reshape(b, self.num_keypoints, 2, h, w)
            heatmap = self.heatmap_conv(x) if self.heatmap_conv is not None else None
        return SAROutput(logits, offsets, heatmap)


class MultiSARHead(MultiHead):
    """One :class:`SARHead` per dataset, keyed by dataset name: :class:`~posebh.models.heads.MultiHead`'s
    API (a sequence of names runs each head on the whole batch; a mapping ``name -> sample indices``
    runs each head on its own samples only; ``heatmap_only=True`` passes on) with :class:`SAROutput` values."""

    def __init__(self, in_channels: int, num_keypoints: Mapping[str, int], deconv_channels: int = DECONV_CHANNELS,
                 num_deconv: int = NUM_DECONV, with_heatmap: bool = True):
        nn.ModuleDict.__init__(
            self,
            {name: SARHead(in_channels, k, deconv_channels, num_deconv, with_heatmap)
             for name, k in num_keypoints.items()},
        )


def head_cost(head: nn.Module, in_channels: int, token_hw: tuple[int, int]) -> dict[str, float]:
    """Parameters and FLOPs per sample of one head on a (1, in_channels, *token_hw) feature map.

    FLOPs as ``torch.utils.flop_counter.FlopCounterMode`` counts them (2 per multiply-accumulate;
    convolutions and deconvolutions only, BN/ReLU/sigmoid are not counted).
    """
    x = torch.zeros(1, in_channels, *token_hw)
    was_training = head.training
    head.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            head(x)
    finally:
        head.train(was_training)
    return {"params": int(sum(p.numel() for p in head.parameters())), "flops": float(counter.get_total_flops())}


__all__ = ["SARHead", "MultiSARHead", "SAROutput", "head_cost"]
