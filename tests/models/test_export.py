"""Per-dataset split models, their files, and ONNX export with onnxruntime parity."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from conftest import perturbed_model

from posebh.cli import cli
from posebh.models.checkpoints import CheckpointError, save_model
from posebh.models.export import (
    ONNX_ATOL,
    PROTOTYPES_FILE,
    PerDatasetModel,
    check_onnx,
    export_onnx,
    load_prototype_query,
    load_split,
    load_split_dir,
    onnx_session,
    prototype_query,
    save_split,
    split_model,
)
from posebh.models.heads import HeatmapHead
from posebh.skeletons import PAPER_MDT_DATASETS


def perturbed(datasets=PAPER_MDT_DATASETS, seed=0):
    return perturbed_model(datasets, seed)


@pytest.fixture(scope="module")
def model():
    return perturbed()


@pytest.fixture(scope="module")
def images(model):
    return torch.randn(3, 3, *model.config.input_hw, generator=torch.Generator().manual_seed(7))


def test_split_equals_the_moe_model_for_every_dataset(model, images):
    parts = split_model(model)
    assert list(parts) == list(model.datasets)
    outs = {}
    with torch.no_grad():
        for name, per in parts.items():
            assert isinstance(per, PerDatasetModel) and not per.training and per.dataset == per.expert == name
            got, expected = per(images), model.predict(images, name)
            assert got.shape == expected.shape and per.heatmap_wh == model.config.heatmap_wh
            assert torch.allclose(got, expected, atol=1e-5), (name, (got - expected).abs().max())
            outs[name] = got
    assert not torch.allclose(outs["ap10k"], outs["apt36k"], atol=1e-3)  # same skeleton, different expert + head
    # independent copies: changing a split leaves the model alone
    with torch.no_grad():
        parts["coco"].head.final_layer.bias.add_(1.0)
        assert torch.allclose(model.predict(images, "coco"), outs["coco"], atol=1e-5)


def test_per_dataset_model_checks_its_parts(model):
    vit = split_model(model)["coco"].backbone
    with pytest.raises(TypeError, match="plain ViT"):
        PerDatasetModel(model.backbone, model.heads["coco"], "coco", model.config.input_wh)
    with pytest.raises(ValueError, match="ap10k has 17 keypoints; the head predicts 14"):
        PerDatasetModel(vit, HeatmapHead(vit.embed_dim, 14, 64), "ap10k", model.config.input_wh)
    with pytest.raises(ValueError, match="input_wh"):
        PerDatasetModel(vit, model.heads["coco"], "coco", (192, 256))


def test_save_and_load_split(model, images, tmp_path):
    paths = save_split(tmp_path, model)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"{d}.pt" for d in model.datasets] + [PROTOTYPES_FILE])
    loaded = load_split_dir(tmp_path)
    assert list(loaded) == sorted(model.datasets)
    query = load_prototype_query(paths["prototypes"])
    fresh = prototype_query(model).state_dict()
    assert all(torch.equal(v, fresh[k]) for k, v in query.state_dict().items())
    with torch.no_grad():
        for name, targets in (("coco", ("coco", "ap10k")), ("coco_wholebody", ("coco_wholebody",))):
            per = loaded[name]
            assert per.dataset == name and not per.training
            assert torch.allclose(per(images), model.predict(images, name), atol=1e-5)
            # prototype route on the split backbone: any skeleton of the space, through this expert
            for target in targets:
                got = query(per.features(images), target)
                assert torch.allclose(got, model.prototype_heatmap(images, target, expert=name), atol=1e-5)


def test_split_files_are_not_whole_models(model, tmp_path):
    paths = save_split(tmp_path / "split", model)
    with pytest.raises(CheckpointError, match="per-dataset split model"):
        from posebh.models.checkpoints import load_model

        load_model(paths["coco"])
    whole = save_model(tmp_path / "whole.pt", model)
    with pytest.raises(CheckpointError, match="whole PoseBH model: use load_model"):
        load_split(whole)
    with pytest.raises(CheckpointError, match="embedding module and prototypes"):
        load_split(paths["prototypes"])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``posebh export CKPT --out DIR --onnx`` on a one-dataset tiny model (one ONNX export)."""
    root = tmp_path_factory.mktemp("export")
    m = perturbed(datasets=("coco",), seed=3)
    ckpt = save_model(root / "model.pt", m)
    result = CliRunner().invoke(cli, ["export", str(ckpt), "--out", str(root / "out"), "--onnx"])
    assert result.exit_code == 0, result.output
    return m, root / "out", result.output


def test_export_command_writes_split_and_onnx(exported):
    m, out, output = exported
    assert sorted(p.name for p in out.iterdir()) == ["coco.onnx", "coco.pt", PROTOTYPES_FILE]
    assert "coco: " in output and "dynamo" in output and "max |onnx - torch|" in output


def test_onnx_parity_and_dynamic_batch(exported):
    m, out, _ = exported
    per = load_split(out / "coco.pt")
    session = onnx_session(out / "coco.onnx")
    inp = session.get_inputs()[0]
    assert inp.name == "images" and isinstance(inp.shape[0], str)  # symbolic batch
    g = torch.Generator().manual_seed(11)
    for batch in (1, 4):
        x = torch.randn(batch, 3, *m.config.input_hw, generator=g)
        diff = check_onnx(out / "coco.onnx", per, x)
        assert diff <= ONNX_ATOL, diff
    with torch.no_grad():
        assert per(x).abs().max() > 10 * ONNX_ATOL  # the parity is not vacuous


def test_export_onnx_reports_the_exporter(tmp_path):
    m = perturbed(datasets=("mpii",), seed=5)
    per = split_model(m)["mpii"]
    info = export_onnx(per, tmp_path / "mpii.onnx", dynamo=False)
    assert info["exporter"] == "torchscript" and info["path"].is_file()
    x = torch.randn(2, 3, *m.config.input_hw)
    assert check_onnx(info["path"], per, x) <= ONNX_ATOL


def test_export_command_errors(tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["export", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and "missing.pt: no such checkpoint file" in result.output
    assert "Traceback" not in result.output
