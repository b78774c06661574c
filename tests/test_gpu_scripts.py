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

import pytest

from medst.model.medst import LOSS_TERMS

REPO = Path(__file__).resolve().parents[1]


def _results(output: str, tag: str) -> list[dict]:
    return [json.loads(line[len(tag) + 1 :]) for line in output.splitlines() if line.startswith(tag + " ")]


def _result(output: str, tag: str) -> dict:
    found = _results(output, tag)
    assert len(found) == 1, f"expected one {tag} line in:\n{output[-3000:]}"
    return found[0]


def test_gpu_check_sh_runs_model_and_trainer_parts_on_cpu(tmp_path: Path) -> None:
    log = tmp_path / "gpu_check.log"
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHON": sys.executable, "MEDST_GPU_LOG": str(log)}
    done = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--tiny", "--device", "cpu"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert log.read_text().strip().splitlines()[-1] == output.strip().splitlines()[-1]  # the log holds it all

    steps = {r["attention"]: r for r in _results(output, "GPU_CHECK")}
    assert set(steps) == {"masked", "grouped"}
    for model in steps.values():
        assert model["device"] == "cpu" and model["preset"] == "tiny"
        assert model["all_finite"] is True
        assert model["studies_per_step"] == 64 and model["studies_per_s"] > 0
        assert model["inference_studies_per_s"] > 0 and model["first_step_s"] > 0
        assert model["host_syncs_per_step"] == 0  # forward + backward, found by the dispatcher check
        assert set(model["last_terms"]) == {term.name for term in LOSS_TERMS}
    # The same weights, batch and seed: the two attention paths give the same first loss.
    assert steps["masked"]["loss_first"] == pytest.approx(steps["grouped"]["loss_first"], rel=1e-3)

    train = _result(output, "GPU_TRAIN_CHECK")
    assert train["device"] == "cpu"
    assert train["steps"] == 20 and train["loss_curve"][-1][0] == 20  # (step, mean loss) per log window
    losses = [loss for _, loss in train["loss_curve"]]
    assert all(math.isfinite(x) for x in losses)
    # The trainer's own loop on real shards: the first steps out of a random init fall clearly.
    assert train["loss_falls"] is True and losses[-1] < losses[0]
    assert train["studies_per_s"] > 0 and train["val"], train
    assert train["bare_step_studies_per_s"] > 0 and train["trainer_vs_bare_step"] > 0
    # --batch-size auto as on the GPU (there capped at 16 windows, here at 10): searched up from 4, all fit.
    assert train["batch_size_auto"] is True and train["batch_size"] == 10
    assert train["batch_size_trials"] == [[4, True], [8, True], [10, True]]
    assert train["mfu"] is None and train["peak_memory_GiB"] is None  # no CUDA: nothing invented

    summary = _result(output, "GPU_SUMMARY")
    assert summary["grouped_vs_masked"] == pytest.approx(
        steps["grouped"]["studies_per_s"] / steps["masked"]["studies_per_s"], abs=1e-3
    )
    assert summary["trainer"]["trainer_vs_bare_step"] == train["trainer_vs_bare_step"]
    assert summary["versions"].startswith("torch ") and summary["date"]
    assert "README_ROW | 20" in output


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
            "15",  # the top 5 varied with the load on a shared CPU; the matrix products are always in 15
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
