"""One-shot GPU check of the training engine: AMP, SDPA kernels, DDP over NCCL, and throughput.

    PYTHONPATH=src python3 benchmarks/cuda_check.py --out $OUT/cuda_check.json     # on the GPU (< 8 min)
    python benchmarks/cuda_check.py --device cpu --quick --out /tmp/cuda_check.json  # CPU smoke run

Written to be run once on a rented CUDA machine where only torch, timm, numpy, pandas, pyarrow,
opencv and scipy are installed: it imports only ``posebh`` library modules that need none of
kedro, great_expectations, pycocotools or dvc (``posebh.models``, ``posebh.engine``,
``posebh.data`` readers and ``posebh.data.topdown``), and ``train_throughput.py``'s demo-batch
helpers. Every check runs in its own try/except; a failing check records its error (the last line
of the traceback, plus a short tail) and the others still run. The JSON result is rewritten after
every check, so a run cut short still leaves what it measured. The checks run in the order amp,
sdpa, throughput, ddp (the DDP subprocesses are the likeliest to hang, so they go last, each with
a time limit); no new work starts once ``--budget-s`` (450 s) is spent, and throughput stops
starting variants early enough to leave the DDP check its ~150 s.

Checks (the training step is always the trainer's own ``_StageRun.step`` on a fixed batch of real
demo crops, as in ``train_throughput.py``; the batch is moved to the device once, so data loading
and the host-to-device copy are left out):

1. ``amp``: a few steps with ``amp: off`` (fp32), ``bf16`` and ``fp16`` (dynamic GradScaler) per
   stage: losses finite, no skipped step, trainable weights change and frozen ones do not, the
   autocast dtype seen by the first attention's qkv projection, ``loss_scale`` per step for fp16,
   time per step.
2. ``sdpa``: the ViT attention (timm ``Attention`` with ``fused_attn``) calls
   ``F.scaled_dot_product_attention`` once per block; the aten kernel the default dispatch picks
   (forward and backward, bf16); forward + backward with only FLASH (and only EFFICIENT, CUDNN)
   allowed; the backbone output under FLASH vs the MATH backend in bf16 (and vs an fp32 MATH
   reference); one attention op, FLASH vs fp32.
3. ``ddp``: ``posebh.engine.distributed.spawn_local`` (the project's spawn + init path) in a
   subprocess with a time limit. World 1 over NCCL: the project's ``init_distributed`` makes no
   process group for a world of one and its ``wrap_ddp``/``any_true`` are no-ops there, so the
   worker joins a one-rank NCCL group itself and makes ``distributed.is_distributed`` answer True,
   which makes the trainer wrap the model in DDP and all-reduce its skip flag exactly as with
   several ranks. all_reduce / all_gather_object are checked, 2 steps per stage (stage1, stage3)
   are taken and the weights compared with a plain (non-DDP) run of the same steps in this
   process, deterministic kernels on both sides: equal within max(1e-6, 4x the difference
   between two plain runs, the device's own run-to-run noise; usually both are 0: bitwise).
   World 2 on one GPU: NCCL is expected to refuse two ranks on one device (probed with one
   all_reduce, the error recorded); the gloo backend on CUDA tensors runs the real two-rank path
   unpatched, both ranks on the same batch, so the weights must equal the plain run's and each
   other's. A world of 2 over NCCL needs two GPUs and is not checked here.
4. ``throughput``: training images/s of each stage config (baseline, stage1-3) for sizes s and b
   at 256x192, batch 64, bf16, 3 warm-up + 10 timed steps each (``torch.cuda.synchronize``
   around each), peak ``torch.cuda.max_memory_allocated`` per variant (variants run one after
   another), FLOPs of one step (``FlopCounterMode``, MATH SDPA) and achieved TFLOP/s against a
   bf16 ``torch.mm`` rate measured in the same run; and inference images/s of the b model's
   forward (own heads) in bf16 at batch 256.

``--quick`` shrinks everything to the tiny model, 1-2 steps and small batches (a smoke test of
the script itself; with ``--device cpu`` the CUDA-only parts are recorded as "skipped: no CUDA").
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (str(ROOT / "src"), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

STAGES = ("baseline", "stage1", "stage2", "stage3")
#: run in this order: the DDP check goes last because its subprocesses are the likeliest to hang
#: (each has a time limit); throughput leaves DDP_RESERVE_S of the budget to it
CHECKS = ("amp", "sdpa", "throughput", "ddp")
DDP_RESERVE_S = 150.0
AMP_MODES = ("off", "bf16", "fp16")
NO_CUDA = "skipped: no CUDA"
#: SDPA tolerances (bf16): one attention op vs fp32 math, elementwise |a - b| <= ATOL + RTOL |b|
SDPA_OP_ATOL, SDPA_OP_RTOL = 1e-2, 1.6e-2
#: backbone output, FLASH vs MATH (both bf16): mean |diff| / mean |MATH| at most this ...
SDPA_MODEL_REL_MEAN = 2e-2
#: ... or FLASH's mean error vs the fp32 reference at most this times MATH-bf16's
SDPA_MODEL_ERR_RATIO = 2.0
#: DDP vs plain weights: equal within max(this, DDP_NOISE_FACTOR x the two plain runs' own difference)
DDP_ATOL = 1e-6
DDP_NOISE_FACTOR = 4.0


# ------------------------------------------------------------------------------------------------
# small utilities
# ------------------------------------------------------------------------------------------------


def _error(e: BaseException) -> dict:
    """The traceback's last line (type: message) and its short tail."""
    lines = traceback.format_exception(type(e), e, e.__traceback__)
    text = "".join(lines).replace(str(ROOT), "<repo>").rstrip().splitlines()
    return {"error": text[-1] if text else repr(e), "traceback_tail": text[-12:]}


def attempt(fn, *args, **kwargs) -> dict:
    """``fn(*args, **kwargs)`` (a dict) with ``ok``/``error`` filled in; never raises."""
    t0 = time.perf_counter()
    try:
        out = fn(*args, **kwargs)
        out = dict(out) if isinstance(out, dict) else {"value": out}
        out.setdefault("ok", True)
    except Exception as e:  # noqa: BLE001 - every failure is recorded, none stops the run
        out = {"ok": False, **_error(e)}
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out


def _sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _free(device) -> None:
    import torch

    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def _median(xs):
    return statistics.median(xs) if xs else None


def _finite(x) -> bool:
    return x is not None and math.isfinite(x)


def _state_diff(a: dict, b: dict) -> dict:
    """Max |a - b| over the float tensors of two state dicts, and whether all tensors are bitwise equal."""
    import torch

    if set(a) != set(b):
        return {"same_keys": False, "only_a": sorted(set(a) - set(b))[:5], "only_b": sorted(set(b) - set(a))[:5]}
    max_abs, worst, differing, bitwise = 0.0, None, 0, True
    for k in a:
        x, y = a[k].detach().cpu(), b[k].detach().cpu()
        if x.shape != y.shape or x.dtype != y.dtype:
            return {"same_keys": True, "mismatch": k}
        if not torch.equal(x, y):
            bitwise = False
            differing += 1
            if x.is_floating_point():
                d = float((x.double() - y.double()).abs().max())
                if worst is None or d > max_abs:
                    max_abs, worst = d, k
    return {"same_keys": True, "bitwise_equal": bitwise, "tensors_differing": differing, "tensors": len(a),
            "max_abs_diff": max_abs, "worst_tensor": worst}


def _op_log(needles=("scaled_dot_product",)):
    """A TorchDispatchMode that counts the aten ops whose name contains one of ``needles``."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class OpLog(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.counts: dict[str, int] = {}

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = str(func)
            if any(n in name for n in needles):
                self.counts[name] = self.counts.get(name, 0) + 1
            return func(*args, **(kwargs or {}))

    return OpLog()


# ------------------------------------------------------------------------------------------------
# building a trainer stage run (train_throughput.make_run with a device, an amp override and
# objective overrides)
# ------------------------------------------------------------------------------------------------


def make_stage_run(size: str, stage_name: str, samples, batch: int, seed: int, out_dir: Path, *, device,
                   amp: str | None = None, objective: dict | None = None):
    """``train_throughput.make_run`` on ``device``: ``amp`` overrides the stage's (None keeps the
    config's, bf16 for every demo stage); ``objective`` overrides objective settings (the quick run
    lowers ``cps_iters``)."""
    from train_throughput import make_run

    return make_run(size, stage_name, samples, batch, seed, out_dir, device=device, amp=amp, objective=objective)


def take_step(run, batch, device) -> dict:
    """One trainer step, timed between two ``synchronize`` calls; global_step advances as in ``run()``."""
    _sync(device)
    t0 = time.perf_counter()
    res = run.step(batch, 0)
    _sync(device)
    dt_s = time.perf_counter() - t0
    run.global_step += 1
    row = {"loss": float(res["loss"].item()), "skipped": bool(res["skipped"]),
           "grad_norm": float(res["grad_norm"].item()), "step_s": dt_s}
    if run.scaler is not None:
        row["loss_scale"] = float(run.scaler.get_scale())
    return row


class BatchCache:
    """Demo batches (collated, and as samples) per (input size, batch), drawn once."""

    def __init__(self, seed: int):
        self.seed = seed
        self._cache: dict = {}

    def get(self, size: str, batch: int):
        from posebh.models.vit_moe import spec
        from train_throughput import demo_batch

        key = (tuple(spec(size).img_size), batch)
        if key not in self._cache:
            self._cache[key] = demo_batch(size, batch, self.seed)
        return self._cache[key]


def _to(batch, device):
    from posebh.engine.trainer import to_device

    return to_device(batch, device)


# ------------------------------------------------------------------------------------------------
# 1. AMP
# ------------------------------------------------------------------------------------------------


def _amp_one(ctx, size: str, stage: str, mode: str, coll, samples, batch: int) -> dict:
    import torch

    device = ctx.device
    run = make_stage_run(size, stage, samples, batch, ctx.seed, ctx.work / "amp" / stage / mode, device=device,
                         amp=mode, objective=ctx.objective_overrides)
    seen = {}

    def hook(_m, _i, out):
        seen.setdefault("qkv_dtype", str(out.dtype).replace("torch.", ""))

    handle = run.model.backbone.blocks[0].attn.qkv.register_forward_hook(hook)
    named = list(run.model.named_parameters())
    before = {n: p.detach().clone() for n, p in named}
    torch.manual_seed(ctx.seed + 1)
    rows = [take_step(run, coll, device) for _ in range(ctx.amp_steps)]
    handle.remove()
    trainable = {n for n, p in named if p.requires_grad}
    changed = {n for n, p in named if not torch.equal(before[n], p.detach())}
    max_change = max((float((p.detach() - before[n]).abs().max()) for n, p in named if n in trainable), default=0.0)
    expect_dtype = {"off": "float32", "bf16": "bfloat16", "fp16": "float16"}[mode] if device.type == "cuda" else "float32"
    out = {
        "amp_dtype": str(run.amp_dtype).replace("torch.", "") if run.amp_dtype is not None else None,
        "grad_scaler": run.scaler is not None,
        "qkv_dtype": seen.get("qkv_dtype"),
        "steps": rows,
        "losses_finite": all(math.isfinite(r["loss"]) for r in rows),
        "skipped_steps": sum(r["skipped"] for r in rows),
        "trainable_tensors": len(trainable),
        "trainable_tensors_changed": len(changed & trainable),
        "frozen_tensors_changed": sorted(changed - trainable)[:5],
        "max_abs_weight_change": max_change,
        "step_s_median_after_first": _median([r["step_s"] for r in rows[1:]]),
    }
    if run.scaler is not None:
        out["loss_scale"] = [r["loss_scale"] for r in rows]
        # GradScaler skips the optimizer step (and halves the scale) on inf/nan gradients
        from posebh.engine.trainer import FP16_INIT_SCALE

        out["scaler_backoffs"] = sum(1 for a, b in zip([FP16_INIT_SCALE] + out["loss_scale"], out["loss_scale"]) if b < a)
    problems = []
    if not out["losses_finite"]:
        problems.append("non-finite loss")
    if out["skipped_steps"]:
        problems.append(f"{out['skipped_steps']} step(s) skipped by the trainer")
    if not out["trainable_tensors_changed"]:
        problems.append("no trainable weight changed")
    if out["frozen_tensors_changed"]:
        problems.append(f"frozen weights changed: {out['frozen_tensors_changed']}")
    if out["qkv_dtype"] != expect_dtype:
        problems.append(f"qkv ran in {out['qkv_dtype']}, expected {expect_dtype}")
    if run.scaler is not None and not all(_finite(s) and s > 0 for s in out["loss_scale"]):
        problems.append("bad loss scale")
    if mode == "fp16" and device.type == "cuda" and run.scaler is None:
        problems.append("fp16 without GradScaler")
    out["ok"] = not problems
    if problems:
        out["problems"] = problems
    del run, before
    _free(device)
    return out


def check_amp(ctx) -> dict:
    out: dict = {"size": ctx.amp_size, "batch": ctx.amp_batch, "steps_per_mode": ctx.amp_steps, "stages": {}}
    coll, samples = ctx.batches.get(ctx.amp_size, ctx.amp_batch)
    coll = _to(coll, ctx.device)
    modes = AMP_MODES if ctx.device.type == "cuda" else ("off",)
    if ctx.device.type != "cuda":
        out["bf16"] = out["fp16"] = NO_CUDA + " (the trainer's AMP is CUDA-only; fp32 step run)"
    ok = True
    for stage in ctx.amp_stages:
        res = {m: attempt(_amp_one, ctx, ctx.amp_size, stage, m, coll, samples, ctx.amp_batch) for m in modes}
        ref = res.get("off", {}).get("steps")
        for m, r in res.items():
            if m != "off" and ref and r.get("steps"):
                a, b = r["steps"][0]["loss"], ref[0]["loss"]
                r["first_loss_rel_diff_vs_fp32"] = abs(a - b) / max(abs(b), 1e-12)
                if r.get("step_s_median_after_first") and res["off"].get("step_s_median_after_first"):
                    r["speedup_vs_fp32"] = res["off"]["step_s_median_after_first"] / r["step_s_median_after_first"]
        out["stages"][stage] = res
        ok = ok and all(r.get("ok") for r in res.values())
        ctx.progress(f"amp {stage}: " + ", ".join(
            f"{m} {'ok' if r.get('ok') else 'FAIL'} ({_fmt_s(r.get('step_s_median_after_first'))}/step"
            + (f", scale {r['loss_scale'][-1]:g}" if r.get("loss_scale") else "") + ")" for m, r in res.items()))
    out["ok"] = ok
    return out


def _fmt_s(x) -> str:
    return "?" if x is None else (f"{x * 1e3:.1f} ms" if x < 1 else f"{x:.2f} s")


# ------------------------------------------------------------------------------------------------
# 2. SDPA
# ------------------------------------------------------------------------------------------------


def _diff(a, b) -> dict:
    a, b = a.detach().float(), b.detach().float()
    d = (a - b).abs()
    return {"max_abs_diff": float(d.max()), "mean_abs_diff": float(d.mean()), "ref_max_abs": float(b.abs().max()),
            "ref_mean_abs": float(b.abs().mean()),
            "rel_max": float(d.max() / b.abs().max().clamp_min(1e-12)),
            "rel_mean": float(d.mean() / b.abs().mean().clamp_min(1e-12))}


def check_sdpa(ctx) -> dict:
    import inspect

    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from posebh.models.posebh import ModelConfig, PoseBH

    device, size = ctx.device, ctx.sdpa_size
    cuda = device.type == "cuda"
    torch.manual_seed(ctx.seed)
    net = PoseBH(ModelConfig(size=size)).to(device).eval()
    coll, _ = ctx.batches.get(size, ctx.sdpa_batch)
    images, idx = coll["image"].to(device), coll["dataset_idx"].to(device)
    blocks = net.backbone.blocks
    attn = blocks[0].attn
    src = inspect.getsource(type(attn).forward)
    out: dict = {
        "size": size, "batch": ctx.sdpa_batch, "depth": len(blocks),
        "num_heads": attn.num_heads, "head_dim": net.backbone.embed_dim // attn.num_heads,
        "attention_class": f"{type(attn).__module__}.{type(attn).__qualname__}",
        "fused_attn_all_blocks": all(bool(getattr(b.attn, "fused_attn", False)) for b in blocks),
        "forward_source_calls_sdpa": "scaled_dot_product_attention" in src,
    }
    # runtime: how many times F.scaled_dot_product_attention is called in one forward
    calls = {"n": 0}
    real = F.scaled_dot_product_attention

    def counting(*a, **k):
        calls["n"] += 1
        return real(*a, **k)

    F.scaled_dot_product_attention = counting
    try:
        with torch.no_grad():
            net.backbone(images, idx)
    finally:
        F.scaled_dot_product_attention = real
    out["sdpa_calls_per_forward"] = calls["n"]
    uses_sdpa = out["fused_attn_all_blocks"] and out["forward_source_calls_sdpa"] and calls["n"] == len(blocks)
    out["uses_sdpa"] = uses_sdpa

    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda)

    def fwd_bwd(backends=None) -> dict:
        """Forward + backward of the backbone in bf16 (CUDA) under ``backends``; the aten SDPA ops seen."""
        import contextlib

        net.zero_grad(set_to_none=True)
        log = _op_log()
        ctx_k = sdpa_kernel(backends) if backends else contextlib.nullcontext()
        with ctx_k, log:
            with amp:
                y = net.backbone(images, idx)
            y.float().square().mean().backward()
        _sync(device)
        grads = [p.grad for p in net.backbone.parameters() if p.grad is not None]
        return {"aten_ops": log.counts, "grads_finite": bool(all(torch.isfinite(g).all() for g in grads)),
                "params_with_grad": len(grads)}

    out["default_dispatch"] = attempt(fwd_bwd)
    if not cuda:
        out["flash"] = out["efficient"] = out["cudnn"] = out["flash_vs_math"] = out["op_level"] = NO_CUDA
        out["ok"] = uses_sdpa and out["default_dispatch"].get("ok", False)
        net.zero_grad(set_to_none=True)
        return out

    backends = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}
    feats = {}

    def forward_only(name):
        with torch.no_grad(), sdpa_kernel([backends[name]]), amp:
            feats[name] = net.backbone(images, idx).float()
        _sync(device)
        return {}

    for name in ("flash", "efficient", "cudnn", "math"):
        r = attempt(forward_only, name)
        r["forward_backward"] = attempt(fwd_bwd, [backends[name]])
        expect = {"flash": "_flash_attention", "efficient": "_efficient_attention", "cudnn": "_cudnn_attention",
                  "math": None}[name]
        if expect and r["forward_backward"].get("ok"):
            r["forced_kernel_seen"] = any(expect in k for k in r["forward_backward"]["aten_ops"])
        out[name] = r
    net.zero_grad(set_to_none=True)
    with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]):
        ref32 = net.backbone(images, idx).float()  # fp32, no autocast
    cmp = {}
    if "flash" in feats and "math" in feats:
        cmp["flash_vs_math_bf16"] = _diff(feats["flash"], feats["math"])
        cmp["flash_vs_fp32"] = _diff(feats["flash"], ref32)
        cmp["math_bf16_vs_fp32"] = _diff(feats["math"], ref32)
        if "efficient" in feats:
            cmp["efficient_vs_math_bf16"] = _diff(feats["efficient"], feats["math"])
        err_ratio = cmp["flash_vs_fp32"]["mean_abs_diff"] / max(cmp["math_bf16_vs_fp32"]["mean_abs_diff"], 1e-12)
        cmp["flash_err_over_math_err"] = err_ratio
        cmp["criterion"] = (f"rel_mean(flash vs math, bf16) <= {SDPA_MODEL_REL_MEAN} or mean error vs fp32 "
                            f"<= {SDPA_MODEL_ERR_RATIO} x MATH-bf16's")
        cmp["ok"] = cmp["flash_vs_math_bf16"]["rel_mean"] <= SDPA_MODEL_REL_MEAN or err_ratio <= SDPA_MODEL_ERR_RATIO
    else:
        cmp = {"ok": False, "error": "flash or math forward failed"}
    out["flash_vs_math"] = cmp
    out["op_level"] = attempt(_sdpa_op_level, device, out["num_heads"], out["head_dim"], images.shape[0],
                              int(feats["math"].shape[-1] * feats["math"].shape[-2]) if "math" in feats else 192)
    out["ok"] = bool(uses_sdpa and out["flash"].get("ok") and out["flash"]["forward_backward"].get("ok")
                     and out["flash"].get("forced_kernel_seen") and cmp.get("ok") and out["op_level"].get("ok"))
    feats.clear()  # the model goes with this frame; the next check's _free() returns its memory
    return out


def _sdpa_op_level(device, heads: int, head_dim: int, batch: int, tokens: int) -> dict:
    """One SDPA op on random bf16 q, k, v: FLASH and MATH (bf16) against MATH in fp32."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    g = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(batch, heads, tokens, head_dim, device=device, generator=g) for _ in range(3))
    with sdpa_kernel([SDPBackend.MATH]):
        ref = F.scaled_dot_product_attention(q, k, v)
        math_bf16 = F.scaled_dot_product_attention(q.bfloat16(), k.bfloat16(), v.bfloat16())
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        flash = F.scaled_dot_product_attention(q.bfloat16(), k.bfloat16(), v.bfloat16())
    bound = SDPA_OP_ATOL + SDPA_OP_RTOL * ref.abs()
    within = bool(((flash.float() - ref).abs() <= bound).all())
    return {"shape": [batch, heads, tokens, head_dim], "flash_vs_fp32": _diff(flash, ref),
            "math_bf16_vs_fp32": _diff(math_bf16, ref), "flash_vs_math_bf16": _diff(flash, math_bf16),
            "criterion": f"|flash - fp32| <= {SDPA_OP_ATOL} + {SDPA_OP_RTOL} |fp32| elementwise", "ok": within}


# ------------------------------------------------------------------------------------------------
# 3. DDP (world 1 over NCCL through spawn_local; world 2 on one GPU: NCCL probe, gloo run)
# ------------------------------------------------------------------------------------------------


def _deterministic(on: bool) -> None:
    """Deterministic kernels for the DDP comparison (cuBLAS keeps its default workspace, the same in
    every process, so no CUBLAS_WORKSPACE_CONFIG: torch only warns about it)."""
    import torch

    torch.backends.cudnn.deterministic = on
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(on, warn_only=True)


def _plain_steps(cfg: dict, stage: str, device) -> tuple[dict, dict]:
    """The reference: the same steps in this process without any process group."""
    import torch

    samples = torch.load(cfg["samples"], weights_only=False)
    coll = _to(_collate(samples), device)
    run = make_stage_run(cfg["size"], stage, samples, cfg["batch"], cfg["seed"], Path(cfg["work"]) / "plain" / stage,
                         device=device, objective=cfg.get("objective"))
    init = {k: v.detach().cpu().clone() for k, v in run.model.state_dict().items()}
    torch.manual_seed(cfg["seed"] + 1)
    rows = [take_step(run, coll, device) for _ in range(cfg["steps"])]
    state = {k: v.detach().cpu().clone() for k, v in run.model.state_dict().items()}
    moved = _state_diff(state, init)
    del run
    _free(device)
    return state, {"steps": rows, "weights_vs_init": {k: moved.get(k) for k in ("tensors_differing", "tensors", "max_abs_diff")}}


def _collate(samples):
    from posebh.data.topdown import collate

    return collate(samples)


def _ddp_worker(info, cfg: dict) -> None:
    """One rank (run by ``spawn_local``): join/patch the group, check collectives, take the steps."""
    import torch
    import torch.distributed as dist

    import posebh.engine.distributed as D

    out_dir = Path(cfg["out"])
    rec: dict = {"rank": info.rank, "world_size": info.world_size, "device": str(info.device),
                 "project_init_backend": info.backend, "project_created_group": dist.is_initialized()}
    try:
        if cfg.get("threads"):
            torch.set_num_threads(cfg["threads"])
        device = info.device
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            # spawn_local/init_distributed treat a world of one as a single process: join a real
            # one-rank group here so that NCCL (or gloo) and DDP are exercised
            dist.init_process_group(cfg["backend"], init_method="env://", rank=0, world_size=1)
        rec["backend"] = dist.get_backend()
        if cfg.get("force_distributed") and dist.get_world_size() == 1:
            D.is_distributed = lambda: dist.is_available() and dist.is_initialized()
            rec["patched_is_distributed"] = True
        t = torch.full((4,), float(info.rank + 1), device=device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        w = dist.get_world_size()
        rec["all_reduce_sum"] = float(t[0].item())
        rec["all_reduce_ok"] = bool((t == w * (w + 1) / 2).all().item())
        gathered = D.all_gather_objects({"rank": info.rank})
        rec["all_gather_objects"] = [g["rank"] for g in gathered]
        rec["any_true"] = [D.any_true(torch.tensor(info.rank == w - 1, device=device)),
                           D.any_true(torch.tensor(False, device=device))]
        if cfg.get("probe_only"):
            rec["ok"] = rec["all_reduce_ok"]
            return
        samples = torch.load(cfg["samples"], weights_only=False)
        coll = _to(_collate(samples), device)
        rec["stages"] = {}
        for stage in cfg["stages"]:
            _deterministic(True)
            run = make_stage_run(cfg["size"], stage, samples * w, cfg["batch"], cfg["seed"], out_dir / "runs" / stage,
                                 device=device, objective=cfg.get("objective"))
            wrapped = type(run.fwd).__name__
            torch.manual_seed(cfg["seed"] + 1)
            rows = [take_step(run, coll, device) for _ in range(cfg["steps"])]
            torch.save({k: v.detach().cpu() for k, v in run.model.state_dict().items()},
                       out_dir / f"{stage}_rank{info.rank}.pt")
            rec["stages"][stage] = {"wrapped_in": wrapped, "trainer_world": run.world, "steps": rows}
            del run
            _free(device)
        D.barrier()
        rec["ok"] = rec["all_reduce_ok"]
    except Exception as e:  # noqa: BLE001
        rec.update(ok=False, **_error(e))
        raise
    finally:
        (out_dir / f"rank{info.rank}.json").write_text(json.dumps(rec, indent=1, default=str))


def _child_ddp(cfg: dict) -> int:
    """Child-process entry: ``spawn_local(_ddp_worker, world, cfg, backend=...)``; errors to a file."""
    from posebh.engine.distributed import spawn_local

    out_dir = Path(cfg["out"])
    try:
        spawn_local(_ddp_worker, cfg["world"], cfg, backend=cfg["backend"])
        res = {"ok": True}
    except Exception as e:  # noqa: BLE001
        res = {"ok": False, **_error(e)}
    (out_dir / "spawn.json").write_text(json.dumps(res, indent=1))
    return 0


def _run_child(ctx, cfg: dict, timeout_s: float) -> dict:
    """Run ``_child_ddp(cfg)`` in a fresh process group; kill the group on timeout."""
    out_dir = Path(cfg["out"])
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = out_dir / "config.json"
    cfg_path.write_text(json.dumps(cfg))
    log_path = out_dir / "log.txt"
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        env = dict(os.environ)
        env.setdefault("NCCL_DEBUG", "WARN")  # NCCL's reason for a refusal lands in the log tail
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child-ddp", str(cfg_path)],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=str(ROOT), env=env)
        try:
            rc = proc.wait(timeout=max(timeout_s, 5))
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc, timed_out = proc.returncode, True
    res: dict = {"returncode": rc, "timed_out": timed_out, "timeout_s": round(timeout_s), "seconds": round(time.perf_counter() - t0, 1)}
    spawn = out_dir / "spawn.json"
    res["spawn"] = json.loads(spawn.read_text()) if spawn.is_file() else None
    res["ranks"] = [json.loads(p.read_text()) for p in sorted(out_dir.glob("rank*.json"))]
    if timed_out or rc != 0 or not (res["spawn"] or {}).get("ok"):
        res["log_tail"] = log_path.read_text(errors="replace").splitlines()[-15:]
    return res


def _ddp_cfg(ctx, name: str, world: int, backend: str, **extra) -> dict:
    return {"world": world, "backend": backend, "size": ctx.ddp_size, "stages": list(ctx.ddp_stages),
            "batch": ctx.ddp_batch, "steps": ctx.ddp_steps, "seed": ctx.seed, "samples": str(ctx.work / "ddp_samples.pt"),
            "work": str(ctx.work / "ddp"), "out": str(ctx.work / "ddp" / name), "objective": ctx.objective_overrides,
            "threads": ctx.threads, **extra}


def _compare_ranks(ctx, res: dict, name: str, refs: dict) -> dict:
    """Per stage: every rank's weights vs the plain run's, and vs each other."""
    import torch

    out = {}
    for stage, (ref_a, noise) in refs.items():
        files = sorted((ctx.work / "ddp" / name).glob(f"{stage}_rank*.pt"))
        if not files:
            out[stage] = {"ok": False, "error": "no weights written"}
            continue
        states = [torch.load(f, weights_only=False) for f in files]
        vs_plain = [_state_diff(s, ref_a) for s in states]
        floor = max(DDP_ATOL, DDP_NOISE_FACTOR * noise.get("max_abs_diff", 0.0) if noise.get("same_keys") else DDP_ATOL)
        r = {"ranks": len(states), "vs_plain": vs_plain, "tolerance": floor,
             "ok": all(d.get("same_keys") and d.get("max_abs_diff", math.inf) <= floor for d in vs_plain)}
        if len(states) > 1:
            r["rank0_vs_rank1"] = _state_diff(states[0], states[1])
            r["ok"] = r["ok"] and r["rank0_vs_rank1"].get("bitwise_equal", False)
        out[stage] = r
    return out


def check_ddp(ctx) -> dict:
    import torch

    cuda = ctx.device.type == "cuda"
    out: dict = {"size": ctx.ddp_size, "stages": list(ctx.ddp_stages), "batch": ctx.ddp_batch, "steps": ctx.ddp_steps,
                 "cuda_devices": torch.cuda.device_count() if cuda else 0,
                 "note": "world 1: spawn_local + init_distributed make no process group for one rank, and "
                         "wrap_ddp / any_true do nothing without one; the worker joins a one-rank group and sets "
                         "distributed.is_distributed to answer True so the trainer wraps DDP (the first "
                         "record of each rank says what the project's own init did)."}
    _, samples = ctx.batches.get(ctx.ddp_size, ctx.ddp_batch)
    (ctx.work / "ddp").mkdir(parents=True, exist_ok=True)
    torch.save(samples, ctx.work / "ddp_samples.pt")

    # the reference: two plain runs in this process (the second measures the device's own noise)
    refs, plain = {}, {}
    cfg0 = _ddp_cfg(ctx, "plain", 1, "none")
    _deterministic(True)
    try:
        for stage in ctx.ddp_stages:
            a, rec_a = _plain_steps(cfg0, stage, ctx.device)
            if ctx.ddp_noise_run:
                b, _ = _plain_steps(cfg0, stage, ctx.device)
                noise = _state_diff(a, b)
            else:
                noise = {"same_keys": True, "max_abs_diff": 0.0, "note": "not measured (--quick): taken as 0"}
            refs[stage] = (a, noise)
            plain[stage] = {**rec_a, "second_run_vs_first": noise}
    finally:
        _deterministic(False)
    out["plain"] = plain

    runs = []
    if cuda:
        runs.append(("world1_nccl", 1, "nccl", {"force_distributed": True}))
        if ctx.ddp_world2:
            runs.append(("world2_nccl_one_gpu_probe", 2, "nccl", {"probe_only": True}))
            runs.append(("world2_gloo_one_gpu", 2, "gloo", {}))
        out["world1_gloo_cpu_dry_run"] = "not run (CUDA present)"
    else:
        out["world1_nccl"] = NO_CUDA
        out["world2"] = NO_CUDA
        runs.append(("world1_gloo_cpu_dry_run", 1, "gloo", {"force_distributed": True}))
        if ctx.ddp_world2:
            runs.append(("world2_gloo_cpu", 2, "gloo", {}))
    for name, world, backend, extra in runs:
        limit = min(60.0 if extra.get("probe_only") else 180.0, max(20.0, ctx.time_left() - 20))
        r = _run_child(ctx, _ddp_cfg(ctx, name, world, backend, **extra), limit)
        ranks_ok = bool(r["ranks"]) and len(r["ranks"]) == world and all(x.get("ok") for x in r["ranks"])
        r["ok"] = bool((r["spawn"] or {}).get("ok")) and ranks_ok and not r["timed_out"]
        if not extra.get("probe_only"):
            r["weights"] = _compare_ranks(ctx, r, name, refs) if r["ok"] else None
            r["ok"] = r["ok"] and all(v.get("ok") for v in (r["weights"] or {"": {}}).values())
            if r["ranks"]:
                r["ddp_wrapped"] = all(all(s.get("wrapped_in") == "DistributedDataParallel"
                                           for s in x.get("stages", {}).values()) for x in r["ranks"])
                r["ok"] = r["ok"] and r["ddp_wrapped"]
        out[name] = r
        ctx.progress(f"ddp {name}: {'ok' if r['ok'] else 'FAILED'} ({r['seconds']} s)"
                     + ("" if r["ok"] else f": {_first_error(r)}"))
    if cuda:
        w1 = out["world1_nccl"]
        out["ok"] = bool(w1.get("ok")) and (not ctx.ddp_world2 or bool(out["world2_gloo_one_gpu"].get("ok")))
        probe = out.get("world2_nccl_one_gpu_probe")
        if probe is not None:
            out["world2_nccl_on_one_gpu"] = ("works" if probe.get("ok") else
                                             "not possible here (expected: NCCL needs one GPU per rank): "
                                             + _first_error(probe))
        out["world_size_gt1_nccl_checked"] = False if not probe or not probe.get("ok") else "probe only (all_reduce)"
    else:
        dry = out["world1_gloo_cpu_dry_run"]
        out["ok"] = None
        out["status"] = NO_CUDA + f" (gloo CPU dry run of the same path: {'ok' if dry.get('ok') else 'FAILED'})"
        out["dry_run_ok"] = bool(dry.get("ok")) and all(bool(out[n].get("ok")) for n, *_ in runs)
    return out


def _first_error(r: dict) -> str:
    for x in [r.get("spawn") or {}] + list(r.get("ranks") or []):
        if x.get("error"):
            return x["error"]
    if r.get("timed_out"):
        return f"timed out after {r.get('timeout_s')} s"
    if r.get("weights"):
        bad = {k: v for k, v in r["weights"].items() if not v.get("ok")}
        if bad:
            return f"weights differ from the plain run: {json.dumps(bad, default=str)[:300]}"
    tail = r.get("log_tail") or []
    return tail[-1] if tail else "?"


# ------------------------------------------------------------------------------------------------
# 4. Throughput
# ------------------------------------------------------------------------------------------------


def mm_rate(device, dtype_name: str, n: int, seconds: float) -> dict:
    """``torch.mm`` FLOP/s of n x n products (bf16 on CUDA), repeated for about ``seconds``."""
    import torch

    dtype = getattr(torch, dtype_name)
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, generator=g).to(dtype)
    b = torch.randn(n, n, device=device, generator=g).to(dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    for _ in range(3):
        torch.mm(a, b, out=out)
    rates = []
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end or len(rates) < 3:
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(10):
            torch.mm(a, b, out=out)
        _sync(device)
        rates.append(10 * 2.0 * n**3 / (time.perf_counter() - t0))
    return {"n": n, "dtype": dtype_name, "median_tflops": statistics.median(rates) / 1e12,
            "max_tflops": max(rates) / 1e12}


def _train_variant(ctx, size: str, stage: str, coll, samples) -> dict:
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    device = ctx.device
    cuda = device.type == "cuda"
    _free(device)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device) if cuda else 0
    run = make_stage_run(size, stage, samples, ctx.tp_batch, ctx.seed, ctx.work / "tp" / size / stage, device=device,
                         amp=ctx.tp_amp, objective=ctx.objective_overrides)
    torch.manual_seed(ctx.seed + 1)
    count = stage in ctx.tp_flop_stages
    if count:
        with sdpa_kernel([SDPBackend.MATH]), FlopCounterMode(display=False) as counter:
            first = [take_step(run, coll, device)]  # the first warm-up step: its FLOPs are counted
        flops = float(counter.get_total_flops())
        if cuda:
            _free(device)
            torch.cuda.reset_peak_memory_stats(device)  # the MATH step's attention matrices are not counted
    else:
        first, flops = [], None
    warm = [take_step(run, coll, device) for _ in range(max(ctx.tp_warmup - len(first), 0))]
    rows = [take_step(run, coll, device) for _ in range(ctx.tp_steps)]
    times = [r["step_s"] for r in rows]
    med = statistics.median(times)
    out = {
        "trainable": sorted(run.stage.trainable),
        "amp_dtype": str(run.amp_dtype).replace("torch.", "") if run.amp_dtype is not None else None,
        "timed_steps": len(rows), "warmup_steps": len(first) + len(warm),
        "step_s": {"median": med, "min": min(times), "max": max(times), "all": times},
        "images_per_s": ctx.tp_batch / med,
        "images_per_s_best": ctx.tp_batch / min(times),
        "losses_finite": all(math.isfinite(r["loss"]) for r in first + warm + rows),
        "skipped_steps": sum(r["skipped"] for r in first + warm + rows),
    }
    if flops is not None:
        out["gflop_per_image"] = flops / ctx.tp_batch / 1e9
        out["achieved_tflops"] = flops / med / 1e12
    if cuda:
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        out["peak_memory_over_start_gib"] = (torch.cuda.max_memory_allocated(device) - base) / 2**30
        out["peak_reserved_gib"] = torch.cuda.max_memory_reserved(device) / 2**30
    out["ok"] = out["losses_finite"] and not out["skipped_steps"]
    del run
    _free(device)
    return out


def _inference(ctx) -> dict:
    import torch

    from posebh.models.posebh import ModelConfig, PoseBH

    device, size, batch = ctx.device, ctx.inf_size, ctx.inf_batch
    cuda = device.type == "cuda"
    coll, _ = ctx.batches.get(size, min(batch, ctx.tp_batch))
    reps = -(-batch // coll["image"].shape[0])
    images = coll["image"].repeat(reps, 1, 1, 1)[:batch].to(device)
    idx = coll["dataset_idx"].repeat(reps)[:batch].to(device)
    _free(device)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(ctx.seed)
    net = PoseBH(ModelConfig(size=size)).to(device).eval()
    times = []
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
        for i in range(ctx.inf_warmup + ctx.inf_steps):
            _sync(device)
            t0 = time.perf_counter()
            out = net(images, idx, own_heads=True)
            _sync(device)
            if i >= ctx.inf_warmup:
                times.append(time.perf_counter() - t0)
    hm = [h for _, h in out["heads"].values()]
    med = statistics.median(times)
    res = {"size": size, "batch": batch, "img_size": list(net.config.input_hw), "autocast": "bf16" if cuda else "off (CPU)",
           "heads": "own heads (each sample through its dataset's head)", "timed_steps": len(times),
           "forward_s": {"median": med, "min": min(times)}, "images_per_s": batch / med,
           "images_per_s_best": batch / min(times), "outputs_finite": bool(all(torch.isfinite(h).all() for h in hm))}
    if cuda:
        res["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    res["ok"] = res["outputs_finite"]
    del net, out, hm
    _free(device)
    return res


def check_throughput(ctx) -> dict:
    cuda = ctx.device.type == "cuda"
    out: dict = {"batch": ctx.tp_batch, "amp": ctx.tp_amp if cuda else "off (CPU)", "warmup_steps": ctx.tp_warmup,
                 "timed_steps": ctx.tp_steps, "sizes": {},
                 "note": "one variant at a time (peak memory is that variant's), the batch already on the device; "
                         "step = the trainer's _StageRun.step; FLOPs of one step counted under the MATH SDPA backend"}
    if cuda:
        out["bf16_mm"] = attempt(mm_rate, ctx.device, "bfloat16", 8192, 2.0)
    ok = True
    for size in ctx.tp_sizes:
        from posebh.models.vit_moe import spec

        coll, samples = ctx.batches.get(size, ctx.tp_batch)
        coll = _to(coll, ctx.device)
        res = {"img_size": list(spec(size).img_size), "stages": {}}
        for stage in STAGES:
            if ctx.time_left() < ctx.tp_reserve_s:
                res["stages"][stage] = {"ok": False, "error": "skipped: time budget (--budget-s) used up"}
                ok = False
                continue
            r = attempt(_train_variant, ctx, size, stage, coll, samples)
            peak = (out.get("bf16_mm") or {}).get("median_tflops")
            if r.get("achieved_tflops") and peak:
                r["of_bf16_mm_rate"] = r["achieved_tflops"] / peak
            res["stages"][stage] = r
            ok = ok and bool(r.get("ok"))
            ctx.progress(f"throughput {size} {stage}: " + (
                f"{r['images_per_s']:.1f} images/s, {_fmt_s(r['step_s']['median'])}/step"
                + (f", peak {r['peak_memory_gib']:.1f} GiB" if "peak_memory_gib" in r else "")
                if r.get("ok") else f"FAILED: {r.get('error')}"))
        out["sizes"][size] = res
        del coll
    if ctx.time_left() > ctx.inf_reserve_s:
        out["inference"] = attempt(_inference, ctx)
    else:
        out["inference"] = {"ok": False, "error": "skipped: time budget (--budget-s) used up"}
    inf = out["inference"]
    ctx.progress(f"inference {ctx.inf_size} batch {ctx.inf_batch}: " + (
        f"{inf['images_per_s']:.1f} images/s" if inf.get("ok") else f"FAILED: {inf.get('error')}"))
    out["ok"] = ok and bool(inf.get("ok"))
    return out


# ------------------------------------------------------------------------------------------------
# driver
# ------------------------------------------------------------------------------------------------


class Context:
    def __init__(self, args, device, work: Path):
        import torch

        self.device = torch.device(device)
        self.seed = args.seed
        self.work = work
        self.batches = BatchCache(args.seed)
        self.started = time.perf_counter()
        self.budget_s = args.budget_s
        self.threads = args.threads
        q = args.quick
        self.objective_overrides = {"cps_iters": 50} if q else None
        self.amp_size, self.amp_batch, self.amp_steps = ("tiny", 4, 2) if q else ("s", 32, 6)
        self.amp_stages = ("baseline",) if q else ("baseline", "stage3")
        self.sdpa_size, self.sdpa_batch = ("tiny", 4) if q else ("b", 32)
        self.ddp_size, self.ddp_batch, self.ddp_steps = ("tiny", 4, 2) if q else ("s", 16, 2)
        self.ddp_stages = ("stage1",) if q else ("stage1", "stage3")
        self.ddp_noise_run = not q  # a second plain run: the device's run-to-run noise floor
        self.ddp_world2 = {"auto": self.device.type == "cuda", "on": True, "off": False}[args.ddp_world2]
        self.tp_sizes = ("tiny",) if q else tuple(args.sizes)
        self.tp_batch, self.tp_warmup, self.tp_steps = (4, 0, 1) if q else (args.batch, args.warmup, args.steps)
        self.tp_amp = "bf16"
        self.tp_flop_stages = ("baseline",) if q else STAGES  # quick: count FLOPs once, to exercise the code
        # a throughput variant is not started with less than this left (45 s, plus the DDP check's share)
        self.tp_reserve_s = 0 if q else 45 + (DDP_RESERVE_S if "ddp" in args.checks else 0)
        self.inf_reserve_s = 0 if q else 20 + (DDP_RESERVE_S if "ddp" in args.checks else 0)
        self.inf_size, self.inf_batch, self.inf_warmup, self.inf_steps = ("tiny", 8, 1, 1) if q else ("b", 256, 3, 10)

    def time_left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.started)

    def progress(self, msg: str) -> None:
        print(f"[{time.perf_counter() - self.started:6.1f} s] {msg}", flush=True)


def machine_info(device) -> dict:
    import torch

    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "torch": torch.__version__, "torch_cuda": torch.version.cuda, "device": str(device),
            "cuda_available": torch.cuda.is_available()}
    for mod in ("timm", "torchvision", "numpy", "pandas", "cv2", "scipy", "yaml"):
        try:
            if mod == "timm":  # through the project's shim (torchvision's ops need it on a CPU-only torch)
                from posebh.models.timm_compat import import_timm

                info[mod] = import_timm().__version__
            else:
                info[mod] = __import__(mod).__version__
        except Exception as e:  # noqa: BLE001
            info[mod] = f"not importable: {type(e).__name__}: {e}"[:200]
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=torch.cuda.get_device_name(0), gpu_count=torch.cuda.device_count(),
                    capability=list(torch.cuda.get_device_capability(0)), gpu_memory_gib=p.total_memory / 2**30,
                    multiprocessors=p.multi_processor_count, bf16_supported=torch.cuda.is_bf16_supported(),
                    cudnn=torch.backends.cudnn.version(), matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
                    cudnn_allow_tf32=torch.backends.cudnn.allow_tf32)
        try:
            info["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
        except Exception as e:  # noqa: BLE001
            info["nccl"] = f"unknown ({type(e).__name__})"
    return info


def _status(res: dict) -> str:
    if isinstance(res.get("status"), str):
        return res["status"]
    return "ok" if res.get("ok") else "FAILED" + (f": {res['error']}" if res.get("error") else "")


def _summary_lines(result: dict) -> list[str]:
    lines = []
    m = result["machine"]
    lines.append(f"machine: {m.get('gpu', 'no GPU')} | torch {m['torch']} (CUDA {m.get('torch_cuda')}) | "
                 f"python {m['python']}")
    for name, res in result["checks"].items():
        lines.append(f"{name}: {_status(res)} ({res.get('seconds', '?')} s)")
        if name == "amp":
            for stage, modes in (res.get("stages") or {}).items():
                lines.append("  " + stage + ": " + ", ".join(
                    f"{m} {'ok' if r.get('ok') else 'FAIL'} {_fmt_s(r.get('step_s_median_after_first'))}/step"
                    + (f" (x{r['speedup_vs_fp32']:.2f})" if r.get("speedup_vs_fp32") else "")
                    + (f" scale {r['loss_scale'][-1]:g}" if r.get("loss_scale") else "")
                    + ("" if r.get("ok") else f" [{'; '.join(r.get('problems') or [str(r.get('error'))])}]")
                    for m, r in modes.items()))
        elif name == "sdpa" and "uses_sdpa" in res:
            ops = (res.get("default_dispatch") or {}).get("aten_ops", {})
            lines.append(f"  uses SDPA: {res['uses_sdpa']} ({res.get('sdpa_calls_per_forward')} calls / "
                         f"{res.get('depth')} blocks); default kernels: {', '.join(sorted(ops)) or '?'}")
            cmp = res.get("flash_vs_math")
            if isinstance(cmp, dict) and "flash_vs_math_bf16" in cmp:
                d = cmp["flash_vs_math_bf16"]
                lines.append(f"  flash vs math (bf16): max {d['max_abs_diff']:.3g}, rel mean {d['rel_mean']:.3g}")
        elif name == "ddp":
            for k in ("world1_nccl", "world2_gloo_one_gpu", "world1_gloo_cpu_dry_run", "world2_gloo_cpu"):
                r = res.get(k)
                if isinstance(r, dict):
                    w = r.get("weights") or {}
                    diffs = [d.get("max_abs_diff") for st in w.values() for d in st.get("vs_plain", [])]
                    lines.append(f"  {k}: {'ok' if r.get('ok') else 'FAILED: ' + _first_error(r)}"
                                 + (f" (max |w - plain| {max(diffs):.3g})" if diffs and None not in diffs else ""))
            if "world2_nccl_on_one_gpu" in res:
                lines.append(f"  world 2 NCCL on one GPU: {res['world2_nccl_on_one_gpu'][:160]}")
        elif name == "throughput":
            for size, r in (res.get("sizes") or {}).items():
                lines.append(f"  {size}: " + ", ".join(
                    f"{st} {v['images_per_s']:.1f}/s" + (f" {v['peak_memory_gib']:.1f}GiB" if 'peak_memory_gib' in v else "")
                    if v.get("ok") else f"{st} FAIL" for st, v in r["stages"].items()))
            inf = res.get("inference") or {}
            if inf.get("ok"):
                lines.append(f"  inference {inf['size']} batch {inf['batch']}: {inf['images_per_s']:.1f} images/s")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=HERE / "results" / "cuda_check.json")
    p.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny model, 1-2 steps, small batches")
    p.add_argument("--checks", nargs="+", choices=CHECKS, default=list(CHECKS))
    p.add_argument("--sizes", nargs="+", default=["s", "b"], help="throughput model sizes")
    p.add_argument("--batch", type=int, default=64, help="throughput training batch")
    p.add_argument("--warmup", type=int, default=3, help="throughput warm-up steps (the first is FLOP-counted)")
    p.add_argument("--steps", type=int, default=10, help="throughput timed steps")
    p.add_argument("--ddp-world2", choices=("auto", "on", "off"), default="auto",
                   help="also run the two-rank checks on one device (auto: on CUDA)")
    p.add_argument("--budget-s", type=float, default=450.0, help="stop starting new work after this many seconds")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 with --quick on CPU, where two OpenMP "
                        "threads on shared cores spin at every barrier)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--child-ddp", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child_ddp is not None:
        return _child_ddp(json.loads(args.child_ddp.read_text()))
    if args.warmup < 1:
        p.error("--warmup must be >= 1")

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but torch.cuda.is_available() is False")
    if args.threads is None and args.quick and torch.device(device).type == "cpu":
        args.threads = 1
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    result: dict = {
        "benchmark": "cuda_check",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv[1:] if argv is None else list(argv),
        "machine": {},
        "checks": {},
    }

    def write() -> None:
        result["wall_s"] = round(time.perf_counter() - started, 1)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")

    try:
        result["machine"] = machine_info(device)
    except Exception as e:  # noqa: BLE001
        result["machine"] = {"torch": torch.__version__, "python": platform.python_version(), **_error(e)}
    with tempfile.TemporaryDirectory(prefix="cuda_check_") as work:
        ctx = Context(args, device, Path(work))
        result["config"] = {"quick": args.quick, "device": str(ctx.device), "budget_s": args.budget_s, "seed": args.seed,
                            "torch_threads": torch.get_num_threads(),
                            "amp": {"size": ctx.amp_size, "batch": ctx.amp_batch, "steps": ctx.amp_steps,
                                    "stages": list(ctx.amp_stages)},
                            "sdpa": {"size": ctx.sdpa_size, "batch": ctx.sdpa_batch},
                            "ddp": {"size": ctx.ddp_size, "batch": ctx.ddp_batch, "steps": ctx.ddp_steps,
                                    "stages": list(ctx.ddp_stages), "world2": ctx.ddp_world2},
                            "throughput": {"sizes": list(ctx.tp_sizes), "batch": ctx.tp_batch, "warmup": ctx.tp_warmup,
                                           "steps": ctx.tp_steps, "amp": ctx.tp_amp},
                            "inference": {"size": ctx.inf_size, "batch": ctx.inf_batch, "steps": ctx.inf_steps},
                            "objective_overrides": ctx.objective_overrides}
        ctx.progress(f"device {ctx.device} ({result['machine'].get('gpu', 'no GPU')}), torch {torch.__version__}")
        fns = {"amp": check_amp, "sdpa": check_sdpa, "ddp": check_ddp, "throughput": check_throughput}
        for name in [c for c in CHECKS if c in args.checks]:
            if ctx.time_left() < 10:
                result["checks"][name] = {"ok": False, "error": "skipped: time budget (--budget-s) used up"}
            else:
                ctx.progress(f"check {name} ...")
                result["checks"][name] = attempt(fns[name], ctx)
            ctx.progress(f"check {name}: {_status(result['checks'][name])}")
            write()
    result["all_ok"] = all(r.get("ok") is not False for r in result["checks"].values())
    write()
    print("\n".join(["", "== cuda_check summary =="] + _summary_lines(result) + [f"wrote {args.out}"]), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
