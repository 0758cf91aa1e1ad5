"""Tiny models, data and objectives for the engine tests (importable by spawned processes)."""

from __future__ import annotations

import os
import random
import signal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from posebh.engine.distributed import unwrap
from posebh.engine.stages import apply_trainable

IN_DIM = 4
DIM = 8
OUT_DIM = 2


class Block(nn.Module):
    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        return x + self.drop(torch.tanh(self.fc(self.norm1(x))))


class Backbone(nn.Module):
    """Named like the ViT: patch_embed.proj, pos_embed, blocks.i, last_norm."""

    def __init__(self, depth: int, dropout: float):
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Linear(IN_DIM, DIM)
        self.pos_embed = nn.Parameter(torch.randn(1, DIM) * 0.02)
        self.blocks = nn.ModuleList([Block(DIM, dropout) for _ in range(depth)])
        self.last_norm = nn.LayerNorm(DIM)

    def forward(self, x):
        x = self.patch_embed.proj(x) + self.pos_embed
        for b in self.blocks:
            x = b(x)
        return self.last_norm(x)


class ToyModel(nn.Module):
    def __init__(self, depth: int = 3, num_datasets: int = 2, dropout: float = 0.0):
        super().__init__()
        self.backbone = Backbone(depth, dropout)
        self.heads = nn.ModuleList([nn.Linear(DIM, OUT_DIM) for _ in range(num_datasets)])
        self.embedding = nn.Linear(DIM, 3)

    def forward(self, x, dataset_idx):
        f = self.backbone(x)
        out = torch.stack([h(f) for h in self.heads], 1)[torch.arange(len(x)), dataset_idx]
        return out, self.embedding(f)


def make_model(seed: int = 0, **kw) -> ToyModel:
    torch.manual_seed(seed)
    return ToyModel(**kw)


class ToyDataset(Dataset):
    """Two datasets of random regression samples; deterministic by index."""

    def __init__(self, sizes=(10, 6), seed: int = 0):
        self.sizes = list(sizes)
        g = torch.Generator().manual_seed(seed)
        n = sum(sizes)
        self.x = torch.randn(n, IN_DIM, generator=g)
        self.y = torch.randn(n, OUT_DIM, generator=g)
        self.idx = torch.cat([torch.full((s,), d) for d, s in enumerate(sizes)])

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i], "dataset_idx": int(self.idx[i])}


class Crash(RuntimeError):
    pass


class _InfGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("inf")


class ToyObjective:
    """MSE + an embedding term; ``noise`` exercises every RNG the trainer must restore."""

    def __init__(self, seed: int = 0, *, noise: bool = True, nan_steps=(), nan_from: int | None = None,
                 inf_grad_steps=(), crash_at: int | None = None, kill_at: int | None = None, record: bool = False):
        self.gen = torch.Generator().manual_seed(seed)
        self.noise = noise
        self.nan_steps = set(nan_steps)
        self.nan_from = nan_from
        self.inf_grad_steps = set(inf_grad_steps)
        self.crash_at = crash_at
        self.kill_at = kill_at
        self.record = record
        self.calls = 0
        self.stage_starts: list[int] = []
        self.epoch_snapshots: dict[int, dict[str, torch.Tensor]] = {}
        self.step_snapshots: list[dict[str, torch.Tensor]] = []

    def start_stage(self, model, stage, epoch):
        self.stage_starts.append(epoch)
        torch.rand(3)  # hooks may consume the global RNG: resume must replay that exactly


    def start_epoch(self, model, stage, epoch):
        m = unwrap(model)
        if self.record:
            self.epoch_snapshots[epoch] = {k: v.detach().clone() for k, v in m.state_dict().items()}
        apply_trainable(m, stage.trainable_at(epoch))
        np.random.rand(2)

    def __call__(self, model, batch, *, epoch, step):
        if step == self.crash_at:
            raise Crash(f"crash at step {step}")
        if step == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        self.calls += 1
        out, emb = model(batch["x"], batch["dataset_idx"])
        with torch.autocast(batch["x"].device.type, enabled=False):
            mse = F.mse_loss(out.float(), batch["y"].float())
            reg = (emb.float() ** 2).mean()
            if self.noise:
                reg = reg * (1 + 0.1 * torch.rand((), generator=self.gen)) * (1 + 0.1 * float(np.random.rand())) \
                    * (1 + 0.1 * random.random())
            loss = mse + 0.01 * reg
            if step in self.inf_grad_steps:
                loss = loss + 0.0 * _InfGrad.apply(emb.float()).sum()
            if step in self.nan_steps or (self.nan_from is not None and step >= self.nan_from):
                loss = loss + float("nan")  # the gradients stay finite: only the loss check can catch it
        return {"loss": loss, "mse": mse.detach(), "reg": reg.detach()}

    def after_step(self, model):
        if self.record:
            self.step_snapshots.append({k: v.detach().clone() for k, v in unwrap(model).state_dict().items()})

    def state_dict(self):
        return {"gen": self.gen.get_state(), "calls": self.calls}

    def load_state_dict(self, state):
        self.gen.set_state(state["gen"])
        self.calls = int(state["calls"])


def stage_dict(**over) -> dict:
    d = {
        "name": "toy",
        "epochs": 3,
        "batch_size": 4,
        "optimizer": {"type": "adamw", "lr": 0.05, "weight_decay": 0.05},
        "layer_decay": 0.8,
        "warmup_iters": 5,
        "lr_steps": [2],
        "grad_clip": 1.0,
        "trainable": ["backbone", "embedding"],
        "events": [{"epoch": 1, "thaw": ["heads"]}],
        "amp": "off",
        "seed": 3,
        "log_every": 1,
        "checkpoint_steps": 3,
    }
    d.update(over)
    return d


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in unwrap(model).state_dict().items()}


def assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    bad = [k for k in a if not torch.equal(a[k], b[k])]
    assert not bad, f"tensors differ: {bad}"
