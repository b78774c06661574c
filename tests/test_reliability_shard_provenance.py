"""Shard provenance and honest exits (issue 14, cases 2, 8 and 11), on real tars written by `medst shard`.

A shard folder is what its plan says: the input it was built from (a fingerprint of the studies rows), the options
and every shard name of every part. Another input is refused (or replaced with --force), shard files the plan
does not name are deleted, every reader reads the plan, and training refuses an incomplete --part set.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import polars as pl
import pytest
from train_shards import make_tiny_shards

from medst.errors import UserInputError
from medst.inference.sources import image_source
from medst.schemas.shards import ShardConfig
from medst.schemas.train import PretrainConfig
from medst.shards.index import PLAN_FILE, list_entries, missing_shards, read_plan
from medst.shards.writer import write_shards
from medst.train.components import check_complete_shards

REPO = Path(__file__).resolve().parents[1]
MEDST = [sys.executable, "-m", "medst.cli"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root holding images/, seq/ (16 patients) and shards/ (4 timelines a shard, image size 128)."""
    root = tmp_path_factory.mktemp("provenance")
    make_tiny_shards(root)
    return root


def _tars(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.tar"))}


def _seq_copy(tiny: Path, dest: Path, edit: pl.Expr | None = None, rows: int | None = None) -> Path:
    df = pl.read_parquet(tiny / "seq" / "studies.parquet")
    if edit is not None:
        df = df.with_columns(edit)
    if rows is not None:
        df = df.head(rows)
    dest.mkdir(parents=True)
    df.write_parquet(dest / "studies.parquet")
    shutil.copy(tiny / "seq" / "build_report.json", dest / "build_report.json")
    return dest


def _shard(seq: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [*MEDST, "shard", str(seq), "-o", str(out), "--image-size", "128", "--samples-per-shard", "4"]
    return subprocess.run([*cmd, "--quiet", *extra], capture_output=True, text=True, cwd=REPO, timeout=300)


def test_shards_of_another_input_are_refused_and_force_replaces_them(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    shutil.copytree(tiny / "shards", out)
    before = _tars(out)
    # The same manifest after one report changed: before, "0 built, 4 kept" and the old text was trained on.
    changed = _seq_copy(
        tiny, tmp_path / "seq2", pl.when(pl.col("study_id") == "00000").then(pl.lit("new report text"))
        .otherwise(pl.col("text")).alias("text"),
    )  # fmt: skip
    proc = _shard(changed, out)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "another input" in lines[0] and "--force" in lines[0]
    assert _tars(out) == before  # refused without touching a shard
    # The same input again is still kept as it is.
    same = _shard(tiny / "seq", out)
    assert same.returncode == 0 and "0 built" in same.stdout and _tars(out) == before

    forced = _shard(changed, out, "--force")
    assert forced.returncode == 0, forced.stderr
    assert (
        read_plan(out).input_fingerprint
        != json.loads((tiny / "shards" / PLAN_FILE).read_text())["input_fingerprint"]
    )
    texts = []
    for tar_path in out.glob("*.tar"):
        with tarfile.open(tar_path) as tar:
            for m in tar.getmembers():
                if m.name.endswith(".json"):
                    texts += [s["text"] for s in json.loads(tar.extractfile(m).read())["studies"]]  # type: ignore[union-attr]
    assert "new report text" in texts


def test_leftovers_of_a_larger_build_are_removed_and_readers_read_the_plan(
    tiny: Path, tmp_path: Path
) -> None:
    out = tmp_path / "shards"
    big = _seq_copy(tiny, tmp_path / "big")
    assert _shard(big, out, "--samples-per-shard", "2").returncode == 0  # 8 shards
    assert len(_tars(out)) == 8
    (out / "my-notes.tar").write_bytes(b"not medst's")  # a file medst did not write: never deleted
    smaller = _seq_copy(tiny, tmp_path / "small", rows=20)
    proc = _shard(smaller, out, "--force")
    assert proc.returncode == 0, proc.stderr
    plan = read_plan(out)
    assert sorted(p.stem for p in out.glob("*-0*.tar")) == sorted(plan.shards)
    assert sorted(p.stem for p in (out / "index").glob("*.json")) == sorted(plan.shards)
    assert (out / "my-notes.tar").read_bytes() == b"not medst's"
    # A tar with an index entry copied in by hand is not in the plan: no reader sees it.
    shutil.copy(out / "train-000000.tar", out / "train-000077.tar")
    entry = json.loads((out / "index" / "train-000000.json").read_text())
    (out / "index" / "train-000077.json").write_text(json.dumps({**entry, "shard": "train-000077.tar"}))
    assert [e.shard for e in list_entries(out)] == [f"{n}.tar" for n in plan.shards]
    source = image_source(str(out))
    assert source.total == pl.read_parquet(smaller / "studies.parquet").height
    assert sum(1 for job in source.jobs if job.error is None) == source.total


def test_parts_combine_by_copying_and_pretrain_refuses_an_incomplete_set(tiny: Path, tmp_path: Path) -> None:
    seq = tiny / "seq"
    cfg = {"seq": seq, "image_size": 128, "samples_per_shard": 4}
    for i in range(2):  # as two machines would: each part into its own folder
        write_shards(ShardConfig(out=tmp_path / f"part{i}", part=(i, 2), **cfg), progress=False)  # type: ignore[arg-type]
    part0 = tmp_path / "part0"
    assert missing_shards(part0)
    with pytest.raises(UserInputError, match="--allow-partial"):
        check_complete_shards(PretrainConfig(shards=part0))
    check_complete_shards(PretrainConfig(shards=part0, allow_partial=True))
    proc = subprocess.run(
        [*MEDST, "pretrain", str(part0), "-o", str(tmp_path / "run"), "--config", "demo", "--steps", "1"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2 and "--allow-partial" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()  # refused before anything was written

    combined = tmp_path / "combined"
    for i in range(2):
        shutil.copytree(tmp_path / f"part{i}", combined, dirs_exist_ok=True)
    assert missing_shards(combined) == []
    assert _tars(combined) == _tars(tiny / "shards")
    rerun = _shard(seq, combined)  # refreshes summary.json and rejects.parquet for the whole set
    assert rerun.returncode == 0 and "4/4 shards complete (0 built, 4 kept)" in rerun.stdout


def test_a_patient_without_decodable_study_keeps_each_image_reason(tiny: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    shutil.copytree(tiny / "images", images)
    df = pl.read_parquet(tiny / "seq" / "studies.parquet")
    patient = df.filter(pl.col("subject_id") == "00001")
    for rel in patient["frontal_path"]:
        (images / rel).write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)  # a broken PNG
    seq = _seq_copy(tiny, tmp_path / "seq")
    (seq / "build_report.json").write_text(json.dumps({"image_root": str(images)}))
    write_shards(
        ShardConfig(seq=seq, out=tmp_path / "o", image_size=128, samples_per_shard=4), progress=False
    )
    rejects = pl.read_parquet(tmp_path / "o" / "rejects.parquet")
    per_image = rejects.filter(pl.col("item_kind") == "image")
    assert sorted(per_image["item"]) == sorted(patient["frontal_dicom_id"])
    assert all(r.startswith("frontal_") for r in per_image["reason"])
    assert rejects.filter(pl.col("reason") == "no_decodable_study").height == 1


def test_a_run_keeping_too_little_fails_with_the_likely_cause(tiny: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = _shard(tiny / "seq", tmp_path / "o", "--image-root", str(empty))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.strip()
    assert "\n" not in line and "kept 0 of" in line and "missing_file" in line and "--image-root" in line
    # More than half the frontal images unreadable: below the default share, named by reason.
    images = tmp_path / "images"
    shutil.copytree(tiny / "images", images)
    df = pl.read_parquet(tiny / "seq" / "studies.parquet")
    for rel in df["frontal_path"].to_list()[: df.height * 2 // 3]:
        (images / rel).write_bytes(b"not an image")
    proc = _shard(tiny / "seq", tmp_path / "o2", "--image-root", str(images))
    assert proc.returncode == 2 and "frontal_" in proc.stderr and "rejects.parquet" in proc.stderr
    assert (tmp_path / "o2" / "rejects.parquet").is_file()  # everything written for the user to look at
    ok = _shard(tiny / "seq", tmp_path / "o2", "--image-root", str(images), "--min-kept", "0.2")
    assert ok.returncode == 0, ok.stderr
