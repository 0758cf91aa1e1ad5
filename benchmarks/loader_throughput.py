"""Top-down loader throughput: TopDownDataset in one process and behind 2 persistent workers.

    python benchmarks/loader_throughput.py [--images 96] [--instances-per-image 2] [--samples 384]
                                           [--batch 32] [--out benchmarks/results/loader_throughput.json]

Generates once (seeded) COCO-sized 640x480 JPEG scenes under ``benchmarks/scratch/loader_images``
for two datasets (``coco`` with the UDP affine, ``aic`` with the standard one) and a table of
training instances on them, then measures the training path (augmentation on, 256x192 crops):

- ``single``: ``dataset[i]`` in a loop in this process, with the time split into image decoding
  (``cv2.imread``) and the rest (augmentation draw, one warp, normalisation);
- ``workers2``: ``DataLoader(num_workers=2, persistent_workers=True, batch_size, collate)`` with
  ``MultiDatasetSampler``: the first epoch (includes starting the workers) and a second one;
- ``workers2_opencv1``: the same after ``cv2.setNumThreads(1)`` in the main process (each
  worker then warps on one thread instead of competing with the other for OpenCV's pool).

Target: the single process decodes + crops at least ``PER_WORKER_TARGET`` images/s (what one
worker must deliver). The 2-worker run reports images/s per worker and the ratio to single.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))

WORK = HERE / "scratch" / "loader_images"
IMAGE_WH = (640, 480)
DATASETS = ("coco", "aic")
INPUT = (192, 256)
JPEG_QUALITY = 90
PER_WORKER_TARGET = 100.0


def make_images(n: int, seed: int) -> dict[str, Path]:
    import cv2
    import numpy as np

    roots = {}
    for d, name in enumerate(DATASETS):
        root = WORK / name
        root.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng([seed, d])
        for i in range(n):
            path = root / f"{i:05d}.jpg"
            if path.exists():
                continue
            w, h = IMAGE_WH
            yy, xx = np.mgrid[0:h, 0:w]
            img = np.stack([(xx * rng.uniform(0.1, 0.4) + yy * rng.uniform(0.1, 0.4) + rng.uniform(0, 255)) % 256] * 3, -1)
            img = img.astype(np.uint8)
            for _ in range(30):
                colour = tuple(int(c) for c in rng.integers(0, 256, 3))
                centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
                cv2.circle(img, centre, int(rng.integers(5, 60)), colour, -1)
            img = cv2.add(img, rng.integers(0, 12, img.shape, dtype=np.uint8))
            cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        roots[name] = root
    return roots


def make_table(n_images: int, per_image: int, seed: int):
    import numpy as np

    from posebh import skeletons
    from posebh.data.schema import make_table as build

    rng = np.random.default_rng(seed)
    cols: dict[str, list] = {k: [] for k in ("dataset", "file_name", "image_id", "instance_id", "bbox", "keypoints")}
    for name in DATASETS:
        k = skeletons.get(name).num_keypoints
        for i in range(n_images):
            for j in range(per_image):
                w, h = rng.uniform(60, 300), rng.uniform(120, 400)
                x, y = rng.uniform(0, IMAGE_WH[0] - w), rng.uniform(0, IMAGE_WH[1] - h)
                kp = np.concatenate([rng.uniform([x, y], [x + w, y + h], (k, 2)), rng.integers(0, 3, (k, 1))], 1)
                cols["dataset"].append(name)
                cols["file_name"].append(f"{i:05d}.jpg")
                cols["image_id"].append(i)
                cols["instance_id"].append(i * per_image + j)
                cols["bbox"].append([x, y, w, h])
                cols["keypoints"].append(kp.reshape(-1))
    return build(
        {**cols, "split": "train", "width": IMAGE_WH[0], "height": IMAGE_WH[1], "area": 1.0, "iscrowd": 0,
         "num_keypoints": 1, "category_id": 1, "category": "person"}
    )


def run_workers(ds, batch: int, seed: int, epochs: int = 2) -> dict:
    """Throughput behind 2 persistent workers; the last epoch is the steady state."""
    from torch.utils.data import DataLoader

    from posebh.data.topdown import MultiDatasetSampler, collate

    sampler = MultiDatasetSampler(ds.sizes, batch, seed=seed)
    loader = DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=2, persistent_workers=True, collate_fn=collate)
    timings = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        ds.set_epoch(epoch)
        t0 = time.perf_counter()
        n = sum(len(b["dataset_idx"]) for b in loader)
        timings.append({"epoch": epoch, "samples": n, "seconds": time.perf_counter() - t0})
    del loader
    ips = timings[-1]["samples"] / timings[-1]["seconds"]
    return {"epochs": timings, "images_per_s": ips, "images_per_s_per_worker": ips / 2}


def main(argv: list[str] | None = None) -> int:
    import cv2
    import numpy as np
    import torch

    from posebh.data.topdown import TopDownDataset
    from posebh.data.transforms import TopDownAugment

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=96, help="images per dataset")
    ap.add_argument("--instances-per-image", type=int, default=2)
    ap.add_argument("--samples", type=int, default=384, help="samples timed in the single-process run")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "loader_throughput.json")
    args = ap.parse_args(argv)

    roots = make_images(args.images, args.seed)
    table = make_table(args.images, args.instances_per_image, args.seed)
    ds = TopDownDataset(table, image_roots=roots, datasets=list(DATASETS), input_size=INPUT, udp={"coco"},
                        augment=TopDownAugment(), train=True, seed=args.seed)
    order = np.random.default_rng(args.seed).permutation(len(ds))
    picks = [int(order[i % len(ds)]) for i in range(args.samples)]

    for i in picks[:8]:
        ds[i]
    t0 = time.perf_counter()
    for i in picks:
        ds[i]
    single_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in picks:
        ds.read_image(i)
    decode_s = time.perf_counter() - t0

    default_threads = cv2.getNumThreads()
    runs = {"workers2": run_workers(ds, args.batch, args.seed)}
    cv2.setNumThreads(1)  # in the main process, before the workers fork: the safe place
    runs["workers2_opencv1"] = run_workers(ds, args.batch, args.seed)
    cv2.setNumThreads(default_threads)

    single_ips = args.samples / single_s
    for run in runs.values():
        run["ratio_to_single"] = run["images_per_s"] / single_ips
    report = {
        "benchmark": "loader_throughput",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "load_avg": os.getloadavg(),
            "opencv": cv2.__version__,
            "opencv_threads": cv2.getNumThreads(),
            "torch": torch.__version__,
        },
        "sizes": {"image_wh": IMAGE_WH, "input_wh": INPUT, "instances": len(ds), "images_per_dataset": args.images,
                  "batch": args.batch, "single_samples": args.samples},
        "single": {
            "seconds": single_s,
            "images_per_s": single_ips,
            "decode_share": decode_s / single_s,
            "decode_ms_per_image": 1e3 * decode_s / args.samples,
            "crop_ms_per_image": 1e3 * (single_s - decode_s) / args.samples,
        },
        **runs,
        "target": {"single_images_per_s_min": PER_WORKER_TARGET},
        "target_met": single_ips >= PER_WORKER_TARGET,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"single process: {single_ips:.1f} images/s (decode {report['single']['decode_ms_per_image']:.2f} ms, "
          f"crop+augment+normalise {report['single']['crop_ms_per_image']:.2f} ms per image)")
    for name, run in runs.items():
        first = run["epochs"][0]
        print(f"{name}: {run['images_per_s']:.1f} images/s ({run['images_per_s_per_worker']:.1f} per worker), first epoch "
              f"{first['samples'] / first['seconds']:.1f} images/s; x{run['ratio_to_single']:.2f} single")
    print(f"wrote {args.out}")
    return 0 if report["target_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
