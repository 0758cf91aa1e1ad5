"""ViTPose++ backbone: a plain ViT whose FFN output is split into shared and per-dataset channels.

Module names mirror the official ViTPose++ checkpoint keys (``patch_embed.proj``, ``pos_embed``,
``blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2,mlp.experts.{e}}``, ``last_norm``), so
official weights load with the ``backbone.`` prefix stripped.

Unlike the official code, which runs every expert on every sample and multiplies by a 0/1 mask, the
default ``routing="routed"`` sorts the batch by expert once, sends each contiguous group through its own
expert only and restores the order at the end. ``routing="masked"`` keeps the official computation for
equivalence tests and benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from numbers import Integral
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..skeletons import PAPER_MDT_DATASETS
from .timm_compat import import_timm

_timm_layers = import_timm().layers
Attention = _timm_layers.Attention
DropPath = _timm_layers.DropPath
Mlp = _timm_layers.Mlp
trunc_normal_ = _timm_layers.trunc_normal_

Routing = Literal["routed", "masked"]
ROUTINGS: tuple[str, ...] = ("routed", "masked")

PATCH_SIZE = 16
#: ViTPose's patch-embedding padding: a 16x16/16 conv with padding 2 gives H/16 x W/16 tokens
PATCH_PADDING = 2
MLP_RATIO = 4.0
LN_EPS = 1e-6
INIT_STD = 0.02
#: one expert per paper training set, indexed in PAPER_MDT_DATASETS order
PAPER_NUM_EXPERTS = len(PAPER_MDT_DATASETS)
PAPER_IMG_SIZE = (256, 192)
DEMO_IMG_SIZE = (128, 96)
#: deconv width of the paper's heatmap heads and embedding module
PAPER_HEAD_CHANNELS = 256


@dataclass(frozen=True)
class BackboneSpec:
    """One named model size. ``head_channels`` is the deconv width the heads and the embedding
    module should use with this backbone (256 in the paper; narrower for the CPU demo)."""

    name: str
    embed_dim: int
    depth: int
    num_heads: int
    drop_path_rate: float
    part_features: int
    layer_decay: float
    img_size: tuple[int, int] = PAPER_IMG_SIZE
    head_channels: int = PAPER_HEAD_CHANNELS
    mlp_ratio: float = MLP_RATIO


#: ViTPose++ shapes (reference 1.1). ``tiny`` is the demo size: D=192 (head dim 64), 6 blocks,
#: expert width D/4, 128x96 input (8x6 tokens) and 64-channel heads, so that the whole demo trains
#: in minutes on two CPU cores. The released ViTPose++-S checkpoint uses part_features=96, not the
#: config's 192 (ViTPose issue 144): pass ``part_features=96`` to load it.
SIZES: dict[str, BackboneSpec] = {
    s.name: s
    for s in (
        BackboneSpec("tiny", 192, 6, 3, 0.1, 48, 0.8, img_size=DEMO_IMG_SIZE, head_channels=64),
        BackboneSpec("s", 384, 12, 12, 0.1, 192, 0.8),
        BackboneSpec("b", 768, 12, 12, 0.3, 192, 0.75),
        BackboneSpec("l", 1024, 24, 16, 0.5, 256, 0.8),
        BackboneSpec("h", 1280, 32, 16, 0.55, 320, 0.8),
    )
}


def spec(size: str) -> BackboneSpec:
    try:
        return SIZES[size.lower()]
    except KeyError:
        raise KeyError(f"unknown model size {size!r}; known: {sorted(SIZES)}") from None


def grid_size(img_size: tuple[int, int], patch_size: int = PATCH_SIZE) -> tuple[int, int]:
    """Token grid of the padded patch embedding (16x12 for 256x192)."""
    return tuple((s + 2 * PATCH_PADDING - patch_size) // patch_size + 1 for s in img_size)


# ----------------------------------------------------------------------------------------------
# Routing
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpertRoute:
    """How one batch meets the experts, computed once per forward and shared by every block.

    routed: ``counts[e]`` consecutive samples of the (expert-sorted) batch use expert e.
    masked: ``masks[e]`` is a (B, 1, 1) 0/1 tensor selecting expert e's samples.
    """

    counts: tuple[int, ...] | None = None
    masks: tuple[Tensor, ...] | None = None


def _group_by_expert(dataset_idx: Tensor, num_experts: int) -> tuple[Tensor | None, tuple[int, ...]]:
    """Stable sort order (None if already sorted) and per-expert counts, with one host sync."""
    idx = dataset_idx.reshape(-1)
    if idx.numel() == 0:
        raise ValueError("empty batch")
    counts = torch.bincount(idx.clamp_min(0), minlength=num_experts)
    is_sorted = (idx[1:] >= idx[:-1]).all()
    host = torch.cat([counts, is_sorted.to(counts.dtype).view(1), idx.min().view(1)]).tolist()
    counts_list, already_sorted, lowest = host[:-2], bool(host[-2]), host[-1]
    if lowest < 0 or len(counts_list) != num_experts:
        raise ValueError(f"dataset index out of range [0, {num_experts}): min {lowest}, max {len(counts_list) - 1}")
    order = None if already_sorted else torch.argsort(idx, stable=True)
    return order, tuple(counts_list)


def _check_index(dataset_idx: Tensor | int, batch: int, num_experts: int, device) -> Tensor:
    if isinstance(dataset_idx, Integral):
        if not 0 <= dataset_idx < num_experts:
            raise ValueError(f"dataset index {dataset_idx} out of range for {num_experts} experts")
        return torch.full((batch,), int(dataset_idx), dtype=torch.long, device=device)
    if dataset_idx.dtype not in (torch.int64, torch.int32) or dataset_idx.shape != (batch,):
        raise ValueError(f"dataset_idx must be an integer tensor of shape ({batch},); got {dataset_idx.dtype} "
                         f"{tuple(dataset_idx.shape)}")
    return dataset_idx.to(device=device, dtype=torch.long)


# ----------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------


class MoEMlp(nn.Module):
    """FFN with a shared fc1, a shared fc2 of D-P outputs and one P-wide fc2 per expert."""

    def __init__(self, dim: int, hidden: int, part_features: int, num_experts: int):
        super().__init__()
        if not 0 < part_features < dim:
            raise ValueError(f"part_features must be in (0, {dim}); got {part_features}")
        self.part_features = part_features
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim - part_features)
        self.experts = nn.ModuleList(nn.Linear(hidden, part_features) for _ in range(num_experts))

    def forward(self, x: Tensor, route: ExpertRoute) -> Tensor:
        h = self.act(self.fc1(x))
        shared = self.fc2(h)
        if route.counts is not None:
            # split's backward is one cat, unlike slicing (one full-size zero tensor per slice)
            parts = [self.experts[e](c) for e, c in enumerate(h.split(route.counts)) if route.counts[e]]
            own = parts[0] if len(parts) == 1 else torch.cat(parts)
        else:
            own = shared.new_zeros(*shared.shape[:-1], self.part_features)
            for expert, mask in zip(self.experts, route.masks):
                own = own + expert(h) * mask
        return torch.cat([shared, own], dim=-1)


class Block(nn.Module):
    """Pre-norm transformer block; ``mlp`` is a timm ``Mlp`` or a ``MoEMlp``."""

    def __init__(self, dim: int, num_heads: int, mlp: nn.Module, drop_path: float, qkv_bias: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=qkv_bias)
        self.attn.fused_attn = True
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = mlp

    def forward(self, x: Tensor, route: ExpertRoute | None = None) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        h = self.norm2(x)
        return x + self.drop_path(self.mlp(h) if route is None else self.mlp(h, route))


class PatchEmbed(nn.Module):
    def __init__(self, in_chans: int, embed_dim: int, patch_size: int = PATCH_SIZE):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size, padding=PATCH_PADDING)

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        x = self.proj(x)
        return x.flatten(2).transpose(1, 2), (x.shape[2], x.shape[3])


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=INIT_STD)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


class _ViTBase(nn.Module):
    """Shared trunk: padded patch embedding, cls-slot-on-every-token position embedding, blocks,
    last norm, reshape to (B, D, Hp, Wp)."""

    def __init__(
        self,
        *,
        img_size: tuple[int, int],
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
        drop_path_rate: float,
        make_mlp,
        qkv_bias: bool = True,
        in_chans: int = 3,
        patch_size: int = PATCH_SIZE,
    ):
        super().__init__()
        self.img_size = tuple(img_size)
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.depth = depth
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.drop_path_rate = drop_path_rate
        self.qkv_bias = qkv_bias
        self.grid_size = grid_size(self.img_size, patch_size)
        #: recompute each block in backward (activation memory for L/H on a GPU)
        self.grad_checkpointing = False
        hidden = int(embed_dim * mlp_ratio)

        self.patch_embed = PatchEmbed(in_chans, embed_dim, patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid_size[0] * self.grid_size[1], embed_dim))
        rates = [drop_path_rate * i / (depth - 1) if depth > 1 else 0.0 for i in range(depth)]
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, make_mlp(embed_dim, hidden), rates[i], qkv_bias) for i in range(depth)
        )
        self.last_norm = nn.LayerNorm(embed_dim, eps=LN_EPS)

        self.apply(_init_weights)
        trunc_normal_(self.pos_embed, std=INIT_STD)

    @property
    def num_layers(self) -> int:
        return self.depth

    def arch_kwargs(self) -> dict:
        """Constructor arguments shared by ``ViT`` and ``ViTMoE`` (used to split one into the other)."""
        return dict(img_size=self.img_size, embed_dim=self.embed_dim, depth=self.depth, num_heads=self.num_heads,
                    mlp_ratio=self.mlp_ratio, drop_path_rate=self.drop_path_rate, qkv_bias=self.qkv_bias,
                    in_chans=self.in_chans, patch_size=self.patch_size)

    def _embed(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        tokens, grid = self.patch_embed(x)
        if grid != self.grid_size:
            raise ValueError(f"input {tuple(x.shape[-2:])} gives a {grid} token grid; this backbone was built for "
                             f"{self.img_size} ({self.grid_size}); resize pos_embed with resize_pos_embed()")
        return tokens + self.pos_embed[:, 1:] + self.pos_embed[:, :1], grid

    def _run_blocks(self, tokens: Tensor, route: ExpertRoute | None = None) -> Tensor:
        for blk in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                tokens = checkpoint(blk, tokens, route, use_reentrant=False)
            else:
                tokens = blk(tokens, route)
        return tokens

    def _finish(self, tokens: Tensor, grid: tuple[int, int]) -> Tensor:
        tokens = self.last_norm(tokens)
        return tokens.transpose(1, 2).reshape(tokens.shape[0], self.embed_dim, *grid)


class ViT(_ViTBase):
    """Plain ViTPose backbone (the split model); ``forward(x) -> (B, D, Hp, Wp)``."""

    def __init__(self, *, img_size: tuple[int, int] = PAPER_IMG_SIZE, embed_dim: int, depth: int, num_heads: int,
                 mlp_ratio: float = MLP_RATIO, drop_path_rate: float = 0.0, qkv_bias: bool = True,
                 in_chans: int = 3, patch_size: int = PATCH_SIZE):
        super().__init__(img_size=img_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                         mlp_ratio=mlp_ratio, drop_path_rate=drop_path_rate, qkv_bias=qkv_bias, in_chans=in_chans,
                         patch_size=patch_size, make_mlp=lambda d, h: Mlp(d, h, act_layer=nn.GELU))

    def forward(self, x: Tensor) -> Tensor:
        tokens, grid = self._embed(x)
        return self._finish(self._run_blocks(tokens), grid)


class ViTMoE(_ViTBase):
    """ViTPose++ backbone; ``forward(x, dataset_idx) -> (B, D, Hp, Wp)``, each sample through the
    expert of its dataset index (an int selects one expert for the whole batch)."""

    def __init__(self, *, img_size: tuple[int, int] = PAPER_IMG_SIZE, embed_dim: int, depth: int, num_heads: int,
                 num_experts: int, part_features: int, mlp_ratio: float = MLP_RATIO,
                 drop_path_rate: float = 0.0, qkv_bias: bool = True, in_chans: int = 3,
                 patch_size: int = PATCH_SIZE, routing: Routing = "routed"):
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1; got {num_experts}")
        super().__init__(img_size=img_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                         mlp_ratio=mlp_ratio, drop_path_rate=drop_path_rate, qkv_bias=qkv_bias, in_chans=in_chans,
                         patch_size=patch_size, make_mlp=partial(_moe_mlp, part_features, num_experts))
        self.num_experts = num_experts
        self.part_features = part_features
        self.routing = _check_routing(routing)

    def forward(self, x: Tensor, dataset_idx: Tensor | int, routing: Routing | None = None) -> Tensor:
        routing = _check_routing(routing or self.routing)
        batch = x.shape[0]
        idx = _check_index(dataset_idx, batch, self.num_experts, x.device)
        tokens, grid = self._embed(x)
        order = None
        if routing == "routed":
            if isinstance(dataset_idx, Integral):
                counts = tuple(batch if e == dataset_idx else 0 for e in range(self.num_experts))
            else:
                order, counts = _group_by_expert(idx, self.num_experts)
            route = ExpertRoute(counts=counts)
            if order is not None:
                tokens = tokens.index_select(0, order)
        else:
            if bool(((idx < 0) | (idx >= self.num_experts)).any()):
                raise ValueError(f"dataset index out of range for {self.num_experts} experts")
            view = idx.view(-1, 1, 1)
            route = ExpertRoute(masks=tuple((view == e).to(tokens.dtype) for e in range(self.num_experts)))
        tokens = self._run_blocks(tokens, route)
        if order is not None:
            tokens = tokens.index_select(0, torch.argsort(order))
        return self._finish(tokens, grid)


def _moe_mlp(part_features: int, num_experts: int, dim: int, hidden: int) -> MoEMlp:
    return MoEMlp(dim, hidden, part_features, num_experts)


def _check_routing(routing: str) -> str:
    if routing not in ROUTINGS:
        raise ValueError(f"routing must be one of {ROUTINGS}; got {routing!r}")
    return routing


# ----------------------------------------------------------------------------------------------
# Factories
# ----------------------------------------------------------------------------------------------


def _resolve(size: str, img_size, drop_path_rate, part_features) -> BackboneSpec:
    s = spec(size)
    return replace(
        s,
        img_size=tuple(img_size) if img_size is not None else s.img_size,
        drop_path_rate=s.drop_path_rate if drop_path_rate is None else drop_path_rate,
        part_features=s.part_features if part_features is None else part_features,
    )


def build_backbone(size: str, *, num_experts: int = PAPER_NUM_EXPERTS, img_size: tuple[int, int] | None = None,
                   drop_path_rate: float | None = None, part_features: int | None = None,
                   routing: Routing = "routed") -> ViTMoE:
    """ViT-MoE of a named size; ``None`` keeps the size's default (its input size, drop path, P)."""
    s = _resolve(size, img_size, drop_path_rate, part_features)
    return ViTMoE(img_size=s.img_size, embed_dim=s.embed_dim, depth=s.depth, num_heads=s.num_heads,
                  mlp_ratio=s.mlp_ratio, drop_path_rate=s.drop_path_rate, num_experts=num_experts,
                  part_features=s.part_features, routing=routing)


def build_vit(size: str, *, img_size: tuple[int, int] | None = None, drop_path_rate: float | None = None) -> ViT:
    """Plain ViT of a named size (single-dataset and transfer models)."""
    s = _resolve(size, img_size, drop_path_rate, None)
    return ViT(img_size=s.img_size, embed_dim=s.embed_dim, depth=s.depth, num_heads=s.num_heads,
               mlp_ratio=s.mlp_ratio, drop_path_rate=s.drop_path_rate)


def resize_pos_embed(pos_embed: Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]) -> Tensor:
    """Bicubic resize of the per-patch slots of a (1, 1+N, D) position embedding; the cls slot is kept."""
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    cls, grid = pos_embed[:, :1], pos_embed[:, 1:]
    d = grid.shape[-1]
    grid = grid.reshape(1, *old_grid, d).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=tuple(new_grid), mode="bicubic", align_corners=False)
    return torch.cat([cls, grid.permute(0, 2, 3, 1).reshape(1, -1, d)], dim=1)


# ----------------------------------------------------------------------------------------------
# Optimizer helpers (reference 5.1)
# ----------------------------------------------------------------------------------------------

BACKBONE_PREFIX = "backbone."
_LAYER0_NAMES = ("pos_embed", "cls_token", "mask_token")


def _backbone_relative(param_name: str, prefix: str) -> str:
    return param_name[len(prefix):] if prefix and param_name.startswith(prefix) else param_name


def layer_id(param_name: str, num_layers: int, *, prefix: str = BACKBONE_PREFIX) -> int:
    """Layer-decay id: patch_embed/pos_embed 0, block i -> i+1, anything else num_layers+1.

    Names may be backbone-relative (``blocks.3.attn.qkv.weight``) or carry ``prefix``.
    """
    name = _backbone_relative(param_name, prefix)
    if name in _LAYER0_NAMES or name.startswith("patch_embed."):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return num_layers + 1


def layer_lr_scale(param_name: str, num_layers: int, rate: float, *, prefix: str = BACKBONE_PREFIX) -> float:
    """``rate ** (num_layers + 1 - layer_id)``: 1 for heads and the last norm."""
    return rate ** (num_layers + 1 - layer_id(param_name, num_layers, prefix=prefix))


def no_weight_decay(param_name: str, param: Tensor) -> bool:
    """1-D parameters (norms), biases and the position embedding get no weight decay."""
    return param.ndim == 1 or param_name.endswith(".bias") or "pos_embed" in param_name
