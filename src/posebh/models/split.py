"""Split a ViT-MoE into one plain ViT per expert (the official ``tools/model_split.py`` conversion).

Expert e's fc2 rows are appended to the shared fc2 rows, giving an ordinary D-wide fc2; every other
weight is shared and copied. Works on modules and on bare state dicts (official checkpoints).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor

from .vit_moe import ViT, ViTMoE

_EXPERT_KEY = re.compile(r"^(?P<pre>.*\.mlp\.)experts\.(?P<e>\d+)\.(?P<kind>weight|bias)$")
_FC2_KEY = re.compile(r"^(?P<pre>.*\.mlp\.)fc2\.(?P<kind>weight|bias)$")


def split_state_dict(state: Mapping[str, Tensor], expert: int) -> dict[str, Tensor]:
    """Plain-ViT state dict for ``expert``: ``*.mlp.fc2`` = cat(shared fc2, ``*.mlp.experts.{expert}``)
    along the output rows; other experts are dropped; every other key (any prefix) is kept."""
    experts_by_block: dict[str, set[int]] = {}
    for key in state:
        m = _EXPERT_KEY.match(key)
        if m:
            experts_by_block.setdefault(m["pre"], set()).add(int(m["e"]))
    if not experts_by_block:
        raise ValueError("state dict has no '*.mlp.experts.{e}' keys: not a ViT-MoE checkpoint")
    missing = sorted(pre for pre, es in experts_by_block.items() if expert not in es)
    if missing:
        raise ValueError(f"expert {expert} missing in {missing[:3]}{'...' if len(missing) > 3 else ''}; "
                         f"available: {sorted(set.union(*experts_by_block.values()))}")

    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if _EXPERT_KEY.match(key):
            continue
        m = _FC2_KEY.match(key)
        if m and m["pre"] in experts_by_block:
            own = state[f"{m['pre']}experts.{expert}.{m['kind']}"]
            value = torch.cat([value, own], dim=0)
        out[key] = value
    return out


def split_expert(moe: ViTMoE, expert: int) -> ViT:
    """A plain ``ViT`` computing ``moe(x, expert)`` exactly (same mode: train/eval, same device/dtype)."""
    if not 0 <= expert < moe.num_experts:
        raise ValueError(f"expert {expert} out of range for {moe.num_experts} experts")
    first = next(moe.parameters())
    vit = ViT(**moe.arch_kwargs()).to(device=first.device, dtype=first.dtype)
    vit.load_state_dict(split_state_dict(moe.state_dict(), expert), strict=True)
    vit.train(moe.training)
    return vit
