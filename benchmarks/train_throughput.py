"""Training throughput per PoseBH stage, achieved FLOP/s against a measured fp32 matmul peak, and the
routed/masked MoE step-time ratio, in one run.

    python benchmarks/train_throughput.py [--sizes tiny s] [--batch 32] [--steps tiny=6 s=2]
                                          [--warmup 1] [--threads N] [--masked-sizes tiny]
                                          [--out benchmarks/results/train_throughput.json]

For each model size (at its default input: tiny 128x96, s 256x192) and each demo stage config
(conf/base/parameters_{baseline,stage1,stage2,stage3}.yml, batch set to ``--batch``, warm-up off):

- one fixed batch of real crops from the committed demo data (``data/01_raw/demo``), drawn
  uniformly over the six MDT datasets' training instances (seeded), collated once, so data
  loading is left out (``loader_throughput.py`` measures the loader);
- the timed step is the trainer's own (``posebh.engine.trainer``'s per-batch step: the
  ``PoseBHObjective`` forward with its targets, losses, Sinkhorn and momentum update, CSS, CPS;
  backward; grad norm and clip; non-finite check; AdamW with layer decay; ``after_step``), on a
  model in the stage's freeze state; the stages, and with ``--masked-sizes`` a baseline whose
  backbone runs every expert on every sample (``routing="masked"``, ViTPose++), are interleaved
  step by step so machine noise hits them alike;
- FLOPs of one training step (forward + backward, optimizer excluded: it has no matmuls) are
  counted with ``FlopCounterMode`` under the MATH SDPA backend, on the first (untimed) warm-up
  step of each variant; achieved FLOP/s = FLOPs / median
  step time, and efficiency = that over the fp32 ``torch.mm`` peak measured in this process
  before and after the steps (the higher of the two medians).

The machine's load (``os.getloadavg``) before and after and this process's CPU use during the
timed steps are recorded: on a shared machine the absolute numbers only hold for that load.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))

DEMO = ROOT / "data" / "01_raw" / "demo"
CONF = ROOT / "conf" / "base"
STAGES = ("baseline", "stage1", "stage2", "stage3")
MASKED = "baseline_masked"
DEFAULT_STEPS = {"tiny": 6, "s": 2}
PEAK_N = 2048
PEAK_SECONDS = 3.0


def _yaml(name: str) -> dict:
    import yaml

    return yaml.safe_load((CONF / f"parameters_{name}.yml").read_text())


def demo_batch(size: str, batch: int, seed: int):
    """``batch`` crops drawn uniformly over the demo training instances of the six MDT datasets."""
    import numpy as np
    import pandas as pd

    import posebh.data as pdata
    from posebh.data.demo.generate import reader_sources
    from posebh.data.topdown import TopDownDataset, collate
    from posebh.models.vit_moe import spec
    from posebh.skeletons import PAPER_MDT_DATASETS

    src = reader_sources(DEMO)
    tables, roots = [], {}
    for ds in PAPER_MDT_DATASETS:
        split = "all" if ds == "apt36k" else "train"
        fmt, kwargs = src[ds][split]
        df = pdata.read(fmt, split=split, **kwargs)
        tables.append(df[(df["iscrowd"] == 0) & (df["num_keypoints"] > 0)].assign(split="train"))
        roots[ds] = kwargs["image_root"]
    table = pd.concat(tables, ignore_index=True)
    h, w = spec(size).img_size
    ds = TopDownDataset(table, image_roots=roots, datasets=list(PAPER_MDT_DATASETS), input_size=(w, h), train=True)
    picks = np.random.default_rng(seed).choice(len(ds), size=batch, replace=False)
    samples = [ds[int(i)] for i in picks]
    return collate(samples), samples


class _Samples:
    """The fixed samples as a map-style dataset (the trainer's sampler needs one)."""

    def __init__(self, samples):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


def make_run(size: str, stage_name: str, samples, batch: int, seed: int, out_dir: Path, masked: bool = False, *,
             device="cpu", amp: str | None = None, objective: dict | None = None):
    """A trainer stage run on ``device`` positioned at the start of epoch 0 (the stage's freeze state
    applied). ``amp`` overrides the stage's (None keeps the config's); ``objective`` overrides
    objective settings; ``masked`` runs every expert on every sample (ViTPose++)."""
    import torch

    from posebh.data.topdown import collate
    from posebh.engine.objective import ObjectiveConfig, PoseBHObjective
    from posebh.engine.stages import StageSpec
    from posebh.engine.trainer import _StageRun
    from posebh.models.posebh import ModelConfig, PoseBH

    model_yml = _yaml("model")
    torch.manual_seed(seed)
    net = PoseBH(ModelConfig.from_dict(dict(model_yml["model"], size=size)))
    if masked:
        net.backbone.routing = "masked"
    obj_cfg = ObjectiveConfig.from_dict(dict(copy.deepcopy(model_yml["objective"]), **(objective or {})))
    obj = PoseBHObjective(obj_cfg, datasets=net.datasets, input_wh=net.config.input_wh, heatmap_wh=net.config.heatmap_wh)
    stage = dict(_yaml(stage_name)[stage_name]["stage"], batch_size=batch, warmup_iters=0, lr_steps=[])
    if amp is not None:
        stage["amp"] = amp
    spec = StageSpec.from_dict(stage)
    run = _StageRun(net, obj, _Samples(samples), spec, out_dir=out_dir, device=device, num_workers=0, progress=False,
                    dataset_sizes=None, collate_fn=collate, pin_memory=False)
    run.objective.start_stage(run.model, spec, 0)
    run.objective.start_epoch(run.model, spec, 0)
    run._sync_trainable()
    run.model.train()
    return run


def step_flops(run, batch) -> float:
    """FLOPs of one training step (forward + backward) under the MATH SDPA backend."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with sdpa_kernel([SDPBackend.MATH]), FlopCounterMode(display=False) as counter:
        run.step(batch, 0)
    return float(counter.get_total_flops())


def matmul_peak(n: int = PEAK_N, seconds: float = PEAK_SECONDS) -> dict:
    """fp32 ``torch.mm`` FLOP/s of n x n products, repeated for about ``seconds``."""
    import torch

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    out = torch.empty(n, n)
    torch.mm(a, b, out=out)  # warm-up
    rates = []
    c0 = time.process_time()
    started = time.perf_counter()
    while time.perf_counter() - started < seconds or len(rates) < 3:
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        rates.append(2.0 * n**3 / (time.perf_counter() - t0))
    cpu = (time.process_time() - c0) / (time.perf_counter() - started)
    return {"n": n, "calls": len(rates), "median_flops": statistics.median(rates), "max_flops": max(rates),
            "cpu_s_per_wall_s": cpu}


def run_size(size: str, batch: int, steps: int, warmup: int, seed: int, with_masked: bool, work: Path) -> dict:
    from posebh.models.vit_moe import spec

    if warmup < 1:
        raise ValueError("--warmup must be >= 1 (the first warm-up step is the FLOP-counted one)")
    coll, samples = demo_batch(size, batch, seed)
    variants = list(STAGES) + ([MASKED] if with_masked else [])
    runs = {v: make_run(size, "baseline" if v == MASKED else v, samples, batch, seed, work / size / v, masked=v == MASKED)
            for v in variants}
    flops = {}
    for i in range(warmup):  # the first warm-up step of each variant is the one whose FLOPs are counted
        for v in variants:
            if i == 0:
                flops[v] = step_flops(runs[v], coll)
            else:
                runs[v].step(coll, 0)
    times: dict[str, list[float]] = {v: [] for v in variants}
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(steps):
        for v in variants:
            c0, t0 = time.process_time(), time.perf_counter()
            runs[v].step(coll, 0)
            times[v].append(time.perf_counter() - t0)
            cpu[v].append(time.process_time() - c0)

    s = spec(size)
    out = {
        "img_size": list(s.img_size),
        "embed_dim": s.embed_dim,
        "depth": s.depth,
        "head_channels": s.head_channels,
        "batch": batch,
        "timed_steps": steps,
        "warmup_steps": warmup,
        "samples_per_dataset": [int((coll["dataset_idx"] == d).sum()) for d in range(6)],
        "stages": {},
    }
    for v in variants:
        med = statistics.median(times[v])
        out["stages"][v] = {
            "trainable": sorted(runs[v].stage.trainable),
            "losses": {k: bool(x) for k, x in runs[v].objective.switches.items()},
            "step_s": {"median": med, "min": min(times[v]), "all": times[v]},
            "images_per_s": batch / med,
            "images_per_s_best": batch / min(times[v]),
            "cpu_s_per_wall_s": sum(cpu[v]) / sum(times[v]),
            "gflop_per_step": flops[v] / 1e9,
            "gflop_per_image": flops[v] / batch / 1e9,
            "achieved_gflops": flops[v] / med / 1e9,
        }
    if with_masked:
        r, m = times["baseline"], times[MASKED]
        out["masked_over_routed_baseline_step"] = {
            "median_of_paired_ratios": statistics.median(b / a for a, b in zip(r, m)),
            "ratio_of_minima": min(m) / min(r),
            "flop_ratio": flops[MASKED] / flops["baseline"],
        }
    return out


def main(argv: list[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=["tiny", "s"])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", nargs="*", default=[], help="timed steps per stage as size=N (default tiny=6 s=2)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    p.add_argument("--masked-sizes", nargs="*", default=["tiny"],
                   help="sizes that also time a baseline step with masked (ViTPose++) experts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=HERE / "results" / "train_throughput.json")
    args = p.parse_args(argv)
    steps = dict(DEFAULT_STEPS, **{k: int(v) for k, v in (s.split("=") for s in args.steps)})
    if args.threads:
        torch.set_num_threads(args.threads)

    load_before = list(os.getloadavg())
    started = time.perf_counter()
    peak_before = matmul_peak()
    print(f"fp32 mm peak (before): {peak_before['median_flops'] / 1e9:.1f} GFLOP/s", flush=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="train_throughput_") as work:
        for size in args.sizes:
            results[size] = run_size(size, args.batch, steps.get(size, 2), args.warmup, args.seed,
                                     size in args.masked_sizes, Path(work))
            for v, r in results[size]["stages"].items():
                print(f"{size} {v}: {r['images_per_s']:.2f} images/s ({r['step_s']['median']:.2f} s/step), "
                      f"{r['gflop_per_image']:.1f} GFLOP/image, {r['achieved_gflops']:.1f} GFLOP/s", flush=True)
    peak_after = matmul_peak()
    load_after = list(os.getloadavg())
    peak = max(peak_before["median_flops"], peak_after["median_flops"])
    for r in results.values():
        for st in r["stages"].values():
            st["efficiency_vs_fp32_mm_peak"] = st["achieved_gflops"] * 1e9 / peak
        if "masked_over_routed_baseline_step" in r:
            print(f"masked/routed baseline step: {r['masked_over_routed_baseline_step']['median_of_paired_ratios']:.2f}x")
    cpus = os.cpu_count() or 1
    out = {
        "benchmark": "train_throughput",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": cpus,
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "device": "cpu",
            "load_average_before": load_before,
            "load_average_after": load_after,
            # other processes' load before we started; ours adds about torch_threads while running
            "loaded_by_others": load_before[0] > 0.5,
        },
        "config": {k: (str(v.relative_to(ROOT)) if isinstance(v, Path) and v.is_relative_to(ROOT) else
                       str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()} | {"steps": steps},
        "fp32_mm_peak": {"before": peak_before, "after": peak_after, "used_gflops": peak / 1e9},
        "note": "Per-stage throughput of the trainer's step on one fixed batch (no data loading); FLOPs counted "
                "with FlopCounterMode (MATH SDPA) over forward + backward of one step; efficiency = achieved "
                "FLOP/s over the fp32 torch.mm peak of this run. baseline_masked = the baseline step with every "
                "backbone expert run on every sample and masked (ViTPose++); heads stay routed (see "
                "moe_routing.py for heads masked too). cpu_s_per_wall_s < torch_threads means the cores "
                "were shared with other processes.",
        "results": results,
        "wall_s": time.perf_counter() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
