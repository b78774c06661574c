"""AdamW with decay / no-decay parameter groups and the per-step warm-up + cosine learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

# Parameters whose names contain these never get weight decay, whatever their shape: they are offsets and
# positions, and shrinking them towards zero only hurts (the usual ViT/BERT practice).
_NO_DECAY_NAMES = ("bias", "norm", "pos_embed", "position_embeddings", "cls_token", "token_type_embeddings")


def split_decay_groups(
    named: Iterable[tuple[str, nn.Parameter]],
) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split trainable parameters into (decay, no_decay): weight matrices decay; 1-d tensors, biases, norms,
    position embeddings and the class token do not."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, param in named:
        if not param.requires_grad:
            continue
        lowered = name.lower()
        if param.ndim <= 1 or any(key in lowered for key in _NO_DECAY_NAMES):
            no_decay.append(param)
        else:
            decay.append(param)
    return decay, no_decay


def build_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    fused: bool = False,
) -> torch.optim.AdamW:
    """AdamW over two groups: group 0 with ``weight_decay``, group 1 without."""
    decay, no_decay = split_decay_groups(model.named_parameters())
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused or None)


def warmup_cosine_lr(
    step: int, total_steps: int, peak_lr: float, warmup_fraction: float, min_lr: float
) -> float:
    """Learning rate for optimizer step ``step`` (0-based) of ``total_steps``.

    Linear warm-up from ``min_lr`` to ``peak_lr`` over the first ``ceil(warmup_fraction * total_steps)`` steps
    (reaching ``peak_lr`` at the last warm-up step), then a half cosine from ``peak_lr`` down to ``min_lr`` at the
    last step. Steps past the end stay at ``min_lr``.
    """
    total_steps = max(1, total_steps)
    warmup = math.ceil(warmup_fraction * total_steps)
    if step < warmup:
        return min_lr + (peak_lr - min_lr) * (step + 1) / warmup
    if step >= total_steps - 1:
        return min_lr
    # Here warmup <= step < total_steps - 1, so the denominator is at least 1.
    progress = (step - warmup) / (total_steps - 1 - warmup)
    return min_lr + 0.5 * (peak_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


class WarmupCosineSchedule:
    """Sets every parameter group's lr before each optimizer step; its state is just the step counter."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_steps: int,
        peak_lr: float,
        warmup_fraction: float,
        min_lr: float,
    ) -> None:
        self.optimizer = optimizer
        self.total_steps = total_steps
        self.peak_lr = peak_lr
        self.warmup_fraction = warmup_fraction
        self.min_lr = min_lr
        self.step_count = 0
        self.apply()

    def lr(self) -> float:
        return warmup_cosine_lr(
            self.step_count, self.total_steps, self.peak_lr, self.warmup_fraction, self.min_lr
        )

    def apply(self) -> float:
        """Write the lr of the current step into the optimizer and return it."""
        lr = self.lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def step(self) -> float:
        """Advance to the next optimizer step; returns its lr."""
        self.step_count += 1
        return self.apply()

    def state_dict(self) -> dict[str, float | int]:
        return {
            "step_count": self.step_count,
            "total_steps": self.total_steps,
            "peak_lr": self.peak_lr,
            "warmup_fraction": self.warmup_fraction,
            "min_lr": self.min_lr,
        }

    def load_state_dict(self, state: dict[str, float | int]) -> None:
        self.step_count = int(state["step_count"])
        self.apply()
