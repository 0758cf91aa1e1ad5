"""A training stage as data: read from ``conf/`` as a plain dict, validated once, then frozen.

A stage is one call of :func:`posebh.engine.trainer.train_stage` (baseline, PoseBH stage 1/2/3, a
transfer run). Epochs, LR steps and events are counted from the stage's own start, so the paper's
100-epoch run is three stages (0-49, 50-89, 90-99) with ``lr_steps`` relative to each.

``events`` change what trains inside a stage (reference 5.2/5.3): the InterHand transfer thaws the
backbone at epoch 30; 3DPW thaws it at 15 and freezes it again at 16. Prefixes name modules by
their dotted parameter-name prefix (``"backbone"`` matches ``backbone.blocks.0.attn.qkv.weight``
but not ``backbones.x``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any

from torch import nn

OPTIMIZERS: tuple[str, ...] = ("adamw", "adam")
AMP_MODES: tuple[str, ...] = ("bf16", "fp16", "off")
PROTOTYPE_MODES: tuple[str, ...] = ("update", "frozen")

#: mmcv's linear warm-up starts at this fraction of the regular lr (reference 5.1)
DEFAULT_WARMUP_RATIO = 0.001
DEFAULT_LR_GAMMA = 0.1
DEFAULT_BETAS = (0.9, 0.999)
DEFAULT_MAX_NONFINITE = 10
DEFAULT_LOG_EVERY = 10

#: stage keys that may differ between a checkpoint and the resuming run (bookkeeping only)
RESUME_TOLERANT_KEYS = frozenset({"log_every", "checkpoint_every", "checkpoint_steps", "max_nonfinite"})


class StageConfigError(ValueError):
    """A stage dict is malformed; the message names the stage and the offending key."""


def _where(stage: str, key: str) -> str:
    return f"stage {stage!r}: {key}"


def _int(stage: str, key: str, value: Any, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise StageConfigError(f"{_where(stage, key)} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise StageConfigError(f"{_where(stage, key)} must be >= {minimum}, got {value}")
    return int(value)


def _float(stage: str, key: str, value: Any, *, low: float | None = None, high: float | None = None,
           low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise StageConfigError(f"{_where(stage, key)} must be a number, got {value!r}")
    v = float(value)
    if v != v:
        raise StageConfigError(f"{_where(stage, key)} must not be NaN")
    if low is not None and (v < low or (low_open and v == low)):
        raise StageConfigError(f"{_where(stage, key)} must be {'>' if low_open else '>='} {low}, got {v}")
    if high is not None and v > high:
        raise StageConfigError(f"{_where(stage, key)} must be <= {high}, got {v}")
    return v


def _choice(stage: str, key: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise StageConfigError(f"{_where(stage, key)} must be one of {list(choices)}, got {value!r}")
    return value


def _prefixes(stage: str, key: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise StageConfigError(f"{_where(stage, key)} must be a list of module name prefixes, got {value!r}")
    out = []
    for p in value:
        if not isinstance(p, str) or not p or p.startswith(".") or p.endswith("."):
            raise StageConfigError(f"{_where(stage, key)} has a bad prefix {p!r} (a dotted module name)")
        out.append(p)
    return tuple(dict.fromkeys(out))


def _check_keys(stage: str, where: str, given: Mapping, known: Iterable[str], required: Iterable[str] = ()) -> None:
    known = list(known)
    unknown = [k for k in given if k not in known]
    if unknown:
        raise StageConfigError(f"{_where(stage, where)}unknown key {unknown[0]!r} (known: {', '.join(known)})")
    missing = [k for k in required if k not in given]
    if missing:
        raise StageConfigError(f"{_where(stage, where)}missing required key {missing[0]!r}")


def matches(name: str, prefix: str) -> bool:
    """True when the dotted ``name`` is ``prefix`` or lies under it."""
    return name == prefix or name.startswith(prefix + ".")


@dataclass(frozen=True)
class OptimizerSpec:
    type: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = DEFAULT_BETAS

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], stage: str = "?") -> OptimizerSpec:
        if not isinstance(d, Mapping):
            raise StageConfigError(f"{_where(stage, 'optimizer')} must be a mapping, got {d!r}")
        _check_keys(stage, "optimizer: ", d, [f.name for f in dataclasses.fields(cls)], required=("lr",))
        betas = d.get("betas", DEFAULT_BETAS)
        if isinstance(betas, str) or not isinstance(betas, Iterable) or len(tuple(betas)) != 2:
            raise StageConfigError(f"{_where(stage, 'optimizer.betas')} must be two numbers, got {betas!r}")
        betas = tuple(_float(stage, "optimizer.betas", b, low=0.0, high=1.0) for b in betas)
        if max(betas) >= 1.0:
            raise StageConfigError(f"{_where(stage, 'optimizer.betas')} must be < 1, got {list(betas)}")
        return cls(
            type=_choice(stage, "optimizer.type", d.get("type", "adamw"), OPTIMIZERS),
            lr=_float(stage, "optimizer.lr", d["lr"], low=0.0, low_open=True),
            weight_decay=_float(stage, "optimizer.weight_decay", d.get("weight_decay", 0.0), low=0.0),
            betas=betas,
        )


@dataclass(frozen=True)
class StageEvent:
    """At the start of ``epoch`` (stage-relative): freeze, then thaw, then set the prototype mode."""

    epoch: int
    freeze: tuple[str, ...] = ()
    thaw: tuple[str, ...] = ()
    prototypes: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], stage: str = "?", index: int = 0, epochs: int | None = None) -> StageEvent:
        where = f"events[{index}]"
        if not isinstance(d, Mapping):
            raise StageConfigError(f"{_where(stage, where)} must be a mapping, got {d!r}")
        _check_keys(stage, f"{where}: ", d, [f.name for f in dataclasses.fields(cls)], required=("epoch",))
        epoch = _int(stage, f"{where}.epoch", d["epoch"], minimum=0)
        if epochs is not None and epoch >= epochs:
            raise StageConfigError(f"{_where(stage, where + '.epoch')} = {epoch} is outside the stage (epochs 0..{epochs - 1})")
        ev = cls(
            epoch=epoch,
            freeze=_prefixes(stage, f"{where}.freeze", d.get("freeze")),
            thaw=_prefixes(stage, f"{where}.thaw", d.get("thaw")),
            prototypes=None if d.get("prototypes") is None else _choice(stage, f"{where}.prototypes", d["prototypes"], PROTOTYPE_MODES),
        )
        both = set(ev.freeze) & set(ev.thaw)
        if both:
            raise StageConfigError(f"{_where(stage, where)} both freezes and thaws {sorted(both)}")
        if not (ev.freeze or ev.thaw or ev.prototypes):
            raise StageConfigError(f"{_where(stage, where)} does nothing (give freeze, thaw or prototypes)")
        return ev


@dataclass(frozen=True)
class StageSpec:
    """Everything one stage of training needs besides the model, the data and the objective."""

    name: str
    epochs: int
    batch_size: int  # per process (per GPU); the global batch is batch_size x world size
    optimizer: OptimizerSpec
    layer_decay: float | None = None
    warmup_iters: int = 0
    warmup_ratio: float = DEFAULT_WARMUP_RATIO
    lr_steps: tuple[int, ...] = ()
    lr_gamma: float = DEFAULT_LR_GAMMA
    grad_clip: float | None = None
    trainable: tuple[str, ...] = ()
    events: tuple[StageEvent, ...] = ()
    prototypes: str = "update"
    losses: dict[str, Any] = field(default_factory=dict)
    amp: str = "bf16"
    max_nonfinite: int = DEFAULT_MAX_NONFINITE
    seed: int = 0
    log_every: int = DEFAULT_LOG_EVERY
    checkpoint_every: int = 1  # epochs between epoch-end checkpoints (the last epoch always saves)
    checkpoint_steps: int | None = None  # also checkpoint every N global steps inside an epoch
    sampler_ratios: tuple[float, ...] | None = None  # None: uniform over the concatenation (paper)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StageSpec:
        if isinstance(d, StageSpec):
            return d
        if not isinstance(d, Mapping):
            raise StageConfigError(f"a stage must be a mapping, got {type(d).__name__}")
        name = d.get("name")
        if not isinstance(name, str) or not name:
            raise StageConfigError(f"a stage needs a non-empty string 'name', got {name!r}")
        _check_keys(name, "", d, [f.name for f in dataclasses.fields(cls)], required=("epochs", "batch_size", "optimizer"))
        epochs = _int(name, "epochs", d["epochs"], minimum=1)

        steps = d.get("lr_steps") or ()
        if isinstance(steps, str) or not isinstance(steps, Iterable):
            raise StageConfigError(f"{_where(name, 'lr_steps')} must be a list of epochs, got {steps!r}")
        steps = tuple(_int(name, "lr_steps", s, minimum=0) for s in steps)
        if list(steps) != sorted(steps):
            raise StageConfigError(f"{_where(name, 'lr_steps')} must be non-decreasing, got {list(steps)}")

        events = d.get("events") or ()
        if isinstance(events, (str, Mapping)) or not isinstance(events, Iterable):
            raise StageConfigError(f"{_where(name, 'events')} must be a list of mappings, got {events!r}")
        events = tuple(StageEvent.from_dict(e, name, i, epochs) for i, e in enumerate(events))

        losses = d.get("losses") or {}
        if not isinstance(losses, Mapping) or not all(isinstance(k, str) for k in losses):
            raise StageConfigError(f"{_where(name, 'losses')} must be a mapping of names to switches/weights, got {losses!r}")

        ratios = d.get("sampler_ratios")
        if ratios is not None:
            if isinstance(ratios, str) or not isinstance(ratios, Iterable):
                raise StageConfigError(f"{_where(name, 'sampler_ratios')} must be a list of numbers, got {ratios!r}")
            ratios = tuple(_float(name, "sampler_ratios", r, low=0.0) for r in ratios)
            if not sum(ratios) > 0:
                raise StageConfigError(f"{_where(name, 'sampler_ratios')} must have a positive sum")

        layer_decay = d.get("layer_decay")
        grad_clip = d.get("grad_clip")
        ckpt_steps = d.get("checkpoint_steps")
        spec = cls(
            name=name,
            epochs=epochs,
            batch_size=_int(name, "batch_size", d["batch_size"], minimum=1),
            optimizer=OptimizerSpec.from_dict(d["optimizer"], name),
            layer_decay=None if layer_decay is None else _float(name, "layer_decay", layer_decay, low=0.0, high=1.0, low_open=True),
            warmup_iters=_int(name, "warmup_iters", d.get("warmup_iters", 0), minimum=0),
            warmup_ratio=_float(name, "warmup_ratio", d.get("warmup_ratio", DEFAULT_WARMUP_RATIO), low=0.0, high=1.0, low_open=True),
            lr_steps=steps,
            lr_gamma=_float(name, "lr_gamma", d.get("lr_gamma", DEFAULT_LR_GAMMA), low=0.0, low_open=True),
            grad_clip=None if grad_clip is None else _float(name, "grad_clip", grad_clip, low=0.0, low_open=True),
            trainable=_prefixes(name, "trainable", d.get("trainable")),
            events=events,
            prototypes=_choice(name, "prototypes", d.get("prototypes", "update"), PROTOTYPE_MODES),
            losses=dict(losses),
            amp=_choice(name, "amp", d.get("amp", "bf16"), AMP_MODES),
            max_nonfinite=_int(name, "max_nonfinite", d.get("max_nonfinite", DEFAULT_MAX_NONFINITE), minimum=1),
            seed=_int(name, "seed", d.get("seed", 0), minimum=0),
            log_every=_int(name, "log_every", d.get("log_every", DEFAULT_LOG_EVERY), minimum=1),
            checkpoint_every=_int(name, "checkpoint_every", d.get("checkpoint_every", 1), minimum=1),
            checkpoint_steps=None if ckpt_steps is None else _int(name, "checkpoint_steps", ckpt_steps, minimum=1),
            sampler_ratios=ratios,
        )
        for ev in spec.events:  # surface unsupported partial freezes at load time, not at epoch 30
            spec.trainable_at(ev.epoch)
        return spec

    def to_dict(self) -> dict[str, Any]:
        """Plain containers only (for checkpoints and for logging the config)."""

        def plain(v):
            if isinstance(v, tuple):
                return [plain(x) for x in v]
            if isinstance(v, dict):
                return {k: plain(x) for k, x in v.items()}
            return v

        return plain(dataclasses.asdict(self))

    def _events_until(self, epoch: int) -> list[StageEvent]:
        return sorted((e for e in self.events if e.epoch <= epoch), key=lambda e: e.epoch)

    def trainable_at(self, epoch: int) -> set[str]:
        """The trainable prefixes after applying every event up to and including ``epoch``.

        Freezing a prefix drops it and every prefix under it; freezing a part of a module that is
        trainable as a whole (``backbone.blocks`` inside ``backbone``) cannot be written as a set of
        prefixes and is refused: list the trainable parts explicitly instead.
        """
        current = set(self.trainable)
        for ev in self._events_until(epoch):
            for p in ev.freeze:
                outer = sorted(q for q in current if matches(p, q) and q != p)
                if outer:
                    raise StageConfigError(
                        f"stage {self.name!r}: event at epoch {ev.epoch} freezes {p!r} inside trainable {outer[0]!r}; "
                        "list the trainable sub-modules explicitly instead"
                    )
                current = {q for q in current if not matches(q, p)}
            current |= set(ev.thaw)
        return current

    def prototypes_at(self, epoch: int) -> str:
        """``"update"`` or ``"frozen"``: the stage default overridden by the latest event."""
        mode = self.prototypes
        for ev in self._events_until(epoch):
            if ev.prototypes is not None:
                mode = ev.prototypes
        return mode

    def change_epochs(self) -> list[int]:
        """Epochs at which an event fires (where a trainer must re-check what trains)."""
        return sorted({e.epoch for e in self.events})


def apply_trainable(model: nn.Module, prefixes: Iterable[str]) -> int:
    """Set ``requires_grad`` from parameter-name prefixes; returns the number of trainable tensors.

    Every prefix must match at least one parameter, so a typo ("head" for "heads") fails loudly
    instead of silently freezing the module. Modules stay in train mode (reference 5.1: frozen is
    not eval).
    """
    prefixes = list(prefixes)
    names = [n for n, _ in model.named_parameters()]
    unmatched = [p for p in prefixes if not any(matches(n, p) for n in names)]
    if unmatched:
        tops = sorted({n.split(".")[0] for n in names})
        raise ValueError(f"trainable prefix {unmatched[0]!r} matches no parameter (top-level modules: {tops})")
    count = 0
    for n, p in model.named_parameters():
        on = any(matches(n, q) for q in prefixes)
        p.requires_grad_(on)
        count += on
    return count
