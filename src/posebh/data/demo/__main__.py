"""``python -m posebh.data.demo [--out DIR] [--seed N] [--scale S] [--datasets a,b]``."""

from __future__ import annotations

import argparse
import json
import sys

from posebh.data.demo.generate import DATASETS, DEFAULT_OUT, generate_demo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m posebh.data.demo", description="Generate the synthetic demo raw data in every release format.")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0, help="image counts multiplier (1 = the committed demo)")
    parser.add_argument("--datasets", default=None, help=f"comma-separated subset of {', '.join(DATASETS)}")
    parser.add_argument("--preview", default=None, metavar="JPG", help="also save a contact sheet of images with keypoints (e.g. docs/demo_preview.jpg)")
    args = parser.parse_args(argv)
    datasets = args.datasets.split(",") if args.datasets else None
    summary = generate_demo(args.out, seed=args.seed, scale=args.scale, datasets=datasets)
    rows = [(name, d["files"], d["bytes"]) for name, d in summary["datasets"].items()]
    for name, files, size in rows:
        print(f"{name:10s} {files:6d} files {size / 1e6:8.2f} MB")
    print(f"{'total':10s} {summary['total_files']:6d} files {summary['total_bytes'] / 1e6:8.2f} MB in {summary['seconds']} s")
    json.dump({k: summary[k] for k in ("seed", "scale", "total_files", "total_bytes")}, sys.stdout)
    print()
    if args.preview:
        from posebh.data.demo.preview import write_preview

        print(f"preview: {write_preview(args.preview, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
