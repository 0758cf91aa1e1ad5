"""The ``posebh`` command line. Kedro also picks this group up, so ``kedro demo`` works too;
pipelines run through Kedro's own CLI (``kedro run --pipeline=mdt``)."""

from __future__ import annotations

import click


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


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
