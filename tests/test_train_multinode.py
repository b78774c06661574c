"""The multi-node recipe, on one machine: two `torchrun` agents (one per "node") meet through c10d rendezvous.

Each agent starts one process (gloo on the CPU), exactly what `examples/slurm/pretrain.sbatch` does with one agent
per node. The run stopped after 2 steps and resumed by the same two agents ends with the weights of an unbroken run.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from train_shards import make_tiny_shards

TORCHRUN = Path(sys.executable).with_name("torchrun")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _two_nodes(shards: Path, out: Path, *extra: str) -> None:
    """Run `medst pretrain` as two single-process torchrun agents sharing one c10d rendezvous endpoint."""
    port = _free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [
        str(TORCHRUN), "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
        "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", f"medst-{port}", "--max-restarts", "0",
        "-m", "medst.cli", "pretrain", str(shards), "-o", str(out), "--config", "demo", "--steps", "4",
        "--batch-size", "2", "--device", "cpu", "--num-workers", "0", "--no-progress", "--ckpt-every", "2",
        "--val-every", "4", *extra,
    ]  # fmt: skip
    procs = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    for proc in procs:
        try:
            output, _ = proc.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
        assert proc.returncode == 0, output[-2000:]


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed beside this Python")
def test_two_torchrun_nodes_train_and_resume_like_one_unbroken_run(tmp_path: Path) -> None:
    from medst.model.io import load_model
    from medst.train.loop import weights_digest

    shards = make_tiny_shards(tmp_path / "data")
    unbroken, resumed = tmp_path / "unbroken", tmp_path / "resumed"
    _two_nodes(shards, unbroken)
    _two_nodes(shards, resumed, "--max-steps-this-invocation", "2")
    assert not (resumed / "export").exists()
    _two_nodes(shards, resumed, "--resume", "latest")

    for run in (unbroken, resumed):
        trainer = json.loads((run / "checkpoints" / "step-00000004" / "trainer.json").read_text())
        assert trainer["world_size"] == 2 and trainer["step"] == 4
        ranks = {p.name for p in (run / "checkpoints" / "step-00000004").iterdir()}
        assert ranks >= {"rank-0.json", "rank-1.json"}
    assert weights_digest(load_model(resumed / "export")) == weights_digest(load_model(unbroken / "export"))
