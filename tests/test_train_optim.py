"""Optimizer groups and the warm-up + cosine learning-rate schedule."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from medst.train.optim import WarmupCosineSchedule, build_optimizer, split_decay_groups, warmup_cosine_lr


def test_schedule_shape_warmup_then_cosine_to_min() -> None:
    total, peak, floor = 100, 4e-5, 1e-8
    lrs = [warmup_cosine_lr(s, total, peak, 0.4, floor) for s in range(total)]
    warm = lrs[:40]
    assert all(b > a for a, b in itertools.pairwise(warm))  # strictly rising
    assert lrs[0] == pytest.approx(floor + (peak - floor) / 40)
    assert lrs[39] == pytest.approx(peak)  # the peak is reached at the last warm-up step
    decay = lrs[40:]
    assert decay[0] == pytest.approx(peak)
    assert all(b < a for a, b in itertools.pairwise(decay))  # strictly falling
    assert lrs[-1] == pytest.approx(floor)
    mid = 40 + (total - 1 - 40) / 2  # half-way through the cosine the lr is half-way between peak and floor
    assert warmup_cosine_lr(math.floor(mid), total, peak, 0.4, floor) > (peak + floor) / 2
    assert warmup_cosine_lr(math.ceil(mid), total, peak, 0.4, floor) < (peak + floor) / 2
    assert warmup_cosine_lr(500, total, peak, 0.4, floor) == floor


def test_schedule_without_warmup_and_single_step() -> None:
    assert warmup_cosine_lr(0, 10, 1.0, 0.0, 0.0) == 1.0
    assert warmup_cosine_lr(0, 1, 1.0, 0.4, 0.1) == 1.0


def test_decay_groups_and_schedule_writes_the_optimizer() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    model.register_parameter("pos_embed", nn.Parameter(torch.zeros(1, 3, 8)))
    decay, no_decay = split_decay_groups(model.named_parameters())
    assert {id(p) for p in decay} == {id(model[0].weight), id(model[2].weight)}
    assert id(model.pos_embed) in {id(p) for p in no_decay} and len(no_decay) == 5
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.05)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    schedule = WarmupCosineSchedule(opt, total_steps=10, peak_lr=1e-3, warmup_fraction=0.5, min_lr=0.0)
    seen = []
    for _ in range(10):
        seen.append(opt.param_groups[0]["lr"])
        assert opt.param_groups[1]["lr"] == seen[-1]
        schedule.step()
    assert seen == pytest.approx([warmup_cosine_lr(s, 10, 1e-3, 0.5, 0.0) for s in range(10)])
    restored = WarmupCosineSchedule(opt, 10, 1e-3, 0.5, 0.0)
    restored.load_state_dict({"step_count": 3})
    assert opt.param_groups[0]["lr"] == pytest.approx(seen[3])
