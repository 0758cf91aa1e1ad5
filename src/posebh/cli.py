"""The ``posebh`` command line. Kedro also picks this group up, so ``kedro demo`` works too;
pipelines run through Kedro's own CLI (``kedro run --pipeline=mdt``)."""

from __future__ import annotations

from pathlib import Path

import click

from posebh.predict import DEFAULT_MIN_SCORE, PREDICT_SKELETONS


@click.group(name="posebh", help=__doc__)
def cli() -> None:
    pass


@cli.command()
@click.option("--out", default="data/01_raw/demo", show_default=True, help="folder to (re)write")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--scale", default=1.0, show_default=True, type=float, help="x images per dataset")
def demo(out: str, seed: int, scale: float) -> None:
    """Regenerate the embedded demo data in every raw release format."""
    from posebh.data.demo import generate_demo

    summary = generate_demo(out, seed=seed, scale=scale)
    click.echo(f"wrote {summary.get('files', '?')} files to {out}")


def _one_line(error: BaseException) -> str:
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    return " ".join(text.split()) or type(error).__name__


def _fail_cleanly(error: BaseException, *extra: type) -> None:
    """Re-raise the expected input/checkpoint errors as one-line click errors (exit 1, no traceback)."""
    from posebh.data.errors import DataFileError
    from posebh.models.checkpoints import CheckpointError
    from posebh.predict import PredictError

    if isinstance(error, (PredictError, CheckpointError, DataFileError, FileNotFoundError, *extra)):
        raise click.ClickException(_one_line(error)) from None
    raise error


@cli.command()
@click.argument("image", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--checkpoint", "-c", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="whole PoseBH (.pt), a split per-dataset file, or an official ViTPose++/PoseBH .pth")
@click.option("--skeleton", "-s", required=True, help=f"whose keypoints: {'|'.join(PREDICT_SKELETONS)} (any image)")
@click.option("--boxes", "boxes", multiple=True, metavar="x,y,w,h",
              help="person/animal box (repeat, or separate with ';'); default: the whole image")
@click.option("--detections", type=click.Path(dir_okay=False, path_type=Path),
              help="COCO detection results; this image's boxes by --image-id or the id in its file name")
@click.option("--min-score", default=DEFAULT_MIN_SCORE, show_default=True, type=float,
              help="detection score threshold")
@click.option("--image-id", type=int, help="image id in --detections and in the JSON")
@click.option("--prototypes", is_flag=True, help="query the keypoints through the prototype heatmap, not the head")
@click.option("--expert", help="run another dataset's expert (whole models only)")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="drawn image [default: <image>.<skeleton>.png]; the JSON goes next to it")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="results JSON path")
@click.option("--device", default="cpu", show_default=True)
@click.option("--no-flip", is_flag=True, help="skip the flip test")
def predict(image: Path, checkpoint: Path, skeleton: str, boxes: tuple[str, ...], detections: Path | None,
            min_score: float, image_id: int | None, prototypes: bool, expert: str | None, out: Path | None,
            json_out: Path | None, device: str, no_flip: bool) -> None:
    """Draw SKELETON's keypoints on IMAGE with a trained checkpoint and write COCO-format results."""
    from posebh import predict as pr

    try:
        if not image.is_file():
            raise FileNotFoundError(f"{image}: no such image file")
        if not checkpoint.is_file():
            raise FileNotFoundError(f"{checkpoint}: no such checkpoint file")
        out_image, default_json = pr.default_outputs(image, skeleton, prototypes=prototypes, out=out)
        result = pr.predict(
            image, checkpoint=checkpoint, skeleton=skeleton, boxes=pr.parse_boxes(boxes) if boxes else None,
            detections=detections, min_score=min_score,
            image_id=image_id, prototypes=prototypes, expert=expert, out_image=out_image,
            out_json=json_out or default_json, device=device, flip_test=not no_flip,
        )
    except Exception as e:  # noqa: BLE001 - expected errors become one line, the rest propagate
        _fail_cleanly(e)
    mode = "prototype heatmap" if prototypes else f"{result['expert']} expert + head"
    click.echo(f"{result['instances']} instance(s) of {result['skeleton']} keypoints ({mode}); "
               f"wrote {result['out_image']} and {result['out_json']}")


@cli.command(name="export")
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="folder to write")
@click.option("--onnx", is_flag=True, help="also export every per-dataset model to ONNX and check it")
@click.option("--opset", default=None, type=int, help="ONNX opset [default: export.DEFAULT_OPSET]")
def export_(checkpoint: Path, out: Path, onnx: bool, opset: int | None) -> None:
    """Split a PoseBH/ViTPose++ checkpoint into one plain ViT + head per dataset (+ prototypes.pt)."""
    try:
        from posebh.models.export import DEFAULT_OPSET, export_checkpoint

        result = export_checkpoint(checkpoint, out, onnx=onnx, opset=opset or DEFAULT_OPSET)
    except Exception as e:  # noqa: BLE001
        _fail_cleanly(e, RuntimeError)
    for name, path in result["files"].items():
        line = f"{name}: {path}"
        if name in result["onnx"]:
            info = result["onnx"][name]
            line += f", {info['path']} ({info['exporter']}, max |onnx - torch| {info['max_abs_diff']:.2e})"
        click.echo(line)

def main() -> None:
    cli()


if __name__ == "__main__":
    main()
