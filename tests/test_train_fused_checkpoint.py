"""The trainer uses fused AdamW on CUDA. Its state (float32 step counters, ``fused`` in the param groups) must
survive our safetensors + JSON checkpoint exactly, and a GPU run's checkpoint must resume on a CPU. PyTorch's fused
AdamW also runs on the CPU, so both are checked here with the tiny Med-ST."""

from __future__ import annotations

from pathlib import Path

import torch

from medst.model import MedST
from medst.model.config import ModelConfig
from medst.model.dummy import random_batch
from medst.train.checkpoint import (
    begin_checkpoint,
    commit_checkpoint,
    load_checkpoint,
    write_main_state,
    write_rank_state,
)
from medst.train.optim import build_optimizer


def _setup(fused: bool) -> tuple[MedST, torch.optim.AdamW]:
    torch.manual_seed(0)
    model = MedST(ModelConfig.preset("tiny")).train()
    return model, build_optimizer(model, lr=1e-3, weight_decay=0.05, fused=fused)


def _steps(model: MedST, opt: torch.optim.Optimizer, seeds: range) -> None:
    for seed in seeds:
        batch = random_batch(model.config, [3, 2], lateral_fraction=0.5, seed=seed)
        opt.zero_grad(set_to_none=True)
        model(batch).loss.backward()
        opt.step()


def _continue_both(
    a: MedST, a_opt: torch.optim.Optimizer, b: MedST, b_opt: torch.optim.Optimizer, seeds: range
) -> None:
    """Train both on the same batches and dropout draws (one process holds both, so the RNG state the checkpoint
    restored is shared: reset it before the second)."""
    rng = torch.get_rng_state()
    _steps(a, a_opt, seeds)
    torch.set_rng_state(rng)
    _steps(b, b_opt, seeds)


def _save(run: Path, model: MedST, opt: torch.optim.Optimizer, step: int) -> Path:
    stage = begin_checkpoint(run, step)
    write_rank_state(stage, 0, {"batches_consumed": step})
    write_main_state(stage, model, opt, {"step": step, "epoch": 0}, "seed: 0\n")
    return commit_checkpoint(run, step, keep=None)


def test_fused_adamw_checkpoint_resumes_bitwise(tmp_path: Path) -> None:
    model, opt = _setup(fused=True)
    _steps(model, opt, range(3))
    path = _save(tmp_path, model, opt, 3)

    resumed, resumed_opt = _setup(fused=True)
    load_checkpoint(path, resumed, resumed_opt, rank=0)
    group = resumed_opt.param_groups[0]
    assert group["fused"] is True
    steps = {s["step"].dtype for s in resumed_opt.state.values()}
    assert steps == {torch.float32}
    assert {float(s["step"]) for s in resumed_opt.state.values()} == {3.0}

    _continue_both(model, opt, resumed, resumed_opt, range(3, 6))
    for (name, a), b in zip(model.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_fused_checkpoint_resumes_into_an_unfused_optimizer(tmp_path: Path) -> None:
    """A checkpoint of a CUDA (fused) run continues on a machine whose optimizer was built unfused."""
    model, opt = _setup(fused=True)
    _steps(model, opt, range(2))
    path = _save(tmp_path, model, opt, 2)

    plain, plain_opt = _setup(fused=False)
    load_checkpoint(path, plain, plain_opt, rank=0)
    before = {k: v.clone() for k, v in plain.state_dict().items()}
    _continue_both(model, opt, plain, plain_opt, range(2, 4))
    moved = 0
    for (name, a), b in zip(model.state_dict().items(), plain.state_dict().values(), strict=True):
        if a.is_floating_point():
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)
            moved += int(not torch.equal(b, before[name]))
    assert moved > 10  # the resumed optimizer really stepped
