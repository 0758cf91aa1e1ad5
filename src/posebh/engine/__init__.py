"""Training engine: stage specs, optimizer with layer decay, schedules, AMP, DDP, exact-resume checkpoints.

The PoseBH losses plug in through :class:`posebh.engine.trainer.Objective`
(implemented by ``posebh.engine.objective``); nothing here knows about poses.
"""

from .checkpoint import CHECKPOINT_NAME, CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint
from .distributed import DistInfo, barrier, init_distributed, is_main, rank, spawn_local, unwrap, world, wrap_ddp
from .optim import LRSchedule, build_optimizer, lr_factor, param_groups
from .stages import OptimizerSpec, StageConfigError, StageEvent, StageSpec, apply_trainable
from .trainer import NonFiniteLossError, Objective, TrainResult, train_stage

__all__ = [
    "CHECKPOINT_NAME", "CheckpointError", "DistInfo", "LRSchedule", "NonFiniteLossError", "Objective", "OptimizerSpec",
    "StageConfigError", "StageEvent", "StageSpec", "TrainResult", "apply_trainable", "barrier", "build_optimizer",
    "init_distributed", "is_main", "latest_checkpoint", "load_checkpoint", "lr_factor", "param_groups", "rank",
    "save_checkpoint", "spawn_local", "train_stage", "unwrap", "world", "wrap_ddp",
]
