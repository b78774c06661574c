"""`medst shard` on real images: byte-identical rebuilds, kill/resume, parts, rejects, no PHI, sample contents."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import cv2
import numpy as np
import polars as pl
import pytest
from test_shards_helpers import build_seq

from medst.errors import UserInputError
from medst.schemas.records import TimelineSample
from medst.schemas.shards import ShardConfig
from medst.shards.writer import write_shards

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def seq(realdata: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_seq(realdata, tmp_path_factory.mktemp("seq"), max_patients=6)


def _tars(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.tar"))}


def _build(seq: Path, out: Path, **kw: object) -> None:
    write_shards(ShardConfig(seq=seq, out=out, samples_per_shard=2, **kw), progress=False)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def reference(seq: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ref")
    _build(seq, out)
    return out


def test_two_builds_and_worker_counts_are_byte_identical(seq: Path, reference: Path, tmp_path: Path) -> None:
    _build(seq, tmp_path / "b", workers=2)
    ref = _tars(reference)
    assert len(ref) >= 4
    assert _tars(tmp_path / "b") == ref
    for name in ref:
        a = json.loads((reference / "index" / name.replace(".tar", ".json")).read_text())
        b = json.loads((tmp_path / "b" / "index" / name.replace(".tar", ".json")).read_text())
        assert a == b


def test_tar_members_are_normalised_and_ordered(reference: Path) -> None:
    for path in reference.glob("*.tar"):
        with tarfile.open(path) as tar:
            members = tar.getmembers()
        assert all(
            m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" and m.gname == "" for m in members
        )
        assert all(m.mode == 0o644 for m in members)
        keys = [m.name.split(".", 1)[0] for m in members]
        assert keys == sorted(keys)
        # within a sample: json first, then s00.frontal, s00.lateral, s01.frontal, ...
        for key in dict.fromkeys(keys):
            suffixes = [m.name.split(".", 1)[1] for m in members if m.name.startswith(key + ".")]
            assert suffixes[0] == "json"
            assert suffixes[1:] == sorted(suffixes[1:])


def test_samples_hold_ordered_timelines_and_decodable_images(reference: Path) -> None:
    n_lateral = 0
    for path in sorted(reference.glob("*.tar")):
        with tarfile.open(path) as tar:
            files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
        for name, data in files.items():
            if not name.endswith(".json"):
                continue
            sample = TimelineSample.model_validate_json(data)
            assert name == f"{sample.key}.json" and len(sample.key) == 16
            offsets = [s.day_offset for s in sample.studies]
            assert offsets == sorted(offsets)
            for st in sample.studies:
                img = cv2.imdecode(
                    np.frombuffer(files[f"{sample.key}.s{st.index:02d}.frontal.jpg"], np.uint8), 0
                )
                assert img is not None and max(img.shape) <= 512
                assert (f"{sample.key}.s{st.index:02d}.lateral.jpg" in files) == st.has_lateral
                n_lateral += st.has_lateral
    assert n_lateral >= 2


def test_bad_frontal_dropped_bad_lateral_kept_frontal_only(reference: Path) -> None:
    rejects = pl.read_parquet(reference / "rejects.parquet")
    reasons = dict(zip(rejects["item"], rejects["reason"], strict=True))
    assert reasons["dcmcorrupt"].startswith("frontal_")
    assert reasons["dcmbad"].startswith("lateral_")
    summary = json.loads((reference / "summary.json").read_text())
    assert summary["complete"] and summary["rejects"] == 2
    # the DICOM patient keeps its 2 decodable studies; the one with the bad lateral is frontal-only
    assert (reference / "summary.png").stat().st_size > 1000


def test_parts_are_disjoint_and_cover_the_full_build(seq: Path, reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "parts"
    built = []
    for i in range(3):
        _build(seq, out, part=(i, 3))
        built.append({p.name for p in out.glob("*.tar")})
    firsts = [built[0], built[1] - built[0], built[2] - built[1]]
    assert all(firsts) and sum(len(s) for s in firsts) == len(built[2])
    assert _tars(out) == _tars(reference)
    assert json.loads((out / "summary.json").read_text())["complete"]


def test_rerun_skips_complete_shards_and_force_rebuilds(seq: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    _build(seq, out)
    first = _tars(out)
    (out / "train-000000.tar").unlink()  # tar gone -> incomplete -> rebuilt; others kept
    stamp = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    summary = write_shards(ShardConfig(seq=seq, out=out, samples_per_shard=2), progress=False)
    assert summary.built_now == 1 and summary.complete
    assert all(p.stat().st_mtime_ns == stamp[p.name] for p in out.glob("*.tar") if p.name in stamp)
    summary = write_shards(ShardConfig(seq=seq, out=out, samples_per_shard=2, force=True), progress=False)
    assert summary.built_now == summary.expected_shards
    assert _tars(out) == first


def test_missing_input_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match=r"studies\.parquet"):
        write_shards(ShardConfig(seq=tmp_path, out=tmp_path / "o"), progress=False)
    proc = subprocess.run(
        [sys.executable, "-m", "medst.cli", "shard", str(tmp_path), "-o", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 2 and "studies.parquet" in proc.stderr and "Traceback" not in proc.stderr


def test_killed_builds_resume_to_identical_shards(seq: Path, reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "medst.cli", "shard", str(seq), "-o", str(out), "--samples-per-shard", "2"]
    cmd += ["--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rng = random.Random(4)
    saw_partial = False
    for _ in range(4):
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Wait until the build is writing (some file appears), then kill at a random moment after that.
        t0 = time.monotonic()
        while proc.poll() is None and time.monotonic() - t0 < 30:
            if (out.is_dir() and any(out.glob(".*.tmp-*"))) or any(out.glob("*.tar")):
                break
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        saw_partial |= any(out.glob(".*.tmp-*")) or len(list(out.glob("index/*.json"))) < len(
            _tars(reference)
        )
    assert saw_partial
    subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True)
    assert _tars(out) == _tars(reference)
    assert not list(out.rglob("*.tmp-*"))
    assert json.loads((out / "summary.json").read_text())["complete"]


def test_png_format_and_bad_part(seq: Path, tmp_path: Path) -> None:
    out = tmp_path / "png"
    write_shards(
        ShardConfig(seq=seq, out=out, samples_per_shard=8, format="png", image_size=96), progress=False
    )
    with tarfile.open(next(out.glob("train-*.tar"))) as tar:
        names = [m.name for m in tar.getmembers()]
        image = next(n for n in names if not n.endswith(".json"))
        img = cv2.imdecode(np.frombuffer(tar.extractfile(image).read(), np.uint8), 0)  # type: ignore[union-attr]
    assert image.endswith(".png") and not any(n.endswith(".jpg") for n in names)
    assert img is not None and max(img.shape) == 96
    proc = subprocess.run(
        [sys.executable, "-m", "medst.cli", "shard", str(seq), "-o", str(tmp_path / "x"), "--part", "3/2"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 2 and "part" in proc.stderr and "Traceback" not in proc.stderr
