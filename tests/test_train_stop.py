"""Stopping and resuming a run as a user or a cluster does it: SIGTERM / SIGINT to a real `medst pretrain` process
(one process, and one rank of two), ``--resume latest`` with nothing else, damaged checkpoints."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from train_shards import make_tiny_shards
from typer.testing import CliRunner

from medst.cli.app import app
from medst.model.io import load_model
from medst.schemas.train import resolve_config
from medst.train.checkpoint import checkpoint_problem, find_latest
from medst.train.loop import pretrain, weights_digest

REPO = Path(__file__).resolve().parents[1]
STEPS = 12  # several times the step or two a signal needs to land, so the run is always stopped mid-way
WAIT_S = 180  # generous: a hung process fails the test instead of hanging it


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_shards(tmp_path_factory.mktemp("stop_data"), patients=8, val_patients=2)


@pytest.fixture(scope="module")
def text_model(shards: Path) -> Path:
    """One text model for every run compared bitwise (a run building its own may order vocabulary ties
    differently)."""
    from medst.model.config import ModelConfig
    from medst.model.text import build_demo_text_model
    from medst.train.components import training_texts

    text = ModelConfig.preset("tiny").text
    return build_demo_text_model(
        training_texts(shards), shards.parent / "text_model", vocab_size=text.vocab_size, hidden=text.hidden,
        layers=text.layers, heads=text.heads, max_length=text.max_length,
    )  # fmt: skip


def _recipe(shards: Path, text_model: Path, folder: Path) -> Path:
    """A config file as a user writes one: the demo preset, logging every step, rare checkpoints."""
    path = folder / "recipe.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "preset": "demo",
                "shards": str(shards),
                "text_model": str(text_model),
                "steps": STEPS,
                "batch_size": 2,
                "log_every": 1,
                "ckpt_every": 1000,
                "val_every": None,
                "num_workers": 0,
                "device": "cpu",
                "progress": False,
            }
        )
    )
    return path


def _unbroken_digest(recipe: Path, out: Path) -> str:
    return pretrain(resolve_config(recipe, {"out": out, "export": False})).weights_sha256


def _wait_for_a_step(proc: subprocess.Popen[str], run: Path) -> None:
    """Until the run has logged its first training step (so the signal lands inside the training loop)."""
    deadline = time.monotonic() + WAIT_S
    metrics = run / "metrics.jsonl"
    while not (metrics.is_file() and '"train"' in metrics.read_text()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run logged no step"
        time.sleep(0.02)


def test_sigterm_saves_a_checkpoint_and_resume_latest_alone_ends_bitwise_identical(
    shards: Path, text_model: Path, tmp_path: Path
) -> None:
    recipe = _recipe(shards, text_model, tmp_path)
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "medst.cli",
        "pretrain",
        str(shards),
        "-o",
        str(run),
        "--config",
        str(recipe),
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_a_step(proc, run)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=WAIT_S)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    saved = find_latest(run)
    assert saved is not None and checkpoint_problem(saved) is None
    step = json.loads((saved / "trainer.json").read_text())["step"]
    assert 1 <= step < STEPS
    assert f"stopped by SIGTERM at step {step}/{STEPS}" in out and "--resume latest" in out
    assert "Traceback" not in err
    assert not list((run / "checkpoints").glob(".*"))  # no staging folder left behind
    assert not (run / "export").exists()  # a stopped run is not exported as if it were finished

    # `--resume latest` alone: the run's config (shards, recipe) comes from the run folder.
    resumed = CliRunner().invoke(app, ["pretrain", "-o", str(run), "--resume", "latest"])
    assert resumed.exit_code == 0, resumed.output
    assert f"done: {STEPS}/{STEPS} steps" in resumed.output
    assert weights_digest(load_model(run / "export")) == _unbroken_digest(recipe, tmp_path / "unbroken")


def test_a_second_signal_during_the_stop_does_not_cut_the_checkpoint_short(
    shards: Path, text_model: Path, tmp_path: Path
) -> None:
    recipe = _recipe(shards, text_model, tmp_path)
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "medst.cli",
        "pretrain",
        str(shards),
        "-o",
        str(run),
        "--config",
        str(recipe),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_a_step(proc, run)
        proc.send_signal(signal.SIGINT)  # Ctrl-C...
        assert proc.stderr is not None
        # Two signals sent at once arrive as one: the second goes once the first was taken.
        before = [proc.stderr.readline()]
        while before[-1] and "SIGINT received" not in before[-1]:
            before.append(proc.stderr.readline())
        assert "SIGINT received" in before[-1], before
        proc.send_signal(signal.SIGINT)  # ...pressed again while the last step ends and the checkpoint saves
        out, err = proc.communicate(timeout=WAIT_S)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGINT, err
    assert "SIGINT again" in err and "Traceback" not in err
    saved = find_latest(run)
    assert saved is not None and checkpoint_problem(saved) is None
    assert "stopped by SIGINT" in out


def test_sigterm_to_the_whole_job_with_loader_workers_still_saves(
    shards: Path, text_model: Path, tmp_path: Path
) -> None:
    # A scheduler's preemption (and Ctrl-C in a terminal) signals every process of the job: the fork server and
    # the loader workers too. They leave it to the trainer, which still needs batches to end its step.
    recipe = _recipe(shards, text_model, tmp_path)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "medst.cli", "pretrain", str(shards), "-o", str(run), "--config", str(recipe),
           "--num-workers", "2"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _wait_for_a_step(proc, run)
        os.killpg(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=WAIT_S)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    saved = find_latest(run)
    assert saved is not None and checkpoint_problem(saved) is None
    assert "stopped by SIGTERM" in out


def test_resume_refuses_a_changed_recipe_by_option_name_and_needs_shards_only_for_a_new_run(
    shards: Path, text_model: Path, tmp_path: Path
) -> None:
    recipe = _recipe(shards, text_model, tmp_path)
    run = tmp_path / "run"
    pretrain(
        resolve_config(recipe, {"out": run, "steps": 3, "max_steps_this_invocation": 1, "export": False})
    )
    runner = CliRunner()
    refused = runner.invoke(app, ["pretrain", "-o", str(run), "--resume", "latest", "--lr", "0.5"])
    assert refused.exit_code == 2
    assert refused.stderr.strip().splitlines() == [
        f"error: --lr 0.5 differs from the run's recipe (lr: 0.0005 in {run / 'config.yaml'}); "
        "resume without --lr, or start a new run with a new -o folder"
    ]
    # Options that cannot change the result may differ: one more step, with a checkpoint after it.
    more = runner.invoke(
        app,
        [
            "pretrain",
            "-o",
            str(run),
            "--resume",
            "latest",
            "--max-steps-this-invocation",
            "1",
            "--ckpt-every",
            "1",
        ],
    )
    assert more.exit_code == 0, more.output
    assert "stopped: 2/3 steps" in more.output
    # The per-invocation limit stored in RUN/config.yaml by that call does not carry over to the next one.
    assert yaml.safe_load((run / "config.yaml").read_text())["max_steps_this_invocation"] == 1
    rest = runner.invoke(app, ["pretrain", "-o", str(run), "--resume", "latest"])
    assert rest.exit_code == 0, rest.output
    assert "done: 3/3 steps" in rest.output
    fresh = runner.invoke(app, ["pretrain", "-o", str(tmp_path / "new"), "--resume", "latest"])
    assert fresh.exit_code == 2
    assert fresh.stderr.startswith("error: missing argument SHARDS") and len(fresh.stderr.splitlines()) == 1


def test_resume_latest_skips_incomplete_checkpoints_with_a_warning(shards: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    options = {"shards": shards, "out": run, "steps": 3, "batch_size": 2, "ckpt_every": 1, "val_every": None,
               "num_workers": 0, "device": "cpu", "progress": False, "export": False}  # fmt: skip
    unbroken = pretrain(resolve_config("demo", options))
    step2, step3 = (run / "checkpoints" / f"step-0000000{i}" for i in (2, 3))
    (step3 / "model.safetensors").unlink()  # a partial copy, a cleaned-up disk...
    runner = CliRunner()
    resumed = runner.invoke(app, ["pretrain", "-o", str(run), "--resume", "latest"])
    assert resumed.exit_code == 0, resumed.output
    assert f"warning: skipping incomplete checkpoint {step3}: no model.safetensors" in resumed.stderr
    assert f"resumed from {step2} at step 2" in resumed.output
    assert checkpoint_problem(step3) is None  # step 3 trained again and saved whole
    from safetensors.torch import load_model as load_weights

    from medst.model.building import build_model

    model = build_model(resolve_config(run / "config.yaml"), run / "text_model")
    load_weights(model, str(step3 / "model.safetensors"))
    assert weights_digest(model) == unbroken.weights_sha256

    # A file cut short (its size differs from the one recorded at save time) is incomplete too; with no
    # complete checkpoint left the run is refused in one line instead of silently starting over.
    for path in (run / "checkpoints").iterdir():
        optimizer = path / "optimizer.safetensors"
        optimizer.write_bytes(optimizer.read_bytes()[:100])
    refused = runner.invoke(app, ["pretrain", "-o", str(run), "--resume", "latest"])
    assert refused.exit_code == 2
    assert refused.stderr.strip().splitlines()[-1] == (
        f"error: --resume latest: no complete checkpoint in {run / 'checkpoints'} (step-00000003: "
        f"optimizer.safetensors has 100 bytes, {_saved_size(step3)} when saved); "
        "resume from a copy of the run that has one, or give a new -o folder"
    )


def _saved_size(checkpoint: Path) -> int:
    return int(json.loads((checkpoint / "files.json").read_text())["optimizer.safetensors"])


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rank(rank: int, world_size: int, port: int, recipe: str, out: str, resume: str | None) -> None:
    # What torchrun sets for each process.
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
    )  # fmt: skip
    import torch

    torch.set_num_threads(1)
    summary = pretrain(resolve_config(Path(recipe), {"out": out, "resume": resume, "export": False}))
    Path(out, f"summary-rank{rank}-{resume}.json").write_text(summary.model_dump_json())


def _join(ranks: Any) -> None:
    """Until every rank has ended (`join` returns as soon as one has); raises if one failed."""
    deadline = time.monotonic() + WAIT_S
    while not ranks.join(timeout=5):
        assert time.monotonic() < deadline, "the ranks did not end"


def test_sigterm_to_one_rank_stops_every_rank_at_the_same_step_and_the_job_resumes(
    shards: Path, text_model: Path, tmp_path: Path
) -> None:
    import torch.multiprocessing as mp

    recipe = _recipe(shards, text_model, tmp_path)
    run = tmp_path / "run"
    ranks = mp.spawn(_rank, args=(2, _free_port(), str(recipe), str(run), None), nprocs=2, join=False)
    try:
        deadline = time.monotonic() + WAIT_S
        metrics = run / "metrics.jsonl"
        while not (metrics.is_file() and '"train"' in metrics.read_text()):
            assert all(p.is_alive() for p in ranks.processes), "a rank ended before it could be signalled"
            assert time.monotonic() < deadline, "the run logged no step"
            time.sleep(0.02)
        os.kill(ranks.processes[1].pid, signal.SIGTERM)  # one node of the job preempted
        _join(ranks)
    finally:
        for process in ranks.processes:
            process.kill()
    stopped = [json.loads((run / f"summary-rank{r}-None.json").read_text()) for r in range(2)]
    assert [s["stop_signal"] for s in stopped] == [signal.SIGTERM, signal.SIGTERM]
    step = stopped[0]["steps"]
    assert stopped[1]["steps"] == step and 1 <= step < STEPS
    saved = find_latest(run)
    assert saved is not None and saved.name == f"step-{step:08d}" and checkpoint_problem(saved) is None
    assert {"rank-0.json", "rank-1.json", "rank-0.safetensors", "rank-1.safetensors"} <= {
        p.name for p in saved.iterdir()
    }

    resumed_ranks = mp.spawn(
        _rank, args=(2, _free_port(), str(recipe), str(run), "latest"), nprocs=2, join=False
    )
    _join(resumed_ranks)
    resumed = [json.loads((run / f"summary-rank{r}-latest.json").read_text()) for r in range(2)]
    assert resumed[0]["steps"] == resumed[1]["steps"] == STEPS
    # (Bitwise equality with an unbroken run is pinned on one process above; a third pair of ranks costs a minute.)
    assert resumed[0]["weights_sha256"] == resumed[1]["weights_sha256"]
