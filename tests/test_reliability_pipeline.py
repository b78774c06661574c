"""A full small pipeline (synth -> build -> shard -> pretrain -> eval -> embed) for two guarantees:

- privacy: no byte of any output (shards, manifests, logs, checkpoints, export, eval output, embeddings, reports)
  carries the PHI `medst synth` plants in the DICOM headers, nor a raw DICOM header dump;
- kills: `medst pretrain` SIGKILLed at random moments (seeded) and re-run with ``--resume latest`` ends with weights
  bitwise identical to the uninterrupted run.
"""

from __future__ import annotations

import gzip
import io
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl
import pydicom
import pytest
from typer.testing import CliRunner

from medst.cli.app import app
from medst.eval.run import evaluate
from medst.schemas.build import BuildConfig
from medst.schemas.eval import EvalConfig
from medst.schemas.shards import ShardConfig
from medst.schemas.train import resolve_config
from medst.sequences.build import build_sequences
from medst.shards.writer import write_shards
from medst.train.checkpoint import find_latest
from medst.train.loop import pretrain

REPO = Path(__file__).resolve().parents[1]
STEPS = 8
KILL_TRIALS = 3

# Raw header dumps: pydicom's repr of a dataset names elements by tag and keyword.
HEADER_DUMP_MARKERS = [
    b"(0010,0010)", b"(0010, 0010)", b"(0010,0030)", b"(0010, 0030)", b"(0008,0080)", b"(0008, 0080)",
    b"(0008,0050)", b"(0008, 0050)", b"PatientName", b"PatientBirthDate", b"InstitutionName", b"AccessionNumber",
    b"ReferringPhysicianName",
]  # fmt: skip


def _train_options(shards: Path, out: Path, text_model: Path, **extra: object) -> dict[str, object]:
    return {
        "shards": shards, "out": out, "steps": STEPS, "batch_size": 2, "ckpt_every": 2, "val_every": 1000,
        "log_every": 2, "num_workers": 0, "device": "cpu", "progress": False, "text_model": text_model, **extra,
    }  # fmt: skip


@pytest.fixture(scope="module")
def pipe(synth_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from medst.model.config import ModelConfig
    from medst.model.text import build_demo_text_model
    from medst.train.components import training_texts

    root = tmp_path_factory.mktemp("pipe")
    seq, shards, run = root / "seq", root / "shards", root / "run"
    build_sequences(BuildConfig(archive=synth_archive, out=seq, read_headers="always"), progress=False)
    write_shards(ShardConfig(seq=seq, out=shards, image_size=128, samples_per_shard=4), progress=False)
    text = ModelConfig.preset("tiny").text
    # One text model for every run compared bitwise (a run building its own vocabulary may order ties
    # differently).
    text_model = build_demo_text_model(
        training_texts(shards), root / "text_model", vocab_size=text.vocab_size, hidden=text.hidden,
        layers=text.layers, heads=text.heads, max_length=text.max_length,
    )  # fmt: skip
    started = time.perf_counter()
    result = pretrain(resolve_config("demo", _train_options(shards, run, text_model)))
    train_s = time.perf_counter() - started
    evaluate(
        EvalConfig(
            run=run, data=synth_archive / "benchmarks", mimic_root=synth_archive, shards=shards,
            out=root / "eval", bootstrap=20, device="cpu", progress=False, probe_max_epochs=3,
        ),
        skip_missing=True,
    )  # fmt: skip
    runner = CliRunner()
    res = runner.invoke(
        app, ["embed", str(shards), "-o", str(root / "embed" / "shards.parquet"), "-m", str(run), "--quiet",
              "--device", "cpu", "--workers", "1"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    lines = root / "lines.txt"
    lines.write_text("small left pleural effusion\nno pneumothorax\n")
    res = runner.invoke(
        app, ["embed", "--text", str(lines), "-o", str(root / "embed" / "texts.parquet"), "-m", str(run),
              "--quiet", "--device", "cpu"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    return {"root": root, "seq": seq, "shards": shards, "run": run, "text_model": text_model,
            "sha": result.weights_sha256, "train_s": train_s}  # fmt: skip


# -- kills --------------------------------------------------------------------------------------------------


def test_pretrain_sigkilled_at_random_moments_resumes_to_identical_weights(
    pipe: dict[str, Any], tmp_path: Path
) -> None:
    rng = random.Random(8)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    outcomes = []
    for trial in range(KILL_TRIALS):
        out = tmp_path / f"trial{trial}"
        cmd = [sys.executable, "-m", "medst.cli", "pretrain", str(pipe["shards"]), "-o", str(out), "--config",
               "demo", "--steps", str(STEPS), "--batch-size", "2", "--text-model", str(pipe["text_model"]),
               "--ckpt-every", "2", "--val-every", "1000", "--num-workers", "0", "--device", "cpu",
               "--no-progress", "--resume", "latest"]  # fmt: skip
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            # Once the run has started (its config is written), kill it at a random moment: during model
            # building, between steps, or while a checkpoint is being written.
            deadline = time.monotonic() + 120
            while not (out / "config.yaml").is_file() and proc.poll() is None:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            # A fraction of the uninterrupted run's duration, so the kill lands inside the run on any machine.
            time.sleep(rng.uniform(0.05, 0.95) * pipe["train_s"])
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait()
        latest = find_latest(out)
        stopped = latest.name if latest else "no checkpoint"
        resumed = pretrain(
            resolve_config("demo", _train_options(pipe["shards"], out, pipe["text_model"], resume="latest"))
        )
        outcomes.append((trial, proc.returncode, stopped, resumed.weights_sha256 == pipe["sha"]))
        assert resumed.steps == STEPS
        assert resumed.weights_sha256 == pipe["sha"], outcomes
        assert not list(out.rglob("*.tmp*")), "a temporary checkpoint survived the resumed run"
    print("pretrain kill trials (trial, returncode, latest checkpoint at kill, identical):", outcomes)
    assert any(rc == -signal.SIGKILL for _, rc, _, _ in outcomes)


# -- privacy ------------------------------------------------------------------------------------------------


def _planted_phi(archive: Path) -> set[bytes]:
    """Every PHI value `medst synth` wrote into the DICOM headers of the archive (names, birth dates, accession
    numbers, institution, physicians), as bytes; plus the marker."""
    values: set[str] = {"FAKEPHI"}
    for path in sorted((archive / "files").rglob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for keyword in ("PatientName", "PatientBirthDate", "AccessionNumber", "InstitutionName",
                        "ReferringPhysicianName", "InstitutionAddress", "OperatorsName", "PatientAddress"):  # fmt: skip
            value = str(ds.get(keyword) or "").strip()
            if value:
                values.add(value)
    return {v.encode() for v in values}


def _views(path: Path) -> list[bytes]:
    """The bytes of a file plus decoded views where the raw bytes could hide text (compressed Parquet pages,
    gzip)."""
    raw = path.read_bytes()
    views = [raw]
    if path.suffix == ".parquet":
        frame = pl.read_parquet(io.BytesIO(raw))
        views.append(("\n".join(frame.columns) + "\n" + frame.write_ndjson()).encode())
    elif path.suffix == ".gz":
        views.append(gzip.decompress(raw))
    return views


def test_no_phi_and_no_header_dump_in_any_output(pipe: dict[str, Any], synth_archive: Path) -> None:
    phi = _planted_phi(synth_archive)
    assert len(phi) > 10  # names, dates, accessions really were planted
    needles = [p.lower() for p in phi] + [m.lower() for m in HEADER_DUMP_MARKERS]
    # The scanner itself finds what it looks for: in a raw DICOM and in a header dump.
    dicom = next((synth_archive / "files").rglob("*.dcm"))
    assert any(n in dicom.read_bytes().lower() for n in needles)
    assert any(n in repr(pydicom.dcmread(dicom, stop_before_pixels=True)).encode().lower() for n in needles)
    files = sorted(p for p in pipe["root"].rglob("*") if p.is_file() and not p.is_symlink())
    kinds = {p.suffix for p in files}
    assert {".tar", ".parquet", ".json", ".safetensors", ".yaml", ".png"} <= kinds, kinds
    scanned_bytes = raw_bytes = 0
    hits = []
    for path in files:
        raw_bytes += path.stat().st_size
        for view in _views(path):
            scanned_bytes += len(view)
            low = view.lower()
            hits += [(str(path.relative_to(pipe["root"])), n.decode()) for n in needles if n in low]
    print(
        f"PHI scan: {len(files)} files, {raw_bytes} bytes on disk, {scanned_bytes} bytes scanned with decoded "
        f"Parquet/gzip views; kinds {sorted(kinds)}"
    )
    assert not hits, hits[:20]
