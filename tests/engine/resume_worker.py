"""Run the toy stage in a fresh process; optionally SIGKILL itself at a step or inside a checkpoint save.

Usage: python resume_worker.py OUT_DIR RESULT_FILE [--kill-at STEP] [--kill-in-save N]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ -> "engine" package
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

import torch  # noqa: E402

from engine.toys import ToyDataset, ToyObjective, make_model, stage_dict, weights  # noqa: E402
import posebh.atomic as atomic  # noqa: E402
from posebh.engine import checkpoint as ckpt  # noqa: E402
from posebh.engine.trainer import train_stage  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("result")
    ap.add_argument("--kill-at", type=int, default=None)
    ap.add_argument("--kill-in-save", type=int, default=None, help="die before the rename of the N-th save (1-based)")
    a = ap.parse_args()
    if a.kill_in_save is not None:
        real_replace, saves = os.replace, [0]

        def replace(src, dst):
            if Path(dst).name == ckpt.CHECKPOINT_NAME:
                saves[0] += 1
                if saves[0] == a.kill_in_save:
                    os.kill(os.getpid(), signal.SIGKILL)
            return real_replace(src, dst)

        atomic.os.replace = replace  # the one module that renames checkpoints into place
    model = make_model(dropout=0.1)
    res = train_stage(model, ToyObjective(kill_at=a.kill_at), ToyDataset(), stage_dict(), out_dir=a.out_dir, progress=False)
    torch.save({"weights": weights(model), "resumed_from": res.resumed_from, "steps": res.global_step}, a.result)


if __name__ == "__main__":
    main()
