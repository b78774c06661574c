"""No PHI leaves the archive: every byte of every shard, index entry and summary of a build from the synthetic
archive (whose DICOM headers carry fake PHI marked FAKEPHI) is free of that PHI and of raw subject ids."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pydicom
import pytest

from medst.schemas.shards import ShardConfig
from medst.shards.writer import write_shards

PHI_TAGS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "InstitutionName",
    "InstitutionAddress",
    "AccessionNumber",
    "ReferringPhysicianName",
    "OperatorsName",
    "PerformingPhysicianName",
    "OtherPatientIDs",
    "StationName",
)


@pytest.fixture(scope="module")
def built(synth_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from medst.schemas.build import BuildConfig
    from medst.sequences.build import build_sequences

    seq = tmp_path_factory.mktemp("phi") / "seq"
    build_sequences(BuildConfig(archive=synth_archive, out=seq), progress=False)
    out = seq.parent / "shards"
    write_shards(ShardConfig(seq=seq, out=out, samples_per_shard=8, image_size=128), progress=False)
    return seq, out


def _phi_strings(archive: Path, seq: Path) -> set[bytes]:
    needles = {b"FAKEPHI"}
    for path in sorted(archive.rglob("*.dcm"))[:400]:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for tag in PHI_TAGS:
            value = str(ds.get(tag, "") or "")
            if len(value) >= 6:
                needles.add(value.encode())
    for subject in pl.read_parquet(seq / "studies.parquet")["subject_id"].unique().to_list():
        needles.add(str(subject).encode())
    return needles


def test_no_phi_and_no_subject_id_in_any_shard_byte(synth_archive: Path, built: tuple[Path, Path]) -> None:
    seq, out = built
    needles = _phi_strings(synth_archive, seq)
    assert any(b"FAKEPHI" in n and n != b"FAKEPHI" for n in needles)  # the archive really holds planted PHI
    assert len(needles) > 20
    files = [p for p in out.rglob("*") if p.is_file() and p.suffix != ".parquet"]
    assert any(p.suffix == ".tar" for p in files) and any(p.parent.name == "index" for p in files)
    assert (out / "summary.json") in files
    for path in files:
        data = path.read_bytes()
        for needle in needles:
            assert needle not in data, f"{needle!r} found in {path.name}"
    # Parquet is compressed, so scan its decoded values: reject items/messages must not carry PHI either.
    rejects = pl.read_parquet(out / "rejects.parquet")
    text = "\n".join(str(v) for row in rejects.rows() for v in row).encode()
    for needle in needles:
        assert needle not in text
