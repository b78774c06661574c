"""`medst shard` (2 worker processes) SIGKILLed at seeded random moments, then re-run: the shards, their index
entries and reject files are byte-identical to an uninterrupted build, and no temporary file survives.

The shard helper's own test kills a 1-process build on real DICOMs after the first file appears; this one kills
a multi-process build on the synthetic archive at a random moment after writing began, with a fresh output folder
per trial.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medst.schemas.build import BuildConfig
from medst.schemas.shards import ShardConfig
from medst.sequences.build import build_sequences
from medst.shards.writer import write_shards

REPO = Path(__file__).resolve().parents[1]
TRIALS = 3
OPTIONS = ["--image-size", "96", "--samples-per-shard", "2"]


def _outputs(folder: Path) -> dict[str, bytes]:
    """Every file a complete build must reproduce bit for bit (the summary's built/kept counts may differ)."""
    paths = [*folder.glob("*.tar"), *folder.glob("index/*.json"), *folder.glob("rejects/*.parquet")]
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(paths)}


@pytest.fixture(scope="module")
def seq_and_reference(
    synth_archive: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, float]:
    """The build-sequences output, an uninterrupted 1-process shard build of it, and that build's seconds."""
    root = tmp_path_factory.mktemp("shard_kills")
    build_sequences(BuildConfig(archive=synth_archive, out=root / "seq"), progress=False)
    started = time.perf_counter()
    write_shards(
        ShardConfig(seq=root / "seq", out=root / "ref", image_size=96, samples_per_shard=2), progress=False
    )
    return root / "seq", root / "ref", time.perf_counter() - started


def test_sigkilled_shard_builds_resume_byte_identical(
    seq_and_reference: tuple[Path, Path, float], tmp_path: Path
) -> None:
    seq, ref, build_s = seq_and_reference
    reference = _outputs(ref)
    n_shards = len([k for k in reference if k.endswith(".tar")])
    assert n_shards >= 8
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rng = random.Random(2)
    outcomes = []
    for trial in range(TRIALS):
        out = tmp_path / f"trial{trial}"
        cmd = [sys.executable, "-m", "medst.cli", "shard", str(seq), "-o", str(out), *OPTIONS, "--quiet"]
        proc = subprocess.Popen(
            [*cmd, "--workers", "2"], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        # Random moment once the workers are writing (a temporary tar or an index entry exists): between
        # shards, mid-tar, or between a rename and its index entry.
        t0 = time.monotonic()
        while proc.poll() is None and time.monotonic() - t0 < 60:
            if out.is_dir() and (any(out.glob(".*.tmp-*")) or any(out.glob("index/*.json"))):
                break
            time.sleep(0.002)
        # A fraction of an uninterrupted build's duration, so the kill lands inside the build on any machine.
        time.sleep(rng.uniform(0.0, 0.6) * build_s)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done = len(list(out.glob("index/*.json"))) if out.is_dir() else 0
        partial = len(list(out.glob(".*.tmp-*"))) if out.is_dir() else 0
        # Workers of the killed pool see their parent gone and exit; give them a moment before the re-run.
        time.sleep(0.2)
        rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        identical = _outputs(out) == reference
        outcomes.append(
            (
                trial,
                proc.returncode,
                f"{done}/{n_shards} shards indexed, {partial} temp tars at kill",
                identical,
            )
        )
        assert identical, outcomes
        assert not list(out.rglob("*.tmp-*"))
    print("shard kill trials (trial, returncode, state at kill, identical):", outcomes)
    assert any(rc == -signal.SIGKILL for _, rc, _, _ in outcomes)
