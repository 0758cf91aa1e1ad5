"""Per-dataset models (the split of a PoseBH model), their files, and ONNX export.

A :class:`PerDatasetModel` is what the official ``tools/model_split.py`` produces and what the
reported numbers are computed with: a plain ViT (shared fc2 rows + the dataset's expert rows) and
that dataset's heatmap head. :func:`save_split` writes one self-describing file per dataset, plus
``prototypes.pt`` holding the keypoint-embedding module and the prototypes, which is all the
``--prototypes`` query needs on top of a split backbone.

ONNX: with torch 2.13 the dynamo exporter (``torch.onnx.export(..., dynamo=True)``, onnxscript)
exports these models with a dynamic batch axis and onnxruntime matches PyTorch to ~1e-6; the
TorchScript exporter (``dynamo=False``) also works and is the fallback when the dynamo path raises.
"""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from posebh import skeletons
from posebh.models.checkpoints import (
    FORMAT,
    CheckpointError,
    atomic_save,
    build_loaded,
    check_payload,
    make_payload,
    open_payload,
    read_checkpoint,
)
from posebh.models.heads import HeatmapHead, KeypointEmbedding
from posebh.models.posebh import PoseBH
from posebh.models.prototypes import Prototypes
from posebh.models.sar import SARHead, head_cost
from posebh.models.split import split_state_dict
from posebh.models.vit_moe import ViT

SPLIT_FORMAT = f"{FORMAT}-split"
PROTOTYPES_FORMAT = f"{FORMAT}-prototypes"
SPLIT_SUFFIX = ".pt"
#: File name of the embedding module + prototypes next to the per-dataset files.
PROTOTYPES_FILE = "prototypes.pt"
ONNX_SUFFIX = ".onnx"
#: ONNX opset of the export (the dynamo exporter's default range; SDPA needs >= 14).
DEFAULT_OPSET = 18
#: protobuf's hard limit: bigger models keep their weights in an external ``.data`` file.
ONNX_PROTO_LIMIT = 2 * 1024**3
#: onnxruntime vs PyTorch tolerance of :func:`check_onnx` callers.
ONNX_ATOL = 1e-4
INPUT_NAME, OUTPUT_NAME = "images", "heatmaps"


# ----------------------------------------------------------------------------------------------
# Modules
# ----------------------------------------------------------------------------------------------


class PerDatasetModel(nn.Module):
    """A plain ViT and one dataset's heatmap head: ``forward(images) -> heatmaps``.

    ``expert`` names the dataset whose expert rows the backbone carries (the dataset itself for a
    split; another dataset for a cross-expert split).
    """

    def __init__(self, backbone: ViT, head: HeatmapHead, dataset: str, input_wh: tuple[int, int], *,
                 expert: str | None = None):
        super().__init__()
        if not isinstance(backbone, ViT):
            raise TypeError(f"backbone must be a plain ViT (split a ViTMoE first), got {type(backbone).__name__}")
        self.backbone = backbone
        self.head = head
        self.dataset = skeletons.get(dataset).name
        self.expert = skeletons.get(expert).name if expert else self.dataset
        self.input_wh = (int(input_wh[0]), int(input_wh[1]))
        if tuple(backbone.img_size) != (self.input_wh[1], self.input_wh[0]):
            raise ValueError(f"input_wh {self.input_wh} does not match the backbone's (H, W) {backbone.img_size}")
        k = skeletons.get(self.dataset).num_keypoints
        if head.num_keypoints != k:
            raise ValueError(f"{self.dataset} has {k} keypoints; the head predicts {head.num_keypoints}")

    @property
    def heatmap_wh(self) -> tuple[int, int]:
        """The head's output size: the token grid upsampled 2x per deconvolution."""
        up = 2 ** sum(isinstance(m, nn.ConvTranspose2d) for m in self.head.deconv_layers)
        gh, gw = self.backbone.grid_size
        return (gw * up, gh * up)

    @property
    def head_kind(self) -> str:
        """``sar`` for a spatial-aware regression head, else ``heatmap`` (``model.head``'s values)."""
        return "sar" if isinstance(self.head, SARHead) else "heatmap"

    def head_cost(self) -> dict[str, float]:
        """Parameters and FLOPs of the keypoint head alone on one crop's backbone features."""
        return head_cost(self.head, self.backbone.embed_dim, tuple(self.backbone.grid_size))

    def features(self, images: Tensor) -> Tensor:
        return self.backbone(images)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.backbone(images))


class PrototypeQuery(nn.Module):
    """The keypoint-embedding module and the prototypes over a global keypoint space: the prototype
    heatmap of any of its datasets' keypoints from backbone features (``PoseBH.prototype_heatmap``
    without the backbone)."""

    def __init__(self, embedding: KeypointEmbedding, prototypes: Prototypes, datasets: tuple[str, ...]):
        super().__init__()
        self.embedding = embedding
        self.prototypes = prototypes
        self.space = skeletons.mdt_space(datasets)
        if prototypes.num_keypoints != self.space.total:
            raise ValueError(f"{prototypes.num_keypoints} prototype rows for a {self.space.total}-keypoint space "
                             f"({', '.join(self.space.datasets)})")

    @property
    def datasets(self) -> tuple[str, ...]:
        return self.space.datasets

    def forward(self, features: Tensor, dataset: str) -> Tensor:
        emb = F.normalize(self.embedding(features).float(), dim=1)
        return self.prototypes.heatmap(emb, self.space.slice(skeletons.get(dataset).name))


def split_model(model: PoseBH) -> dict[str, PerDatasetModel]:
    """One independent :class:`PerDatasetModel` per dataset (copies; same train/eval mode).

    The plain ViT is :func:`~posebh.models.split.split_state_dict` assigned into a ViT built on the
    meta device (the same result as ``split_expert`` without initialising weights it overwrites).
    """
    moe_state = model.backbone.state_dict()
    out = {}
    for i, name in enumerate(model.datasets):
        state = {k: v.detach().clone() for k, v in split_state_dict(moe_state, i).items()}
        vit = build_loaded(lambda: ViT(**model.backbone.arch_kwargs()), state, f"{name} split")
        per = PerDatasetModel(vit, copy.deepcopy(model.heads[name]), name, model.config.input_wh)
        out[name] = per.train(model.training)
    return out


def prototype_query(model: PoseBH) -> PrototypeQuery:
    """The embedding module and prototypes of ``model`` (copies)."""
    q = PrototypeQuery(copy.deepcopy(model.embedding), copy.deepcopy(model.prototypes), model.datasets)
    return q.train(model.training)


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively (what the checkpoint metadata stores)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _deconv_arch(stack: nn.Sequential) -> tuple[int, int, int]:
    deconvs = [m for m in stack if isinstance(m, nn.ConvTranspose2d)]
    return deconvs[0].in_channels, deconvs[0].out_channels, len(deconvs)


def _head_arch(head: HeatmapHead | SARHead) -> dict[str, Any]:
    in_ch, ch, n = _deconv_arch(head.deconv_layers)
    arch: dict[str, Any] = dict(in_channels=in_ch, num_keypoints=head.num_keypoints, deconv_channels=ch, num_deconv=n)
    if isinstance(head, SARHead):  # heatmap payloads stay as they were; SAR ones say what they are
        arch.update(kind="sar", with_heatmap=head.with_heatmap)
    return arch


def _embedding_arch(emb: KeypointEmbedding) -> dict[str, int]:
    in_ch, ch, n = _deconv_arch(emb.deconv_layers)
    return dict(in_channels=in_ch, deconv_channels=ch, channels=emb.neck.conv1.out_channels,
                out_channels=emb.out_channels, num_deconv=n)


def save_per_dataset(path: str | Path, model: PerDatasetModel, **meta: Any) -> Path:
    """Write one per-dataset model (architecture + weights) atomically."""
    return atomic_save(make_payload(
        SPLIT_FORMAT, model.state_dict(), dataset=model.dataset, expert=model.expert,
        input_wh=list(model.input_wh), vit=_plain(model.backbone.arch_kwargs()), head=_head_arch(model.head),
        **_plain(meta),
    ), path)


def save_prototype_query(path: str | Path, query: PrototypeQuery, **meta: Any) -> Path:
    return atomic_save(make_payload(
        PROTOTYPES_FORMAT, query.state_dict(), datasets=list(query.datasets),
        embedding=_embedding_arch(query.embedding),
        prototypes=dict(num_keypoints=query.prototypes.num_keypoints,
                        num_per_keypoint=query.prototypes.num_per_keypoint, dim=query.prototypes.dim),
        **_plain(meta),
    ), path)


def save_split(directory: str | Path, model: PoseBH) -> dict[str, Path]:
    """``<dataset>.pt`` for every dataset of ``model`` and ``prototypes.pt``; returns the paths
    (key ``prototypes`` for the latter)."""
    directory = Path(directory)
    config = model.config.to_dict()
    paths = {name: save_per_dataset(directory / f"{name}{SPLIT_SUFFIX}", per, model_config=config)
             for name, per in split_model(model).items()}
    paths["prototypes"] = save_prototype_query(directory / PROTOTYPES_FILE, prototype_query(model), model_config=config)
    return paths


def _build(source: str | Path, what: str, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, turning a bad stored description into an error naming the file."""
    try:
        return fn(*args, **kwargs)
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(source, f"bad {what} description: {e}") from None


def load_split(path: str | Path, *, map_location: Any = "cpu") -> PerDatasetModel:
    """A :class:`PerDatasetModel` written by :func:`save_split` / :func:`save_per_dataset` (eval mode)."""
    return per_dataset_from_payload(read_checkpoint(path, map_location=map_location), path)


def per_dataset_from_payload(payload: Any, source: str | Path) -> PerDatasetModel:
    payload = check_payload(payload, SPLIT_FORMAT, source)
    vit_arch = {k: tuple(v) if isinstance(v, list) else v for k, v in dict(payload.get("vit") or {}).items()}
    head_arch = dict(payload.get("head") or {})
    head_cls = SARHead if head_arch.pop("kind", "heatmap") == "sar" else HeatmapHead

    def build() -> PerDatasetModel:
        return PerDatasetModel(ViT(**vit_arch), head_cls(**head_arch), payload.get("dataset"),
                               tuple(payload.get("input_wh") or ()), expert=payload.get("expert"))

    return _build(source, "per-dataset model", build_loaded, build, payload["state_dict"], source).eval()


def load_prototype_query(path: str | Path, *, map_location: Any = "cpu") -> PrototypeQuery:
    """The embedding module and prototypes written by :func:`save_split` (eval mode)."""
    payload = open_payload(path, PROTOTYPES_FORMAT, map_location=map_location)
    emb_arch, arch = dict(payload.get("embedding") or {}), dict(payload.get("prototypes") or {})

    def build() -> PrototypeQuery:
        protos = Prototypes(arch["num_keypoints"], arch["num_per_keypoint"], arch["dim"])
        return PrototypeQuery(KeypointEmbedding(**emb_arch), protos, tuple(payload.get("datasets") or ()))

    return _build(path, "prototype query", build_loaded, build, payload["state_dict"], path).eval()


# ----------------------------------------------------------------------------------------------
# ONNX
# ----------------------------------------------------------------------------------------------


def _param_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


def export_onnx(model: PerDatasetModel, path: str | Path, *, opset: int = DEFAULT_OPSET, batch: int = 2,
                dynamo: bool | None = None) -> dict[str, Any]:
    """Export ``images (B, 3, H, W) -> heatmaps (B, K, h, w)`` with a dynamic batch axis.

    ``dynamo=None`` tries the dynamo exporter first and falls back to the TorchScript one if it
    raises; returns ``{"path", "exporter", "opset"}`` (exporter ``"dynamo"`` or ``"torchscript"``).
    Weights go into the ``.onnx`` file unless they exceed protobuf's 2 GiB (then ``<path>.data``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    w, h = model.input_wh
    first = next(model.parameters())
    example = torch.zeros(batch, 3, h, w, device=first.device, dtype=first.dtype)
    external = _param_bytes(model) >= ONNX_PROTO_LIMIT
    errors = []
    try:
        for use_dynamo in ((True, False) if dynamo is None else (dynamo,)):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    _silence_onnx_logs()
                    if use_dynamo:
                        torch.onnx.export(
                            model, (example,), str(path), dynamo=True, opset_version=opset, verbose=False,
                            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], external_data=external,
                            dynamic_shapes={INPUT_NAME: {0: torch.export.Dim("batch", min=1)}},
                        )
                    else:
                        torch.onnx.export(
                            model, (example,), str(path), dynamo=False, opset_version=opset,
                            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                        )
                return {"path": path, "exporter": "dynamo" if use_dynamo else "torchscript", "opset": opset}
            except Exception as e:  # noqa: BLE001 - any exporter failure moves on to the fallback
                errors.append(f"{'dynamo' if use_dynamo else 'torchscript'}: {type(e).__name__}: {e}")
        raise RuntimeError(f"ONNX export of the {model.dataset} model failed: " + " | ".join(errors))
    finally:
        model.train(was_training)


def _silence_onnx_logs() -> None:
    for name in ("torch.onnx", "torch._dynamo", "torch.export", "onnxscript"):
        logging.getLogger(name).setLevel(logging.ERROR)


def onnx_session(path: str | Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def check_onnx(path: str | Path, model: nn.Module, images: Tensor) -> float:
    """Max |onnxruntime - PyTorch| over ``images`` (eval mode, CPU float32)."""
    session = onnx_session(path)
    name = session.get_inputs()[0].name
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            expected = model(images).float().cpu().numpy()
    finally:
        model.train(was_training)
    got = session.run(None, {name: images.detach().float().cpu().numpy()})[0]
    if got.shape != expected.shape:
        raise ValueError(f"{path}: ONNX output {got.shape} vs PyTorch {expected.shape}")
    return float(abs(got - expected).max())


def load_split_dir(directory: str | Path) -> dict[str, PerDatasetModel]:
    """Every per-dataset file of a :func:`save_split` folder."""
    directory = Path(directory)
    return {p.stem: load_split(p) for p in sorted(directory.glob(f"*{SPLIT_SUFFIX}")) if p.name != PROTOTYPES_FILE}



def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, *, onnx: bool = False, opset: int = DEFAULT_OPSET,
                      check_batch: int = 2, seed: int = 0) -> dict[str, Any]:
    """``posebh export``: split a whole PoseBH checkpoint (ours or official) into ``out_dir`` and, with
    ``onnx``, export every per-dataset model and check it against PyTorch on random images.

    Returns ``{"kind", "files": {name: path}, "onnx": {dataset: {"path", "exporter", "max_abs_diff"}}}``;
    raises when an ONNX model differs by more than :data:`ONNX_ATOL`.
    """
    from posebh.models.checkpoints import load_posebh

    model, kind = load_posebh(checkpoint)
    files = save_split(out_dir, model)
    result: dict[str, Any] = {"kind": kind, "files": files, "onnx": {}}
    if not onnx:
        return result
    gen = torch.Generator().manual_seed(seed)
    for name, per in split_model(model.eval()).items():
        info = export_onnx(per, Path(out_dir) / f"{name}{ONNX_SUFFIX}", opset=opset)
        w, h = per.input_wh
        diff = check_onnx(info["path"], per, torch.randn(check_batch, 3, h, w, generator=gen))
        if diff > ONNX_ATOL:
            raise RuntimeError(f"{info['path']}: onnxruntime differs from PyTorch by {diff:.3g} > {ONNX_ATOL}")
        result["onnx"][name] = {**info, "max_abs_diff": diff}
    return result

__all__ = [
    "DEFAULT_OPSET", "ONNX_ATOL", "PROTOTYPES_FILE", "PerDatasetModel", "PrototypeQuery", "check_onnx",
    "export_checkpoint", "export_onnx",
    "load_prototype_query", "load_split", "load_split_dir", "per_dataset_from_payload", "prototype_query", "save_per_dataset",
    "save_prototype_query", "save_split", "split_model",
]
