"""Learning-rate schedules (one value per step) and the optimizer built from a config."""

from __future__ import annotations

import numpy as np
from mindspore import Tensor, nn

from ms_resnet.config import Config
from ms_resnet.network import classifier_names


def lr_per_step(schedule: str, lr: float, epochs: int, steps_per_epoch: int,
                warmup_epochs: float = 0.0) -> np.ndarray:
    """Learning rate for every training step.

    `onecycle` follows Smith & Topin (2019) as torch's OneCycleLR does: a 30% linear ramp from
    lr/25 up to lr, then cosine annealing down to lr/1e4. `multistep` divides lr by 10 at 50% and
    75% of training (He et al. 2016). `cosine`, `multistep` and `constant` may start with a
    linear warm-up.
    """
    total = epochs * steps_per_epoch
    step = np.arange(total, dtype=np.float64)
    if schedule == "onecycle":
        peak = max(int(0.3 * total), 1)
        start, end = lr / 25.0, lr / 25.0 / 1e4
        ramp = start + (lr - start) * step / peak
        progress = (step - peak) / max(total - 1 - peak, 1)
        anneal = end + (lr - end) * 0.5 * (1.0 + np.cos(np.pi * progress))
        return np.where(step < peak, ramp, anneal).astype(np.float32)
    warmup = int(warmup_epochs * steps_per_epoch)
    if schedule == "cosine":
        progress = (step - warmup) / max(total - warmup, 1)
        values = 0.5 * lr * (1.0 + np.cos(np.pi * np.clip(progress, 0.0, 1.0)))
    elif schedule == "multistep":
        values = lr * 0.1 ** ((step >= total // 2).astype(int) + (step >= total * 3 // 4))
    elif schedule == "constant":
        values = np.full(total, lr)
    else:
        raise ValueError(f"unknown lr_schedule '{schedule}'")
    if warmup:
        values = np.where(step < warmup, lr * (step + 1) / warmup, values)
    return values.astype(np.float32)


def create_optimizer(net: nn.Cell, config: Config, steps_per_epoch: int,
                     workers: int = 1) -> nn.Optimizer:
    """SGD (momentum) or Adam; weight decay on conv/dense weights only, not on BN or biases;
    the BN betas at `bn_beta_lr` x the learning rate.

    With `workers` data-parallel processes the global batch is `workers * batch_size`;
    `lr_scaling: linear` scales the learning rate with it (Goyal et al. 2017).
    """
    peak = config.lr * (workers if config.lr_scaling == "linear" else 1)
    lr = Tensor(lr_per_step(config.lr_schedule, peak, config.epochs, steps_per_epoch,
                            config.warmup_epochs))
    params = net.trainable_params()
    groups = [{"params": [p for p in params if p.ndim > 1], "weight_decay": config.weight_decay},
              {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
    if config.bn_beta_lr != 1:
        betas = {cell.beta.name for _, cell in net.cells_and_names()
                 if isinstance(cell, nn.BatchNorm2d)}
        groups = [{**group, "params": [p for p in group["params"] if p.name not in betas]}
                  for group in groups]
        groups.append({"params": [p for p in params if p.name in betas], "weight_decay": 0.0,
                       "lr": Tensor(lr.asnumpy() * np.float32(config.bn_beta_lr))})
        groups = [group for group in groups if group["params"]]
    if config.backbone_lr != 1 or config.freeze_epochs:
        # Fine-tuning: the backbone follows the same schedule, scaled, and stands still (lr 0)
        # while only the new classifier trains.
        backbone_lr = lr.asnumpy() * np.float32(config.backbone_lr)
        backbone_lr[:round(config.freeze_epochs * steps_per_epoch)] = 0
        head = classifier_names(net)
        split = []
        for group in groups:
            in_head = [p for p in group["params"] if p.name in head]
            in_backbone = [p for p in group["params"] if p.name not in head]
            split += [{**group, "params": in_head}] if in_head else []
            scale = np.float32(config.bn_beta_lr) if "lr" in group else np.float32(1)
            split += ([{**group, "params": in_backbone, "lr": Tensor(backbone_lr * scale)}]
                      if in_backbone else [])
        groups = split
    # A fixed loss scale multiplies the gradients without a cell that divides it out again
    # (FixedLossScaleManager(drop_overflow_update=False)): the optimizer does, as in ModelZoo.
    loss_scale = config.loss_scale_value if config.loss_scale == "fixed" else 1.0
    if config.optimizer == "adam":
        return nn.Adam(groups, learning_rate=lr, beta1=config.momentum, loss_scale=loss_scale)
    return nn.Momentum(groups, learning_rate=lr, momentum=config.momentum,
                       use_nesterov=config.nesterov, loss_scale=loss_scale)
