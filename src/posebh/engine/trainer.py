"""The training loop of one stage: optimizer, schedule, sampler, AMP, DDP, checkpoints, metrics.

What is trained and how the loss is formed belongs to the :class:`Objective` (the PoseBH losses
live in ``posebh.engine.objective``); this module only runs it. Guarantees:

* **Exact resume.** ``out_dir/checkpoint.pt`` is written atomically at epoch ends and, with
  ``stage.checkpoint_steps``, every N steps inside an epoch. It holds the model, optimizer,
  schedule, AMP scaler, sampler position, every rank's python/numpy/torch RNG states and objective
  state, the non-finite counters and the metrics so far. A run killed at any moment and resumed
  ends bit-identical to an uninterrupted one on CPU (tested with SIGKILL).
* **Non-finite steps are skipped**, counted and logged; ``stage.max_nonfinite`` in a row stop the
  run with :class:`NonFiniteLossError`. Under DDP the decision is taken jointly by all ranks.
* **AMP on CUDA only**: the objective runs inside ``torch.autocast`` (bf16, or fp16 with a
  dynamic ``GradScaler``); the objective computes its losses in fp32 (autocast disabled).
* **Only rank 0 writes** (checkpoints, ``metrics.csv`` per logged step, ``epochs.csv`` per epoch,
  both flat CSVs that ``dvc plots`` draws with ``x: step`` or ``x: epoch``).

Determinism needs the dataset's augmentation to be a function of (index, epoch) (as
``TopDownDataset`` is), not of a worker's global RNG.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils import clip_grads_with_norm_, get_total_norm
from torch.utils.data import DataLoader, Dataset

from . import distributed as D
from .checkpoint import CHECKPOINT_NAME, atomic_file, check_plain, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .optim import LRSchedule, build_optimizer
from .stages import RESUME_TOLERANT_KEYS, StageSpec

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.csv"
EPOCHS_FILE = "epochs.csv"
#: initial loss scale of the reference's fp16 runs (mmcv Fp16OptimizerHook, reference 5.1)
FP16_INIT_SCALE = 16384.0
CHECKPOINT_FORMAT = 1
STEP_LEAD = ("stage", "epoch", "step", "lr", "loss")
STEP_TAIL = ("grad_norm", "skipped", "images_per_s", "step_seconds", "seconds")
#: Wall-clock columns: they go to the CSV logs (plots) only, never into metrics files, so that two
#: runs of the same configuration give byte-identical metrics.
TIMING_COLUMNS = frozenset({"images_per_s", "step_seconds", "seconds"})
EPOCH_TAIL = ("grad_norm", "skipped", "images_per_s", "seconds")


@runtime_checkable
class Objective(Protocol):
    """What a stage optimises. The trainer calls, in order:

    ``start_stage`` once before the first step (fresh start or resume), ``start_epoch`` at each
    epoch start (apply ``stage.trainable_at(epoch)``; must depend only on the stage and the
    epoch), ``__call__`` per batch inside autocast, with the possibly DDP-wrapped model (call it
    for the forward pass so gradients are synchronised; ``distributed.unwrap`` for attributes),
    and ``after_step`` after every step, skipped ones included (collectives stay in lockstep).
    ``__call__`` returns ``"loss"`` (scalar, fp32) and optionally other scalars to log. The state
    must hold only tensors, numbers, strings, lists and dicts (see ``checkpoint.check_plain``).
    """

    def start_stage(self, model: nn.Module, stage: StageSpec, epoch: int) -> None: ...

    def start_epoch(self, model: nn.Module, stage: StageSpec, epoch: int) -> None: ...

    def __call__(self, model: nn.Module, batch: dict, *, epoch: int, step: int) -> dict[str, Tensor]: ...

    def after_step(self, model: nn.Module) -> None: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class NonFiniteLossError(RuntimeError):
    """Too many consecutive non-finite losses (or gradients): the run cannot recover by skipping."""


@dataclass
class TrainResult:
    metrics: dict[str, Any]  # the last epoch's row of epochs.csv
    history: list[dict[str, Any]]  # every logged step (metrics.csv)
    epochs: list[dict[str, Any]]  # every epoch (epochs.csv)
    checkpoint: Path | None
    global_step: int
    nonfinite_skipped: int
    resumed_from: dict[str, int] | None = None  # {"epoch", "batches_done"} when resumed
    files: dict[str, Path] = field(default_factory=dict)


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for a stage's ``amp`` on ``device``; None (fp32) on CPU or when off."""
    if mode == "off" or device.type != "cuda":
        return None
    if mode == "bf16":
        if not torch.cuda.is_bf16_supported():
            raise RuntimeError(f"amp='bf16' but {torch.cuda.get_device_name(device)} has no bf16; use amp: fp16")
        return torch.bfloat16
    return torch.float16


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor in nested dicts/lists/tuples to ``device`` (non-blocking from pinned memory)."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.detach().cpu()
    if isinstance(obj, Mapping):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _seed_worker(worker_id: int, seed: int, rank: int) -> None:
    """Worker RNGs from (stage seed, rank, worker) only: the same on every epoch and every resume."""
    s = int(np.random.SeedSequence([seed, rank, worker_id]).generate_state(1)[0])
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


def _seed_process(seed: int, rank: int) -> None:
    s = int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


def _default_collate(dataset: Dataset) -> Callable | None:
    from posebh.data.topdown import TopDownDataset, collate

    return collate if isinstance(dataset, TopDownDataset) else None


def _columns(rows: Sequence[Mapping[str, Any]], lead: Sequence[str], tail: Sequence[str]) -> list[str]:
    middle: dict[str, None] = {}
    for r in rows:
        for k in r:
            if k not in lead and k not in tail:
                middle[k] = None
    present = {k for r in rows for k in r}
    return [c for c in lead if c in present] + list(middle) + [c for c in tail if c in present]


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], lead: Sequence[str] = STEP_LEAD, tail: Sequence[str] = STEP_TAIL) -> None:
    """A flat CSV (header always written), atomically; missing values are empty cells."""
    cols = _columns(rows, lead, tail) if rows else list(lead) + list(tail)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _fmt(v) for k, v in r.items()})
    with atomic_file(path, "w") as f:
        f.write(buf.getvalue())


def _fmt(v: Any) -> Any:
    return repr(v) if isinstance(v, float) else v


class _StageRun:
    """State of one ``train_stage`` call; see the module docstring for the order of things."""

    def __init__(self, model: nn.Module, objective: Objective, dataset: Dataset, stage: StageSpec, *, out_dir: str | Path,
                 device: str | torch.device, num_workers: int, progress: bool, dataset_sizes: Sequence[int] | None,
                 collate_fn: Callable | None, pin_memory: bool | None):
        from posebh.data.topdown import MultiDatasetSampler

        for name in ("start_stage", "start_epoch", "after_step", "state_dict", "load_state_dict"):
            if not callable(getattr(objective, name, None)):
                raise TypeError(f"the objective has no {name}() (see posebh.engine.trainer.Objective)")
        self.stage = stage
        self.out_dir = Path(out_dir)
        self.ckpt_path = self.out_dir / CHECKPOINT_NAME
        self.rank, self.world = D.rank(), D.world()
        self.main = self.rank == 0
        self.device = torch.device(device)
        self.model = D.unwrap(model).to(self.device)
        self.fwd: nn.Module = self.model
        self.objective = objective
        self.dataset = dataset
        self.progress = progress and self.main

        self.optimizer = build_optimizer(self.model, stage)
        self.schedule = LRSchedule.from_spec(self.optimizer, stage)
        self.amp_dtype = amp_dtype(stage.amp, self.device)
        if stage.amp != "off" and self.amp_dtype is None:
            log.info("stage %s: amp=%s ignored on %s (fp32)", stage.name, stage.amp, self.device.type)
        self.scaler = (torch.amp.GradScaler(self.device.type, init_scale=FP16_INIT_SCALE)
                       if self.amp_dtype == torch.float16 else None)

        sizes = list(dataset_sizes if dataset_sizes is not None else getattr(dataset, "sizes", None) or [len(dataset)])
        if sum(sizes) != len(dataset):
            raise ValueError(f"dataset_sizes {sizes} sum to {sum(sizes)}, but the dataset has {len(dataset)} samples")
        self.sampler = MultiDatasetSampler(sizes, stage.batch_size, ratios=stage.sampler_ratios, num_replicas=self.world,
                                           rank=self.rank, seed=stage.seed, drop_last=True)
        self.steps_per_epoch = self.sampler.per_replica() // stage.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"stage {stage.name!r}: batch_size {stage.batch_size} x {self.world} process(es) exceeds "
                             f"the {self.sampler.epoch_size} samples of an epoch")
        collate_fn = collate_fn if collate_fn is not None else _default_collate(dataset)
        pin = self.device.type == "cuda" if pin_memory is None else pin_memory
        self.loader = DataLoader(
            dataset, batch_size=stage.batch_size, sampler=self.sampler, num_workers=num_workers, collate_fn=collate_fn,
            pin_memory=pin, drop_last=True, persistent_workers=num_workers > 0,
            worker_init_fn=partial(_seed_worker, seed=stage.seed, rank=self.rank),
            # the loader draws a base seed per iterator: from its own generator, never the global RNG
            generator=torch.Generator().manual_seed(stage.seed),
        )

        self.epoch = 0
        self.batches_done = 0
        self.global_step = 0
        self.consecutive_nonfinite = 0
        self.total_nonfinite = 0
        self.elapsed = 0.0
        self.step_rows: list[dict[str, Any]] = []
        self.epoch_rows: list[dict[str, Any]] = []
        self.acc = self._fresh_acc()
        self.trainable: list[nn.Parameter] = []
        self._signature: tuple[bool, ...] | None = None
        self._since_log = {"steps": 0, "seconds": 0.0}
        self.resumed_from: dict[str, int] | None = None

    # --- bookkeeping -------------------------------------------------------------------------------

    def _fresh_acc(self) -> dict[str, Any]:
        return {"sums": {}, "ok": 0, "skipped": 0, "grad_norm": torch.zeros((), dtype=torch.float64, device=self.device),
                "seconds": 0.0, "images": 0}

    def _sync_trainable(self) -> None:
        """Re-wrap DDP when the set of trainable parameters changed (DDP hooks are fixed at wrap time)."""
        params = list(self.model.parameters())
        sig = tuple(p.requires_grad for p in params)
        if sig != self._signature:
            self.fwd = D.wrap_ddp(self.model, self.device)
            self.trainable = [p for p in params if p.requires_grad]
            self._signature = sig

    def _lr(self) -> float:
        return self.schedule.base_lr() * self.schedule.factor

    # --- checkpoints -------------------------------------------------------------------------------

    def _state(self, finished: bool, rngs: list, objectives: list) -> dict[str, Any]:
        acc = dict(self.acc)
        acc["sums"] = {k: v.detach().cpu() for k, v in acc["sums"].items()}
        acc["grad_norm"] = acc["grad_norm"].detach().cpu()
        return {
            "format": CHECKPOINT_FORMAT,
            "stage": self.stage.to_dict(),
            "world_size": self.world,
            "epoch": self.epoch,
            "batches_done": self.batches_done,
            "global_step": self.global_step,
            "finished": finished,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "sampler": self.sampler.state_dict(self.batches_done),
            "rng": rngs,
            "objective": objectives,
            "nonfinite": {"consecutive": self.consecutive_nonfinite, "total": self.total_nonfinite},
            "epoch_acc": acc,
            "elapsed": self.elapsed,
            "history": {"steps": self.step_rows, "epochs": self.epoch_rows},
        }

    def save(self, finished: bool = False) -> None:
        rngs = D.all_gather_objects(rng_state())
        objectives = D.all_gather_objects(_to_cpu(self.objective.state_dict()))
        if self.main:
            save_checkpoint(self.ckpt_path, self._state(finished, rngs, objectives))

    def _check_compatible(self, state: Mapping[str, Any]) -> None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{self.ckpt_path}: checkpoint format {state.get('format')!r}, expected {CHECKPOINT_FORMAT}")
        saved, now = state["stage"], self.stage.to_dict()
        differ = sorted(k for k in set(saved) | set(now) if k not in RESUME_TOLERANT_KEYS and saved.get(k) != now.get(k))
        if differ:
            raise ValueError(f"{self.ckpt_path}: written by a different configuration of stage {self.stage.name!r} "
                             f"(differs in {differ}); delete it or run with resume=False")
        if state["world_size"] != self.world:
            raise ValueError(f"{self.ckpt_path}: written by {state['world_size']} process(es), now {self.world}; "
                             "resume with the same number of processes")

    def resume(self) -> dict[str, Any] | None:
        """Load ``checkpoint.pt`` if present; returns it (None on a fresh start)."""
        if not self.ckpt_path.is_file():
            return None
        state = load_checkpoint(self.ckpt_path, map_location="cpu")
        self._check_compatible(state)
        self.epoch, self.batches_done = int(state["epoch"]), int(state["batches_done"])
        self.global_step = int(state["global_step"])
        self.resumed_from = {"epoch": self.epoch, "batches_done": self.batches_done}
        self.step_rows = list(state["history"]["steps"])
        self.epoch_rows = list(state["history"]["epochs"])
        self.total_nonfinite = int(state["nonfinite"]["total"])
        self.consecutive_nonfinite = int(state["nonfinite"]["consecutive"])
        self.elapsed = float(state["elapsed"])
        if state["finished"]:
            self.model.load_state_dict(state["model"])
            self.objective.load_state_dict(state["objective"][self.rank])
            return state
        # start_stage sees the caller's (stage-start) weights, as on the original start
        self.objective.start_stage(self.model, self.stage, self.epoch)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if self.scaler is not None and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.sampler.load_state_dict(state["sampler"])
        acc = state["epoch_acc"]
        self.acc = {**acc, "sums": {k: v.to(self.device) for k, v in acc["sums"].items()},
                    "grad_norm": acc["grad_norm"].to(self.device)}
        if self.batches_done > 0:
            # mid-epoch: start_epoch ran before the saved steps, so it runs before the RNGs return
            self.objective.start_epoch(self.model, self.stage, self.epoch)
        self.objective.load_state_dict(state["objective"][self.rank])
        set_rng_state(state["rng"][self.rank])
        return state

    # --- the loop ----------------------------------------------------------------------------------

    def step(self, batch: Any, epoch: int) -> dict[str, Any]:
        it = self.global_step
        self.schedule.apply(it, epoch)
        batch = to_device(batch, self.device)
        buffers = self._buffer_snapshot()
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            out = self.objective(self.fwd, batch, epoch=epoch, step=it)
        if not isinstance(out, Mapping) or "loss" not in out:
            raise TypeError(f"the objective must return a dict with 'loss', got {type(out).__name__}")
        loss = out["loss"]
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise TypeError(f"the objective's 'loss' must be a scalar tensor, got {loss!r}")
        loss = loss.reshape(()).float()
        backward = loss.requires_grad
        if backward:
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
        with_grad = [p for p in self.trainable if p.grad is not None]
        grads = [p.grad for p in with_grad]
        norm = get_total_norm(grads) if grads else torch.zeros((), device=self.device)
        if self.stage.grad_clip is not None and grads:
            clip_grads_with_norm_(with_grad, self.stage.grad_clip, norm)
        bad = ~torch.isfinite(loss.detach())
        if self.scaler is None:  # under fp16, inf gradients are the scaler's business (it skips and backs off)
            bad = bad | ~torch.isfinite(norm)
        skip = D.any_true(bad)
        if not skip:
            if self.scaler is not None and backward:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
        elif self.scaler is not None and backward:
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if skip:
            self._restore_buffers(buffers)
        self.objective.after_step(self.model)

        terms = {k: v for k, v in out.items() if k != "loss"}
        if skip:
            self.consecutive_nonfinite += 1
            self.total_nonfinite += 1
            self.acc["skipped"] += 1
        else:
            self.consecutive_nonfinite = 0
            self.acc["ok"] += 1
            sums = self.acc["sums"]
            for k, v in {"loss": loss, **terms}.items():
                v = torch.as_tensor(v, device=self.device).detach().to(torch.float64).reshape(())
                sums[k] = sums[k] + v if k in sums else v
            self.acc["grad_norm"] = self.acc["grad_norm"] + norm.detach().to(torch.float64)
        return {"loss": loss, "terms": terms, "grad_norm": norm, "skipped": skip}

    def _buffer_snapshot(self) -> list[tuple[Tensor, Tensor]]:
        """Buffers (BatchNorm statistics and counts, the prototypes' momentum update) change in the forward
        pass; a skipped step must put them back, or one NaN batch poisons the model state."""
        return [(b, b.detach().clone()) for b in self.model.buffers()]

    @staticmethod
    def _restore_buffers(snapshot: list[tuple[Tensor, Tensor]]) -> None:
        with torch.no_grad():
            for live, saved in snapshot:
                live.copy_(saved)

    def _step_row(self, epoch: int, res: dict[str, Any]) -> dict[str, Any]:
        s = self._since_log
        row: dict[str, Any] = {"stage": self.stage.name, "epoch": epoch, "step": self.global_step, "lr": self._lr(),
                               "loss": float(res["loss"].item())}
        for k, v in res["terms"].items():
            row[k] = float(torch.as_tensor(v).float().item())
        row.update(grad_norm=float(res["grad_norm"].item()), skipped=int(res["skipped"]),
                   images_per_s=s["steps"] * self.stage.batch_size * self.world / max(s["seconds"], 1e-9),
                   step_seconds=s["seconds"] / max(s["steps"], 1), seconds=self.elapsed)
        if self.scaler is not None:
            row["loss_scale"] = float(self.scaler.get_scale())
        return row

    def _epoch_row(self, epoch: int) -> dict[str, Any]:
        acc = self.acc
        local = {"sums": {k: float(v.item()) for k, v in acc["sums"].items()}, "ok": acc["ok"], "skipped": acc["skipped"],
                 "grad_norm": float(acc["grad_norm"].item())}
        parts = D.all_gather_objects(local)
        ok = sum(p["ok"] for p in parts)
        sums: dict[str, float] = {}
        for p in parts:
            for k, v in p["sums"].items():
                sums[k] = sums.get(k, 0.0) + v
        row: dict[str, Any] = {"stage": self.stage.name, "epoch": epoch, "step": self.global_step, "lr": self._lr()}
        row.update({k: (v / ok if ok else math.nan) for k, v in sums.items()})
        row.setdefault("loss", math.nan)
        row.update(grad_norm=sum(p["grad_norm"] for p in parts) / ok if ok else math.nan,
                   skipped=sum(p["skipped"] for p in parts),
                   images_per_s=acc["images"] / max(acc["seconds"], 1e-9), seconds=acc["seconds"])
        return row

    def _files(self) -> dict[str, Path]:
        return {"metrics": self.out_dir / METRICS_FILE, "epochs": self.out_dir / EPOCHS_FILE}

    def write_metrics(self) -> dict[str, Path]:
        files = self._files()
        if self.main:
            write_csv(files["metrics"], self.step_rows, STEP_LEAD, STEP_TAIL)
            write_csv(files["epochs"], self.epoch_rows, STEP_LEAD, EPOCH_TAIL)
        return files

    def _nonfinite_stop(self, epoch: int, res: dict[str, Any]) -> None:
        self.write_metrics()
        terms = {k: float(torch.as_tensor(v).float().item()) for k, v in res["terms"].items()}
        raise NonFiniteLossError(
            f"stage {self.stage.name!r}: {self.consecutive_nonfinite} consecutive non-finite losses or gradients "
            f"(max_nonfinite={self.stage.max_nonfinite}) at epoch {epoch}, step {self.global_step}; last loss "
            f"{float(res['loss'].item())!r}, terms {terms}, grad norm {float(res['grad_norm'].item())!r}. Stopped: "
            f"{self.ckpt_path} holds the last saved state. Lower the lr, enable grad_clip, or check the data."
        )

    def run(self, resume: bool) -> TrainResult:
        stage = self.stage
        check_plain(_to_cpu(self.objective.state_dict()), "objective.state_dict()")
        if self.main:  # temp files of a save that was killed before its rename
            for stale in self.out_dir.glob(f".{CHECKPOINT_NAME}.*.tmp"):
                stale.unlink(missing_ok=True)
        state = self.resume() if resume else None
        if state is not None and state["finished"]:
            files = self.write_metrics()
            return self._result(files)
        if state is None:
            _seed_process(stage.seed, self.rank)
            self.objective.start_stage(self.model, stage, 0)
        mid_epoch = state is not None and self.batches_done > 0
        global_batch = stage.batch_size * self.world

        for epoch in range(self.epoch, stage.epochs):
            if not (mid_epoch and epoch == self.epoch):
                self.objective.start_epoch(self.model, stage, epoch)
            mid_epoch = False
            self._sync_trainable()
            self.model.train()
            self.sampler.set_epoch(epoch)
            if callable(getattr(self.dataset, "set_epoch", None)):
                self.dataset.set_epoch(epoch)
            bar = self._bar(epoch)
            t_prev = time.perf_counter()
            try:
                for batch in self.loader:
                    res = self.step(batch, epoch)
                    self.global_step += 1
                    self.batches_done += 1
                    now = time.perf_counter()
                    dt, t_prev = now - t_prev, now
                    self.elapsed += dt
                    self.acc["seconds"] += dt
                    self.acc["images"] += global_batch
                    self._since_log["steps"] += 1
                    self._since_log["seconds"] += dt
                    if self.global_step % stage.log_every == 0:
                        row = self._step_row(epoch, res)
                        self.step_rows.append(row)
                        self._since_log = {"steps": 0, "seconds": 0.0}
                        bar.set_postfix(loss=f"{row['loss']:.4g}", lr=f"{row['lr']:.3g}", refresh=False)
                    bar.update(1)
                    if res["skipped"]:
                        log.warning("stage %s epoch %d step %d: non-finite loss or gradient, step skipped (%d in a row)",
                                    stage.name, epoch, self.global_step, self.consecutive_nonfinite)
                        if self.consecutive_nonfinite >= stage.max_nonfinite:
                            self._nonfinite_stop(epoch, res)
                    if (stage.checkpoint_steps and self.global_step % stage.checkpoint_steps == 0
                            and self.batches_done < self.steps_per_epoch):
                        self.save()
                        t_prev = time.perf_counter()
            finally:
                bar.close()

            row = self._epoch_row(epoch)
            self.epoch_rows.append(row)
            log.info("stage %s epoch %d/%d: loss %.5g, lr %.3g, %d skipped, %.1f images/s", stage.name, epoch + 1,
                     stage.epochs, row["loss"], row["lr"], row["skipped"], row["images_per_s"])
            self.acc = self._fresh_acc()
            self.epoch, self.batches_done = epoch + 1, 0
            self.sampler.set_epoch(epoch + 1)
            last = epoch + 1 == stage.epochs
            if last or (epoch + 1) % stage.checkpoint_every == 0:
                self.save(finished=last)
            self.write_metrics()
        D.barrier()
        return self._result(self._files())

    def _bar(self, epoch: int):
        from tqdm.auto import tqdm

        return tqdm(total=self.steps_per_epoch, initial=self.batches_done, disable=not self.progress, leave=False,
                    desc=f"{self.stage.name} {epoch + 1}/{self.stage.epochs}", dynamic_ncols=True)

    def _result(self, files: dict[str, Path]) -> TrainResult:
        return TrainResult(
            metrics=dict(self.epoch_rows[-1]) if self.epoch_rows else {},
            history=list(self.step_rows),
            epochs=list(self.epoch_rows),
            checkpoint=self.ckpt_path if self.ckpt_path.is_file() else None,
            global_step=self.global_step,
            nonfinite_skipped=self.total_nonfinite,
            resumed_from=self.resumed_from,
            files=files,
        )


def train_stage(
    model: nn.Module,
    objective: Objective,
    dataset: Dataset,
    stage: StageSpec | Mapping[str, Any],
    *,
    out_dir: str | Path,
    device: str | torch.device = "cpu",
    resume: bool = True,
    num_workers: int = 0,
    progress: bool = True,
    dataset_sizes: Sequence[int] | None = None,
    collate_fn: Callable | None = None,
    pin_memory: bool | None = None,
) -> TrainResult:
    """Train ``model`` in place for one stage; resumes from ``out_dir/checkpoint.pt`` when present.

    ``dataset_sizes`` split the dataset's index space into its datasets (default:
    ``dataset.sizes``, else one dataset) for the :class:`~posebh.data.topdown.MultiDatasetSampler`.
    ``collate_fn`` defaults to ``topdown.collate`` for a ``TopDownDataset``, else torch's default.
    Under a process group (``distributed.init_distributed``) each rank takes its shard and the
    model is wrapped in DDP; ``stage.batch_size`` is per process. A finished checkpoint makes this
    a no-op that loads the final weights and returns the stored history.

    A fresh start seeds python/numpy/torch global RNGs from (stage.seed, rank). Files in
    ``out_dir`` (rank 0): ``checkpoint.pt``, ``metrics.csv`` (one row per ``log_every`` steps;
    loss terms are rank 0's batch), ``epochs.csv`` (one row per epoch; means over all ranks).
    """
    stage = StageSpec.from_dict(stage)
    run = _StageRun(model, objective, dataset, stage, out_dir=out_dir, device=device, num_workers=num_workers,
                    progress=progress, dataset_sizes=dataset_sizes, collate_fn=collate_fn, pin_memory=pin_memory)
    return run.run(resume)
