"""Checkpoints in and out: official ViTPose++ / PoseBH weights, MAE weights, and our own format.

Every file is read with ``torch.load(weights_only=True)``: a checkpoint that needs arbitrary code
to unpickle is refused, never executed. Every import accounts for every key in a
:class:`LoadReport` and fails, naming the keys, unless ``lenient=True``.

Official key layout (mmpose 0.x ``TopDownMoE`` / PoseBH ``TopDownMoEProto``, reference
posebh-method.md 1.1-1.4 and peers.md 3.6; the released PoseBH code was read for the proto-head
names):

* ``backbone.*``: the ViT-MoE, same names as ours (``patch_embed.proj``, ``pos_embed`` with a cls
  slot, ``blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2,mlp.experts.{e}}``,
  ``last_norm``);
* ``keypoint_head.*``: the head of the first dataset (COCO); ``associate_keypoint_heads.{i}.*``:
  the head of dataset i+1 (AIC, MPII, AP-10K, APT-36K, WholeBody), all with
  ``deconv_layers.{0,1,3,4}`` and ``final_layer``;
* PoseBH only, ``proto_head.*``: the keypoint-embedding module (``deconv_layers``,
  ``neck.{conv1,bn1,conv2,bn2,downsample.0,downsample.1}``, ``head.{0,1,3}``) and the prototype
  tensor ``proto_head.kpt_prototype.prototypes`` (J x M x F). ``proto_head.cluster_prototype.*``
  (CPS centroids, training-only) is ignored.

The prefix tables below are the whole mapping; below a prefix the names are identical, so a
correction is one line in :data:`STATIC_PREFIXES` or :func:`official_head_prefix`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from posebh import skeletons
from posebh.atomic import atomic_file
from posebh.models.checkpoint_io import CheckpointError, checkpoint_bytes, read_checkpoint
from posebh.models.posebh import ModelConfig, PoseBH, build_model
from posebh.models.vit_moe import PATCH_SIZE, SIZES, ViT, ViTMoE, grid_size, resize_pos_embed, spec

PAPER_MDT_DATASETS = skeletons.PAPER_MDT_DATASETS

# ----------------------------------------------------------------------------------------------
# The official <-> ours key mapping (one table; see the module docstring)
# ----------------------------------------------------------------------------------------------

#: PoseBH's ``KptProtoHead`` (embedding module + prototype tensor) in the official detector.
OFFICIAL_PROTO_PREFIX = "proto_head."
OFFICIAL_PROTOTYPES_KEY = OFFICIAL_PROTO_PREFIX + "kpt_prototype.prototypes"
#: (official prefix, our prefix), most specific first. Below a prefix names are identical.
STATIC_PREFIXES: tuple[tuple[str, str], ...] = (
    (OFFICIAL_PROTOTYPES_KEY, "prototypes.prototypes"),
    (OFFICIAL_PROTO_PREFIX, "embedding."),
    ("backbone.", "backbone."),
)
#: Official head of head index 0 (the first dataset) and of index i >= 1 (``associate_keypoint_heads.{i-1}``).
MAIN_HEAD_PREFIX = "keypoint_head."
ASSOCIATE_HEAD_PREFIX = "associate_keypoint_heads.{}."
#: Official source keys that carry no inference state and are dropped on purpose (CPS centroids).
IGNORED_OFFICIAL_PREFIXES: tuple[str, ...] = (OFFICIAL_PROTO_PREFIX + "cluster_prototype.",)
#: Our target prefixes a plain ViTPose++ checkpoint (no ``proto_head``) does not have: they keep
#: their initialisation (the baseline has no embedding module; stage 1 trains it).
PROTO_TARGET_PREFIXES: tuple[str, ...] = ("embedding.", "prototypes.")
#: BatchNorm step counters: unused at inference, absent from some exports; never required.
BN_COUNTER = "num_batches_tracked"

#: Wrappers a checkpoint's state dict may sit under (mmcv: ``state_dict``; MAE/DeiT: ``model``).
STATE_KEYS: tuple[str, ...] = ("state_dict", "model")
DDP_PREFIX = "module."

#: Top-down pose crops are 4:3 (H:W); used to read a token grid off a position embedding whose size
#: is not a named size's default.
POSE_ASPECT = (4, 3)

#: Our own formats.
FORMAT = "posebh"
FORMAT_VERSION = 1


def official_head_prefix(index: int) -> str:
    """Official prefix of the head of dataset ``index`` (its position in the datasets list)."""
    return MAIN_HEAD_PREFIX if index == 0 else ASSOCIATE_HEAD_PREFIX.format(index - 1)


def _prefix_pairs(datasets: Sequence[str]) -> list[tuple[str, str]]:
    heads = [(official_head_prefix(i), f"heads.{name}.") for i, name in enumerate(datasets)]
    return [*STATIC_PREFIXES, *heads]


def official_to_ours(key: str, datasets: Sequence[str]) -> str | None:
    """Our state-dict key for an official key, or None when it has no counterpart."""
    for official, ours in _prefix_pairs(datasets):
        if key == official or (official.endswith(".") and key.startswith(official)):
            return ours + key[len(official):]
    return None


def ours_to_official(key: str, datasets: Sequence[str]) -> str:
    for official, ours in _prefix_pairs(datasets):
        if key == ours or (ours.endswith(".") and key.startswith(ours)):
            return official + key[len(ours):]
    raise KeyError(f"{key!r} has no official counterpart")


# ----------------------------------------------------------------------------------------------
# Errors and the load report
# ----------------------------------------------------------------------------------------------


def _listing(keys: Sequence[str], limit: int = 8) -> str:
    keys = list(keys)
    more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


@dataclass(frozen=True)
class LoadReport:
    """Where every key went. Keys of ``loaded``/``missing``/``reshaped``/``initialised`` are target
    (our) names; ``unmapped``/``ignored`` are source names; ``mismatched`` entries read
    ``"target key (from source key): source shape vs target shape"``."""

    loaded: tuple[str, ...] = ()
    #: source keys with no target
    unmapped: tuple[str, ...] = ()
    #: target keys with no source
    missing: tuple[str, ...] = ()
    #: target keys filled from a transformed source tensor (pos-embed resize, fc2 rows to experts,
    #: padded patch kernel)
    reshaped: tuple[str, ...] = ()
    #: source keys dropped on purpose (no inference state: CPS centroids, MAE decoder, cls token)
    ignored: tuple[str, ...] = ()
    #: target keys the source format does not carry by design; they keep their initialisation
    initialised: tuple[str, ...] = ()
    #: same key on both sides, different shapes (skipped; fatal unless lenient)
    mismatched: tuple[str, ...] = ()
    source: str = ""

    @property
    def ok(self) -> bool:
        return not (self.unmapped or self.missing or self.mismatched)

    def problems(self) -> str:
        parts = []
        if self.mismatched:
            parts.append(f"{len(self.mismatched)} shape mismatch(es): {_listing(self.mismatched, 4)}")
        if self.unmapped:
            parts.append(f"{len(self.unmapped)} unexpected key(s) with no target: {_listing(self.unmapped)}")
        if self.missing:
            parts.append(f"{len(self.missing)} missing key(s): {_listing(self.missing)}")
        return "; ".join(parts)

    def summary(self) -> str:
        counts = ", ".join(f"{len(getattr(self, f))} {f}" for f in
                           ("loaded", "reshaped", "initialised", "ignored", "unmapped", "missing", "mismatched"))
        return f"{self.source}: {counts}"


# ----------------------------------------------------------------------------------------------
# Reading and writing files (reading: posebh.models.checkpoint_io.read_checkpoint, re-exported here)
# ----------------------------------------------------------------------------------------------


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` atomically: a crash never leaves a half-written checkpoint under the final name."""
    with atomic_file(path, "wb") as f:
        f.write(checkpoint_bytes(obj))
    return Path(path)


def unwrap_state(obj: Any, source: str | Path = "<state dict>") -> dict[str, Tensor]:
    """The flat tensor state dict of a checkpoint: under ``state_dict``/``model`` if wrapped, with a
    DDP ``module.`` prefix stripped. Non-tensor entries are refused by name."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(source, f"expected a dict of tensors, found {type(obj).__name__}")
    for key in STATE_KEYS:
        if isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(source, f"not a state dict: {len(bad)} entr(ies) are not named tensors: {_listing(bad)}")
    if obj and all(k.startswith(DDP_PREFIX) for k in obj):
        obj = {k[len(DDP_PREFIX):]: v for k, v in obj.items()}
    return dict(obj)


def _read_state(path_or_state: str | Path | Mapping[str, Any]) -> tuple[dict[str, Tensor], str]:
    if isinstance(path_or_state, Mapping):
        return unwrap_state(path_or_state), "<state dict>"
    source = str(path_or_state)
    return unwrap_state(read_checkpoint(path_or_state), source), source


# ----------------------------------------------------------------------------------------------
# Applying a mapped state to a module
# ----------------------------------------------------------------------------------------------


def _plan(
    module: nn.Module,
    mapped: Mapping[str, tuple[Tensor, str]],
    *,
    source: str,
    unmapped: Sequence[str] = (),
    ignored: Sequence[str] = (),
    reshaped: Sequence[str] = (),
    optional_prefixes: Sequence[str] = (),
    key_prefix: str = "",
) -> tuple[LoadReport, dict[str, Tensor]]:
    """Match ``mapped`` (target name -> (tensor, source name)) against ``module``'s state without
    touching it. A target key with no source is missing unless it is a BN counter or matches
    ``optional_prefixes`` (then it is ``initialised``). Report target names get ``key_prefix``."""
    target = module.state_dict()
    loaded, mismatched, extra = [], [], list(unmapped)
    new_state: dict[str, Tensor] = {}
    for key, (value, src_key) in mapped.items():
        if key not in target:
            extra.append(src_key)
        elif tuple(value.shape) != tuple(target[key].shape):
            mismatched.append(key)
        else:
            new_state[key] = value
            loaded.append(key)
    missing, initialised = [], []
    for key in target:
        if key in new_state or key in mapped:  # loaded, or mismatched (reported there)
            continue
        if key.endswith(BN_COUNTER) or any(key.startswith(p) for p in optional_prefixes):
            initialised.append(key)
        else:
            missing.append(key)
    p = key_prefix
    report = LoadReport(
        loaded=tuple(p + k for k in loaded),
        unmapped=tuple(extra),
        missing=tuple(p + k for k in missing),
        reshaped=tuple(p + k for k in reshaped if k in new_state),
        ignored=tuple(ignored),
        initialised=tuple(p + k for k in initialised),
        mismatched=tuple(f"{p}{k} (from {mapped[k][1]}): source {tuple(mapped[k][0].shape)} vs target "
                         f"{tuple(target[k].shape)}" for k in mismatched),
        source=source,
    )
    return report, new_state


def _commit(module: nn.Module, new_state: Mapping[str, Tensor]) -> None:
    target = module.state_dict()
    with torch.no_grad():
        for key, value in new_state.items():
            target[key].copy_(value.to(dtype=target[key].dtype))


def _check(report: LoadReport, what: str, lenient: bool) -> None:
    if not report.ok and not lenient:
        raise CheckpointError(report.source, f"{what}: {report.problems()} (lenient=True loads the rest and reports them)")


# ----------------------------------------------------------------------------------------------
# Official ViTPose++ / PoseBH import
# ----------------------------------------------------------------------------------------------

_BLOCK = re.compile(r"^backbone\.blocks\.(\d+)\.")
_EXPERT = re.compile(r"^backbone\.blocks\.0\.mlp\.experts\.(\d+)\.weight$")
_ASSOCIATE = re.compile(r"^associate_keypoint_heads\.(\d+)\.")


@dataclass(frozen=True)
class OfficialArch:
    """What the tensors of an official checkpoint say about its architecture."""

    size: str
    embed_dim: int
    depth: int
    part_features: int
    num_experts: int
    num_heads_found: int
    grid: tuple[int, int]
    has_proto: bool
    prototypes_shape: tuple[int, ...] | None = None

    @property
    def img_size(self) -> tuple[int, int]:
        return (self.grid[0] * PATCH_SIZE, self.grid[1] * PATCH_SIZE)


def _grid_from_tokens(n: int, default: tuple[int, int], source: str, key: str) -> tuple[int, int]:
    """Token grid (h, w) of a position embedding with ``n`` patch slots: the size's default grid if it
    fits, else a 4:3 grid, else a square one."""
    if default[0] * default[1] == n:
        return tuple(default)
    a, b = POSE_ASPECT
    w = math.isqrt(n * b // a) if n * b % a == 0 else 0
    if w and (w * a) % b == 0 and (w * a // b) * w == n:
        return (w * a // b, w)
    s = math.isqrt(n)
    if s * s == n:
        return (s, s)
    raise CheckpointError(source, f"{key} has {n} patch slots: not the default {default} grid, a 4:3 or a square grid; "
                                  "pass img_size=(H, W)")


def _size_for(embed_dim: int, depth: int, size: str | None, source: str) -> str:
    found = [name for name, s in SIZES.items() if (s.embed_dim, s.depth) == (embed_dim, depth)]
    if size is not None:
        s = spec(size)
        if (s.embed_dim, s.depth) != (embed_dim, depth):
            raise CheckpointError(source, f"size {size!r} has width {s.embed_dim} and depth {s.depth}; the checkpoint "
                                          f"has width {embed_dim} and depth {depth}" +
                                          (f" (size {found[0]!r})" if found else ""))
        return s.name
    if not found:
        known = ", ".join(f"{n} ({s.embed_dim}x{s.depth})" for n, s in SIZES.items())
        raise CheckpointError(source, f"backbone width {embed_dim} and depth {depth} match no known size: {known}")
    return found[0]


def infer_official_arch(state: Mapping[str, Tensor], *, size: str | None = None, source: str = "<state dict>") -> OfficialArch:
    """Read width, depth, expert width (part_features), expert count, head count, token grid and the
    prototype shape off the tensors of an official checkpoint."""
    proj = "backbone.patch_embed.proj.weight"
    if proj not in state:
        raise CheckpointError(source, f"not a ViTPose++/PoseBH checkpoint: no {proj!r} (first keys: {_listing(sorted(state), 5)})")
    embed_dim = int(state[proj].shape[0])
    blocks = {int(m[1]) for k in state if (m := _BLOCK.match(k))}
    depth = max(blocks) + 1 if blocks else 0
    experts = sorted(int(m[1]) for k in state if (m := _EXPERT.match(k)))
    if not experts:
        raise CheckpointError(source, "no 'backbone.blocks.0.mlp.experts.*': a plain (single-dataset or already split) "
                                      "ViTPose checkpoint, not a multi-dataset ViTPose++ one")
    part = int(state["backbone.blocks.0.mlp.experts.0.weight"].shape[0])
    fc2 = state.get("backbone.blocks.0.mlp.fc2.weight")
    if fc2 is not None and int(fc2.shape[0]) + part != embed_dim:
        raise CheckpointError(source, f"backbone.blocks.0.mlp.fc2.weight has {fc2.shape[0]} rows and each expert {part}: "
                                      f"{fc2.shape[0]} + {part} != width {embed_dim}")
    size = _size_for(embed_dim, depth, size, source)
    pos = state.get("backbone.pos_embed")
    if pos is None:
        raise CheckpointError(source, "no 'backbone.pos_embed'")
    grid = _grid_from_tokens(int(pos.shape[1]) - 1, grid_size(spec(size).img_size), source, "backbone.pos_embed")
    heads = (MAIN_HEAD_PREFIX + "final_layer.weight" in state) + len({int(m[1]) for k in state if (m := _ASSOCIATE.match(k))})
    proto = state.get(OFFICIAL_PROTOTYPES_KEY)
    return OfficialArch(
        size=size, embed_dim=embed_dim, depth=depth, part_features=part, num_experts=len(experts),
        num_heads_found=heads, grid=grid, has_proto=any(k.startswith(OFFICIAL_PROTO_PREFIX) for k in state),
        prototypes_shape=None if proto is None else tuple(proto.shape),
    )


def load_official_vitpose_plus(
    path_or_state: str | Path | Mapping[str, Any],
    *,
    size: str | None = None,
    datasets: Sequence[str] = PAPER_MDT_DATASETS,
    img_size: tuple[int, int] | None = None,
    lenient: bool = False,
) -> tuple[PoseBH, LoadReport]:
    """A :class:`PoseBH` from an official ViTPose++ (S/B/L/H) or PoseBH checkpoint.

    The architecture is read off the tensors (the released S checkpoint's experts are 96 wide, not
    the config's 192); ``datasets`` names the experts/heads in index order (the paper's six by
    default). ``img_size`` (H, W) other than the checkpoint's grid resizes ``pos_embed`` (bicubic).
    A ViTPose++ checkpoint has no ``proto_head``: the embedding module and prototypes then keep their
    initialisation (``report.initialised``). The model is returned in eval mode.
    """
    state, source = _read_state(path_or_state)
    return _load_official(state, source, size=size, datasets=datasets, img_size=img_size, lenient=lenient,
                          owned=not isinstance(path_or_state, Mapping))


def _load_official(
    state: Mapping[str, Tensor],
    source: str,
    *,
    size: str | None = None,
    datasets: Sequence[str] = PAPER_MDT_DATASETS,
    img_size: tuple[int, int] | None = None,
    lenient: bool = False,
    owned: bool = False,
) -> tuple[PoseBH, LoadReport]:
    """``owned``: ``state`` was read for this call, so its tensors may become the model's."""
    datasets = tuple(skeletons.get(d).name for d in datasets)
    arch = infer_official_arch(state, size=size, source=source)
    if arch.num_experts != len(datasets):
        raise CheckpointError(source, f"{arch.num_experts} experts per block but {len(datasets)} datasets given "
                                      f"({', '.join(datasets)}); pass datasets= in the checkpoint's expert order")
    if arch.num_heads_found not in (0, len(datasets)) and not lenient:
        raise CheckpointError(source, f"{arch.num_heads_found} keypoint heads for {len(datasets)} datasets ({', '.join(datasets)})")
    cfg: dict[str, Any] = dict(size=arch.size, datasets=datasets, part_features=arch.part_features,
                               img_size=tuple(img_size) if img_size is not None else arch.img_size)
    if arch.prototypes_shape is not None:
        if len(arch.prototypes_shape) != 3:
            raise CheckpointError(source, f"{OFFICIAL_PROTOTYPES_KEY} has shape {arch.prototypes_shape}; expected (J, M, F)")
        cfg.update(prototypes_per_keypoint=arch.prototypes_shape[1], embed_dim=arch.prototypes_shape[2])
    config = ModelConfig(**cfg)
    with torch.device("meta"):  # shapes only; materialised below
        model = build_model(config)

    mapped, unmapped, ignored, reshaped = {}, [], [], []
    for key, value in state.items():
        if any(key.startswith(p) for p in IGNORED_OFFICIAL_PREFIXES):
            ignored.append(key)
            continue
        ours = official_to_ours(key, datasets)
        if ours is None:
            unmapped.append(key)
            continue
        mapped[ours] = (value, key)
    pos_key = "backbone.pos_embed"
    target_grid = model.backbone.grid_size
    if pos_key in mapped and tuple(arch.grid) != tuple(target_grid):
        mapped[pos_key] = (resize_pos_embed(mapped[pos_key][0].float(), arch.grid, target_grid), mapped[pos_key][1])
        reshaped.append(pos_key)
    report, new_state = _plan(model, mapped, source=source, unmapped=unmapped, ignored=ignored, reshaped=reshaped,
                              optional_prefixes=() if arch.has_proto else PROTO_TARGET_PREFIXES)
    _check(report, "does not fit the model", lenient)
    # prototypes are kept as stored; every use L2-normalises them
    if report.ok and all(k.endswith(BN_COUNTER) for k in report.initialised):
        # every weight comes from the checkpoint: assign it, skip the random initialisation
        target = model.state_dict()
        full = {k: v.to(dtype=target[k].dtype, copy=not owned) for k, v in new_state.items()}
        full |= {k: torch.zeros((), dtype=target[k].dtype) for k in report.initialised}
        model.load_state_dict(full, strict=True, assign=True)
    else:
        model = build_model(config)
        _commit(model, new_state)
    return model.eval(), report


def export_official(model: PoseBH, *, prototypes: bool = True) -> dict[str, Tensor]:
    """``model``'s state in the official key layout (the inverse of :func:`load_official_vitpose_plus`);
    ``prototypes=False`` leaves out ``proto_head.*`` (a plain ViTPose++ checkpoint)."""
    out = {}
    for key, value in model.state_dict().items():
        if not prototypes and any(key.startswith(p) for p in PROTO_TARGET_PREFIXES):
            continue
        out[ours_to_official(key, model.datasets)] = value.detach().clone()
    return out


# ----------------------------------------------------------------------------------------------
# MAE-pretrained ViT import
# ----------------------------------------------------------------------------------------------

#: MAE/timm encoder name -> ours, below the backbone; everything else under ``blocks.{i}.`` keeps its name.
MAE_RENAMES: dict[str, str] = {"norm.weight": "last_norm.weight", "norm.bias": "last_norm.bias"}
#: MAE keys with no place in a ViTPose backbone: no cls token (its slot lives on in ``pos_embed``),
#: the pretraining decoder, and classifier parts of fine-tuned checkpoints.
MAE_IGNORED_PREFIXES: tuple[str, ...] = ("cls_token", "mask_token", "decoder_", "head.", "fc_norm.")
_MAE_FC2 = re.compile(r"^blocks\.(\d+)\.mlp\.fc2\.(weight|bias)$")


def _backbone_of(model: nn.Module) -> tuple[nn.Module, str]:
    if isinstance(model, PoseBH):
        return model.backbone, "backbone."
    if isinstance(model, (ViT, ViTMoE)):
        return model, ""
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, (ViT, ViTMoE)):
        return backbone, "backbone."
    raise TypeError(f"expected a PoseBH, ViT or ViTMoE (or a module with one as .backbone), got {type(model).__name__}")


def load_mae_vit(path: str | Path | Mapping[str, Any], model: nn.Module, *, lenient: bool = False) -> LoadReport:
    """Load MAE-pretrained ViT weights (timm/MAE names) into ``model``'s backbone, in place.

    * ``pos_embed`` (1, 1+N, D) keeps its cls slot (added to every token here) and its N patch slots
      (a square grid) are resized bicubically to the backbone's grid when they differ;
    * a 14x14 patch kernel (ViT-H/14) is zero-padded to 16x16, as ViTPose does;
    * each MoE block's shared fc2 takes the first D-P rows of MAE's fc2 and **every expert the last P
      rows**, so that each split per-dataset ViT starts exactly as the MAE ViT (a plain ViT takes fc2
      whole);
    * ``norm`` becomes ``last_norm``; ``cls_token``, ``mask_token``, the decoder and classifier keys
      are ignored.

    Report keys carry the backbone's prefix (``backbone.`` on a PoseBH).
    """
    state, source = _read_state(path)
    backbone, prefix = _backbone_of(model)
    is_moe = isinstance(backbone, ViTMoE)
    target = backbone.state_dict()
    proj = "patch_embed.proj.weight"
    mapped, ignored, reshaped = {}, [], []
    for key, value in state.items():
        if any(key.startswith(p) for p in MAE_IGNORED_PREFIXES):
            ignored.append(key)
        elif key == "pos_embed":
            n = int(value.shape[1]) - 1 if value.ndim == 3 else -1
            side = math.isqrt(max(n, 0))
            if side * side != n or n <= 0:
                raise CheckpointError(source, f"pos_embed has shape {tuple(value.shape)}; expected (1, 1 + s*s, D)")
            if (side, side) != tuple(backbone.grid_size):
                value = resize_pos_embed(value.float(), (side, side), backbone.grid_size)
                reshaped.append(key)
            mapped[key] = (value, key)
        elif key == proj and value.ndim == 4 and proj in target and value.shape[2] < target[proj].shape[2]:
            pad = target[proj].shape[2] - value.shape[2]
            mapped[key] = (F.pad(value, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2)), key)
            reshaped.append(key)
        elif (m := _MAE_FC2.match(key)) and is_moe:
            shared = int(value.shape[0]) - backbone.part_features
            fc2 = f"blocks.{m[1]}.mlp.fc2.{m[2]}"
            mapped[fc2] = (value[:shared], key)
            reshaped.append(fc2)
            for e in range(backbone.num_experts):
                expert = f"blocks.{m[1]}.mlp.experts.{e}.{m[2]}"
                mapped[expert] = (value[shared:], key)
                reshaped.append(expert)
        else:
            mapped[MAE_RENAMES.get(key, key)] = (value, key)
    report, new_state = _plan(backbone, mapped, source=source, ignored=ignored, reshaped=reshaped, key_prefix=prefix)
    _check(report, "MAE weights do not fit the backbone", lenient)
    _commit(backbone, new_state)
    return report


# ----------------------------------------------------------------------------------------------
# Our own checkpoints
# ----------------------------------------------------------------------------------------------

_PLAIN = (str, int, float, bool, type(None))


def _check_plain(value: Any, where: str) -> None:
    """Only what ``weights_only=True`` reads back: plain scalars, strings, lists, tuples, dicts."""
    if isinstance(value, _PLAIN) or isinstance(value, Tensor):
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: key {k!r} is not a string")
            _check_plain(v, f"{where}.{k}")
        return
    raise TypeError(f"{where} is a {type(value).__name__}; a checkpoint stores only tensors and plain types")


def payload_kind(payload: Any) -> str:
    """``posebh``/``posebh-split``/``posebh-prototypes`` for our formats, ``official`` for a mmpose/MAE
    style state dict, ``unknown`` otherwise."""
    if isinstance(payload, Mapping):
        fmt = payload.get("format")
        if isinstance(fmt, str) and fmt.startswith(FORMAT):
            return fmt
        try:
            state = unwrap_state(payload)
        except CheckpointError:
            return "unknown"
        if "backbone.patch_embed.proj.weight" in state:
            return "official"
    return "unknown"


def make_payload(fmt: str, state: Mapping[str, Tensor], **meta: Any) -> dict[str, Any]:
    """A checkpoint dict of our formats: format tag and version, plain metadata, a CPU state dict."""
    _check_plain(meta, fmt)
    return {"format": fmt, "format_version": FORMAT_VERSION, **meta,
            "state_dict": {k: v.detach().cpu() for k, v in state.items()}}


def open_payload(path: str | Path, fmt: str, *, map_location: Any = "cpu") -> dict[str, Any]:
    """Read one of our checkpoint files and check its format tag and version."""
    return check_payload(read_checkpoint(path, map_location=map_location), fmt, path)


def check_payload(payload: Any, fmt: str, source: str | Path) -> dict[str, Any]:
    """``payload`` if it is a ``fmt`` checkpoint of this version; else an error saying which loader
    reads what it is."""
    kind = payload_kind(payload)
    if kind != fmt:
        hint = {
            "official": "an official ViTPose++/PoseBH checkpoint: use load_official_vitpose_plus",
            FORMAT: "a whole PoseBH model: use load_model",
            f"{FORMAT}-split": "a per-dataset split model: use posebh.models.export.load_split",
            f"{FORMAT}-prototypes": "the embedding module and prototypes of a split model: use "
                                    "posebh.models.export.load_prototype_query",
        }.get(kind, "not a posebh checkpoint")
        raise CheckpointError(source, f"expected a {fmt!r} checkpoint; this is {hint}")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(source, f"format version {version!r}; this code reads version {FORMAT_VERSION}")
    if not isinstance(payload.get("state_dict"), Mapping):
        raise CheckpointError(source, "no 'state_dict'")
    return payload


def load_strict(module: nn.Module, state: Mapping[str, Tensor], source: str | Path, *, assign: bool = False) -> None:
    """``load_state_dict(strict=True)`` with one error naming missing, unexpected and mis-shaped keys."""
    target = module.state_dict()
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(target[k].shape)}"
              for k in state if k in target and tuple(state[k].shape) != tuple(target[k].shape)]
    if missing or unexpected or shapes:
        parts = [f"{len(v)} {name}: {_listing(v, 4)}" for name, v in
                 (("shape mismatch(es)", shapes), ("missing key(s)", missing), ("unexpected key(s)", unexpected)) if v]
        raise CheckpointError(source, "the weights do not match the stored config: " + "; ".join(parts))
    module.load_state_dict(state, strict=True, assign=assign)


def build_loaded(build, state: Mapping[str, Tensor], source: str | Path):
    """``build()`` on the meta device, then the stored tensors assigned in: no time spent on a random
    initialisation that the weights overwrite (a minute for ViT-H on a CPU)."""
    with torch.device("meta"):
        module = build()
    load_strict(module, state, source, assign=True)
    left = [n for n, t in (*module.named_parameters(), *module.named_buffers()) if t.is_meta]
    if left:  # state the state dict does not hold (non-persistent buffers): rebuild for real
        module = build()
        load_strict(module, state, source)
    return module


def save_model(path: str | Path, model: PoseBH) -> Path:
    """Write a whole PoseBH model atomically: its ``ModelConfig.to_dict()`` and its state dict."""
    return atomic_save(make_payload(FORMAT, model.state_dict(), config=model.config.to_dict()), path)


def load_model(path: str | Path, *, map_location: Any = "cpu") -> PoseBH:
    """A PoseBH written by :func:`save_model`, rebuilt from its config (eval mode)."""
    return model_from_payload(read_checkpoint(path, map_location=map_location), path)


def model_from_payload(payload: Any, source: str | Path) -> PoseBH:
    """The PoseBH of an already-read :func:`save_model` checkpoint (eval mode, on the payload's device)."""
    payload = check_payload(payload, FORMAT, source)
    try:
        config = ModelConfig.from_dict(dict(payload.get("config") or {}))
        spec(config.size)
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(source, f"bad model config: {e}") from None
    return build_loaded(lambda: build_model(config), payload["state_dict"], source).eval()


def load_posebh(path: str | Path, *, map_location: Any = "cpu", lenient: bool = False) -> tuple[PoseBH, str]:
    """A whole PoseBH from our format or an official ViTPose++/PoseBH checkpoint (paper datasets);
    returns the model (eval mode) and the kind read (``posebh`` or ``official``)."""
    payload = read_checkpoint(path, map_location=map_location)
    kind = payload_kind(payload)
    if kind == "official":
        model, _ = official_from_payload(payload, path, lenient=lenient)
        return model, kind
    return model_from_payload(payload, path), kind


def official_from_payload(payload: Any, source: str | Path, **kwargs: Any) -> tuple[PoseBH, LoadReport]:
    """:func:`load_official_vitpose_plus` on an already-read checkpoint (errors name ``source``)."""
    return _load_official(unwrap_state(payload, source), str(source), owned=True, **kwargs)
