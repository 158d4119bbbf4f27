"""Per-task losses and their weighted multi-task sum (configs name `demt_exp.losses.MultiTaskLoss`)."""

from demt_exp.losses.task_losses import MultiTaskLoss, build_loss, weighted_sum

__all__ = ["MultiTaskLoss", "build_loss", "weighted_sum"]
