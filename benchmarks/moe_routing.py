"""Route, don't mask: training-step time of the routed vs the masked (ViTPose++) MoE, in one run.

    python benchmarks/moe_routing.py [--sizes tiny s] [--batch 32] [--repeats 7] [--budget-s 900]
                                     [--out benchmarks/results/moe_routing.json]

For each model size (at its default input size) and a batch whose samples are drawn uniformly from
the six paper datasets (seeded), it times forward + backward of

- ``backbone``: the ViT-MoE alone, ``routing="routed"`` vs ``routing="masked"``;
- ``model``: the ViT-MoE plus the six per-dataset heatmap heads: each sample through its own head
  (routed) vs every head on every sample (masked, as ViTPose++ trains).

Variants are interleaved round by round (after ``--warmup`` untimed steps each), so machine noise
hits them alike. The headline ratio is the median over rounds of masked/routed within the round
(paired); the ratio of the fastest steps is reported too, next to the ratio of forward MACs per
sample counted with ``FlopCounterMode``. The optimizer step is left out (it is the same
for both). Targets: routing is never slower (backbone ratio >= 1) and pays off with the heads
(model ratio >= 1.3).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))

BACKBONE_RATIO_TARGET = 1.0
MODEL_RATIO_TARGET = 1.3
ROUTINGS = ("routed", "masked")
MIN_ROUNDS = 2


def build(size: str, seed: int):
    import torch

    from posebh.models.heads import MultiHead
    from posebh.models.vit_moe import build_backbone, spec
    from posebh.skeletons import PAPER_MDT_DATASETS, get

    torch.manual_seed(seed)
    s = spec(size)
    backbone = build_backbone(size, num_experts=len(PAPER_MDT_DATASETS))
    heads = MultiHead(s.embed_dim, {d: get(d).num_keypoints for d in PAPER_MDT_DATASETS},
                      deconv_channels=s.head_channels)
    return s, backbone.train(), heads.train(), list(PAPER_MDT_DATASETS)


def step(backbone, heads, names, x, idx, routing: str, with_heads: bool) -> None:
    import torch

    features = backbone(x, idx, routing=routing)
    loss = features.float().pow(2).mean()
    if with_heads:
        if routing == "routed":
            groups = {n: (idx == e).nonzero().squeeze(1) for e, n in enumerate(names)}
            out = heads(features, {n: g for n, g in groups.items() if g.numel()})
        else:
            out = heads(features, names)
        loss = loss + sum(o.float().pow(2).mean() for o in out.values())
    backbone.zero_grad(set_to_none=True)
    heads.zero_grad(set_to_none=True)
    loss.backward()
    if x.device.type == "cuda":
        torch.cuda.synchronize()


def macs_per_sample(backbone, heads, names, x, idx, routing: str, with_heads: bool) -> float:
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    was = backbone.training, heads.training
    backbone.eval(), heads.eval()
    try:
        with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]), FlopCounterMode(display=False) as counter:
            features = backbone(x, idx, routing=routing)
            if with_heads:
                if routing == "routed":
                    heads(features, {n: (idx == e).nonzero().squeeze(1) for e, n in enumerate(names)})
                else:
                    heads(features, names)
    finally:
        backbone.train(was[0]), heads.train(was[1])
    return counter.get_total_flops() / 2 / x.shape[0]


def run_size(size: str, batch: int, repeats: int, warmup: int, seed: int, device: str, budget_s: float) -> dict:
    import torch

    s, backbone, heads, names = build(size, seed)
    backbone.to(device), heads.to(device)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, *s.img_size, generator=g).to(device)
    idx = torch.randint(0, len(names), (batch,), generator=g).to(device)
    variants = [(part, r) for part in ("backbone", "model") for r in ROUTINGS]

    times: dict[str, list[float]] = {f"{p}/{r}": [] for p, r in variants}
    for _ in range(warmup):
        for part, r in variants:
            step(backbone, heads, names, x, idx, r, part == "model")
    started = time.perf_counter()
    for rnd in range(repeats):
        for part, r in variants:
            t0 = time.perf_counter()
            step(backbone, heads, names, x, idx, r, part == "model")
            times[f"{part}/{r}"].append(time.perf_counter() - t0)
        if rnd + 1 >= MIN_ROUNDS and time.perf_counter() - started > budget_s:
            break

    small = x[: min(batch, len(names))], idx[: min(batch, len(names))]
    result = {
        "img_size": list(s.img_size),
        "embed_dim": s.embed_dim,
        "depth": s.depth,
        "part_features": s.part_features,
        "head_channels": s.head_channels,
        "batch": batch,
        "rounds": len(times["backbone/routed"]),
        "samples_per_dataset": torch.bincount(idx.cpu(), minlength=len(names)).tolist(),
        "step_s": {k: {"median": statistics.median(v), "min": min(v), "all": v} for k, v in times.items()},
        "gmacs_per_sample_forward": {
            f"{p}/{r}": macs_per_sample(backbone, heads, names, *small, r, p == "model") / 1e9 for p, r in variants
        },
    }
    for part in ("backbone", "model"):
        routed, masked = times[f"{part}/routed"], times[f"{part}/masked"]
        result[f"{part}_time_ratio_masked_over_routed"] = statistics.median(m / r for m, r in zip(masked, routed))
        result[f"{part}_time_ratio_of_minima"] = min(masked) / min(routed)
        m = result["gmacs_per_sample_forward"]
        result[f"{part}_macs_ratio_masked_over_routed"] = m[f"{part}/masked"] / m[f"{part}/routed"]
    result["targets"] = {
        f"backbone_time_ratio >= {BACKBONE_RATIO_TARGET}":
            result["backbone_time_ratio_masked_over_routed"] >= BACKBONE_RATIO_TARGET,
        f"model_time_ratio >= {MODEL_RATIO_TARGET}":
            result["model_time_ratio_masked_over_routed"] >= MODEL_RATIO_TARGET,
    }
    return result


def main(argv: list[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=["tiny", "s"])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--budget-s", type=float, default=900.0,
                   help="per size: stop after the round that exceeds this (at least 2 rounds)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=HERE / "results" / "moe_routing.json")
    args = p.parse_args(argv)

    started = time.perf_counter()
    results = {}
    for size in args.sizes:
        results[size] = run_size(size, args.batch, args.repeats, args.warmup, args.seed, args.device, args.budget_s)
        r = results[size]
        print(f"{size}: backbone masked/routed {r['backbone_time_ratio_masked_over_routed']:.2f}x time "
              f"({r['backbone_macs_ratio_masked_over_routed']:.2f}x MACs); with heads "
              f"{r['model_time_ratio_masked_over_routed']:.2f}x time "
              f"({r['model_macs_ratio_masked_over_routed']:.2f}x MACs)", flush=True)

    out = {
        "benchmark": "moe_routing",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "device": args.device,
            "load_average_at_start": list(os.getloadavg()),
        },
        # paths as given (relative to the repository), never resolved to this machine's layout
        "config": {k: (os.path.relpath(v) if isinstance(v, Path) and v.is_absolute() else str(v) if isinstance(v, Path) else v)
                   for k, v in vars(args).items()},
        "note": "masked = ViTPose++ (every expert and every head on every sample, times a 0/1 mask); "
                "routed = each sample through its own expert and head only. Ratios > 1 favour routing.",
        "results": results,
        "wall_s": time.perf_counter() - started,
        "all_targets_pass": all(all(r["targets"].values()) for r in results.values()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
