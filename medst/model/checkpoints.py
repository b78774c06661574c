"""The layout of a training run's checkpoint folders, read by the trainer (resume) and by `medst.load`
(a run's newest checkpoint): ``RUN/checkpoints/step-NNNNNNNN/`` with the files below, complete only when every
one is there at the size recorded in ``files.json``. Writing checkpoints is the trainer's (`medst.train.checkpoint`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

STEP_DIR = re.compile(r"^step-(\d{8})$")
TRAINER_FILE = "trainer.json"
SIZES_FILE = "files.json"
#: Files rank 0 writes into every checkpoint (each rank adds ``rank-R.json`` and ``rank-R.safetensors``).
MAIN_FILES = ("model.safetensors", "optimizer.safetensors", "optimizer.json", "config.yaml", TRAINER_FILE)


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step-{step:08d}"


def checkpoint_problem(path: Path) -> str | None:
    """None when the checkpoint folder ``path`` holds every file a resume reads, at the size it was saved with
    (``files.json``; older checkpoints without it are checked by name only); otherwise what is wrong, naming
    the file (``"no model.safetensors"``, ``"optimizer.safetensors has 512 bytes, 2048 when saved"``)."""
    trainer_file = path / TRAINER_FILE
    if not trainer_file.is_file():
        return f"no {TRAINER_FILE}"
    try:
        trainer = json.loads(trainer_file.read_text())
        world_size = int(trainer.get("world_size", 1))
    except (OSError, ValueError, TypeError, AttributeError):
        return f"{TRAINER_FILE} is unreadable"
    ranks = [f"rank-{r}.{ext}" for r in range(world_size) for ext in ("json", "safetensors")]
    for name in (*MAIN_FILES, *ranks):
        if not (path / name).is_file():
            return f"no {name}"
    sizes_file = path / SIZES_FILE
    if not sizes_file.is_file():
        return None
    try:
        sizes = {str(k): int(v) for k, v in json.loads(sizes_file.read_text()).items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return f"{SIZES_FILE} is unreadable"
    for name, size in sorted(sizes.items()):
        file = path / name
        if not file.is_file():
            return f"no {name}"
        if file.stat().st_size != size:
            return f"{name} has {file.stat().st_size} bytes, {size} when saved"
    return None


def step_dirs(run_dir: Path) -> list[tuple[int, Path]]:
    """Every ``step-N`` folder of the run, newest first (complete or not)."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name)) and p.is_dir()]
    return sorted(found, reverse=True)


def find_latest(run_dir: Path, warn: Callable[[str], None] | None = None) -> Path | None:
    """The complete checkpoint (`checkpoint_problem`) with the highest step under ``run_dir/checkpoints``, or
    None. ``warn`` is called with one line for each newer checkpoint skipped as incomplete."""
    for _, path in step_dirs(run_dir):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        if warn is not None:
            warn(f"skipping incomplete checkpoint {path}: {problem}")
    return None
