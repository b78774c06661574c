"""Training checkpoints: safetensors for tensors, JSON for everything else, never pickle.

A checkpoint is a folder ``RUN/checkpoints/step-NNNNNNNN/`` holding:

- ``model.safetensors``: the (unwrapped) model's state dict;
- ``optimizer.safetensors`` + ``optimizer.json``: the optimizer's tensors (``state.<param>.<name>``) and the rest
  (param groups, non-tensor state);
- ``trainer.json``: step, epoch, lr schedule, grad scaler, metrics so far, medst version;
- ``rank-R.json`` + ``rank-R.safetensors`` per rank: the data position and the RNG states of python, numpy, torch
  and CUDA (each rank draws its own random numbers);
- ``config.yaml``: the resolved run config;
- ``files.json``: the size in bytes of every file above, written last.

It is written under a temporary name and renamed into place once every rank has written its part, so a folder
with the final name is complete when written. A folder damaged later (a file deleted, a partial copy) is found by
`checkpoint_problem`: `find_latest` and ``--resume latest`` skip it with a warning and use the newest complete one.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from medst.errors import UserInputError
from medst.model.checkpoints import (  # the folder layout, shared with `medst.load`
    SIZES_FILE,
    STEP_DIR,
    TRAINER_FILE,
    checkpoint_dir,
    checkpoint_problem,
    find_latest,
    step_dirs,
)


def resolve_resume(
    resume: str | None, run_dir: Path, warn: Callable[[str], None] | None = None
) -> Path | None:
    """``None`` -> None; ``latest`` -> newest complete checkpoint of the run (None when there is none yet, so
    ``--resume latest`` also starts a fresh run); otherwise a checkpoint folder that must be complete.

    ``latest`` skips incomplete checkpoints (a file missing or of the wrong size), calling ``warn`` with a line
    naming each folder and its problem; when every checkpoint of the run is incomplete it raises
    `UserInputError` instead of starting the run again from step 0.

    A fresh run (``None``) into a folder that already holds a run is refused: its checkpoints, metrics and
    export would be mixed with the new run's (and a later ``--resume latest`` could pick the old run's newest
    checkpoint)."""
    if resume is None:
        steps = step_dirs(run_dir)
        if steps or (run_dir / "metrics.jsonl").is_file():
            what = f"checkpoint {steps[0][1].name}" if steps else "metrics.jsonl"
            raise UserInputError(
                f"{run_dir} already holds a training run ({what}): continue it with --resume latest, "
                "or give a new -o folder"
            )
        return None
    if resume == "latest":
        latest = find_latest(run_dir, warn)
        steps = step_dirs(run_dir)
        if latest is None and steps:
            raise UserInputError(
                f"--resume latest: no complete checkpoint in {run_dir / 'checkpoints'} "
                f"({steps[0][1].name}: {checkpoint_problem(steps[0][1])}); "
                "resume from a copy of the run that has one, or give a new -o folder"
            )
        return latest
    path = Path(resume)
    problem = checkpoint_problem(path)
    if problem is not None:
        raise UserInputError(f"--resume {resume}: not a complete checkpoint folder ({problem})")
    return path


# ----------------------------------------------------------------------------------------------------- optimizer


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    rest: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for pid, entries in state["state"].items():
        other: dict[str, Any] = {}
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{pid}.{name}"] = value.detach().contiguous().cpu()
            else:
                other[name] = value
        rest["state"][str(pid)] = other
    return tensors, rest


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {int(pid): dict(other) for pid, other in rest["state"].items()}
    for key, value in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = value
    groups = []
    for group in rest["param_groups"]:
        group = dict(group)
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    return {"state": state, "param_groups": groups}


# ---------------------------------------------------------------------------------------------------------- RNG


def _rng_state() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    py_version, py_state, py_gauss = random.getstate()
    np_state: Any = np.random.get_state(legacy=True)
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np_state
    meta = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [np_name, np.asarray(np_keys).tolist(), int(np_pos), int(np_has_gauss), float(np_gauss)],
    }
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    return meta, tensors


def _set_rng_state(meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    version, state, gauss = meta["python"]
    random.setstate((version, tuple(state), gauss))
    name, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])


# ------------------------------------------------------------------------------------------------- save / load


def _write_json(path: Path, data: Any) -> None:
    with path.open("w") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


@dataclass
class LoadedCheckpoint:
    """What a checkpoint restores besides the module and optimizer it was loaded into."""

    path: Path
    trainer: dict[str, Any]
    data_state: dict[str, Any]


def staging_dir(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f".step-{step:08d}.partial"


def begin_checkpoint(run_dir: Path, step: int) -> Path:
    """Rank 0: create an empty staging folder for step ``step`` (a stale one from a killed run is removed)."""
    stage = staging_dir(run_dir, step)
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    return stage


def write_rank_state(stage: Path, rank: int, data_state: dict[str, Any]) -> None:
    """Every rank: its data position and RNG states."""
    meta, tensors = _rng_state()
    save_file(tensors, str(stage / f"rank-{rank}.safetensors"))
    _write_json(stage / f"rank-{rank}.json", {"rng": meta, "data": data_state})


def write_main_state(
    stage: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer: dict[str, Any],
    config_yaml: str,
) -> None:
    """Rank 0: model, optimizer, trainer state and config."""
    save_model(model, str(stage / "model.safetensors"))
    tensors, rest = _flatten_optimizer(optimizer.state_dict())
    save_file(tensors, str(stage / "optimizer.safetensors"))
    _write_json(stage / "optimizer.json", rest)
    (stage / "config.yaml").write_text(config_yaml)
    # trainer.json last: `find_latest` only trusts folders that have it (and the final name).
    _write_json(stage / TRAINER_FILE, trainer)


def commit_checkpoint(run_dir: Path, step: int, keep: int | None) -> Path:
    """Rank 0, after every rank wrote: record the files' sizes, rename the staging folder into place and prune
    old checkpoints."""
    stage, final = staging_dir(run_dir, step), checkpoint_dir(run_dir, step)
    sizes = {p.name: p.stat().st_size for p in sorted(stage.iterdir()) if p.is_file()}
    _write_json(stage / SIZES_FILE, sizes)
    if final.exists():
        shutil.rmtree(final)
    os.replace(stage, final)
    if keep is not None:
        complete = sorted(p for p in final.parent.iterdir() if STEP_DIR.match(p.name))
        for old in complete[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, rank: int
) -> LoadedCheckpoint:
    """Restore model weights (strictly), optimizer state and this rank's RNG states from ``path``.

    Returns the trainer state and this rank's data position for the caller to hand to its loader.
    A file that is not safetensors (e.g. a pickle put in its place) is refused unread: UserInputError.
    """
    from safetensors import SafetensorError

    try:
        return _restore(path, model, optimizer, rank)
    except SafetensorError as err:
        raise UserInputError(
            f"checkpoint {path} holds a file that is not safetensors ({err}); checkpoints are never unpickled"
        ) from err


def _restore(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, rank: int) -> LoadedCheckpoint:
    missing, unexpected = load_model(model, str(path / "model.safetensors"), strict=False)
    if missing or unexpected:
        raise UserInputError(
            f"checkpoint {path} does not fit this model: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}; resume with the config the run was started with"
        )
    tensors = load_file(str(path / "optimizer.safetensors"))
    rest = json.loads((path / "optimizer.json").read_text())
    optimizer.load_state_dict(_unflatten_optimizer(tensors, rest))
    trainer = json.loads((path / TRAINER_FILE).read_text())
    rank_file = path / f"rank-{rank}.json"
    if not rank_file.is_file():
        raise UserInputError(
            f"checkpoint {path} has no state for rank {rank}: resume with the same number of processes"
        )
    rank_state = json.loads(rank_file.read_text())
    _set_rng_state(rank_state["rng"], load_file(str(path / f"rank-{rank}.safetensors")))
    return LoadedCheckpoint(path=path, trainer=trainer, data_state=rank_state["data"])
