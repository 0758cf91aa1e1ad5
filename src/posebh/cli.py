"""The ``posebh`` command line (Kedro's own CLI runs the pipelines: ``kedro run --pipeline=mdt``)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="posebh", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="regenerate the embedded demo data")
    demo.add_argument("--out", default="data/01_raw/demo")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args(argv)
    if args.command == "demo":
        from posebh.data.demo import generate_demo

        summary = generate_demo(args.out, seed=args.seed, scale=args.scale)
        print(f"wrote {summary.get('files', '?')} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
