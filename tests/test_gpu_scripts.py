"""The GPU check scripts, run on the CPU with their ``--tiny`` preset.

A GPU machine is lent rarely and briefly; these scripts must not be found broken there. `gpu_check.sh --tiny
--device cpu` runs the same code paths as the paper-size GPU run (model step timing, then the trainer on shards it
builds itself) and must end with the machine-readable result lines.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _result(output: str, tag: str) -> dict:
    lines = [line for line in output.splitlines() if line.startswith(tag + " ")]
    assert len(lines) == 1, f"expected one {tag} line in:\n{output[-3000:]}"
    return json.loads(lines[0][len(tag) + 1 :])


def test_gpu_check_sh_runs_model_and_trainer_parts_on_cpu() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--tiny", "--device", "cpu"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]

    model = _result(output, "GPU_CHECK")
    assert model["device"] == "cpu" and model["preset"] == "tiny"
    assert model["all_finite"] is True
    assert model["studies_per_step"] == 64 and model["studies_per_s"] > 0
    assert set(model["last_terms"]) == {"global", "local_word", "local_patch", "temporal_fmc", "temporal_rmr"}

    train = _result(output, "GPU_TRAIN_CHECK")
    assert train["device"] == "cpu"
    assert train["steps"] == 20 and train["loss_curve"][-1][0] == 20  # (step, mean loss) per log window
    losses = [loss for _, loss in train["loss_curve"]]
    assert all(math.isfinite(x) for x in losses)
    # The trainer's own loop on real shards: the first steps out of a random init fall clearly.
    assert train["loss_falls"] is True and losses[-1] < losses[0]
    assert train["studies_per_s"] > 0 and train["val"], train
    assert train["mfu"] is None and train["peak_memory_GiB"] is None  # no CUDA: nothing invented


def test_gpu_check_profile_prints_operator_table() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "benchmarks/gpu_check.py",
            "--tiny",
            "--device",
            "cpu",
            "--steps",
            "2",
            "--profile",
            "5",
        ],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "2"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = done.stdout[done.stdout.index("GPU_CHECK") :]
    assert "aten::mm" in table or "aten::addmm" in table
    assert "Self CPU time total" in table
