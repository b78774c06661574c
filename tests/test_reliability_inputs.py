"""Bad inputs salted into a synthetic archive: build-sequences then shard finish, each bad item is a reject with
its exact reason code, every good study is still built unchanged, and the accounting identities hold."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import polars as pl
import pytest
from salting import Salt, copy_dicom_release, salt_archive
from typer.testing import CliRunner

from medst.cli.app import app
from medst.schemas.build import BuildConfig
from medst.schemas.shards import DEFAULT_KEY_SALT, ShardConfig
from medst.sequences.build import build_sequences
from medst.shards.assign import pseudonym
from medst.shards.writer import write_shards

# case -> (stage that rejects it, item kind, reason code); None: the item is valid and must be built.
EXPECTED: dict[str, tuple[str, str, str] | None] = {
    "zero_length_dicom": ("build-sequences", "image", "not_dicom"),
    "garbage_bytes_dcm": ("build-sequences", "image", "not_dicom"),
    "truncated_in_header": ("build-sequences", "image", "not_dicom"),
    "truncated_in_pixels": ("build-sequences", "image", "truncated_pixel_data"),
    "no_pixel_data": ("build-sequences", "image", "no_pixel_data"),
    "unknown_transfer_syntax": ("shard", "image", "frontal_unsupported_transfer_syntax"),
    "pixel_data_shorter_than_rows_x_columns": ("build-sequences", "image", "truncated_pixel_data"),
    "rgb_image": None,  # a legal DICOM: converted to grey and built
    "signed_pixels": None,  # a legal DICOM: modality LUT applied and built
    "multi_frame": ("shard", "image", "frontal_multi_frame"),
    "non_utf8_report": None,  # read with the declared cp1252 fallback; the report's words still train
    "binary_report": ("build-sequences", "report", "undecodable_report"),
    "empty_report": ("build-sequences", "report", "empty_report"),
    "metadata_missing_fields": ("build-sequences", "row", "malformed_row"),
    "metadata_malformed_fields": ("build-sequences", "row", "malformed_row"),
    "duplicate_dicom_id": ("build-sequences", "row", "duplicate_row"),
    "image_listed_in_two_patients": ("build-sequences", "row", "duplicate_row"),
    "listed_but_missing_file": ("build-sequences", "image", "missing_file"),
}


def _build(root: Path, out: Path) -> dict:
    build_sequences(BuildConfig(archive=root, out=out, read_headers="always"), progress=False)
    return json.loads((out / "build_report.json").read_text())


def _shard(seq: Path, out: Path) -> None:
    write_shards(ShardConfig(seq=seq, out=out, image_size=64, samples_per_shard=8), progress=False)


@pytest.fixture(scope="module")
def runs(synth_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    tmp = tmp_path_factory.mktemp("salted")
    salts = salt_archive(synth_archive, tmp / "salted")
    clean = copy_dicom_release(synth_archive, tmp / "clean")
    out: dict[str, object] = {"salts": salts, "tmp": tmp}
    for name, root in (("salted", tmp / "salted"), ("clean", clean)):
        out[f"{name}_report"] = _build(root, tmp / f"{name}_seq")
        _shard(tmp / f"{name}_seq", tmp / f"{name}_shards")
    return out


def _rejects(folder: Path) -> pl.DataFrame:
    return pl.read_parquet(folder / "rejects.parquet")


def _shard_studies(folder: Path) -> dict[str, dict]:
    """study_key -> the study's JSON entry, plus its frontal image bytes under 'frontal_bytes'."""
    out: dict[str, dict] = {}
    for tar_path in sorted(folder.glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
        for name, data in members.items():
            if not name.endswith(".json"):
                continue
            key = name.removesuffix(".json")
            for study in json.loads(data)["studies"]:
                frontal = [
                    v for n, v in members.items() if n.startswith(f"{key}.s{study['index']:02d}.frontal")
                ]
                out[study["study_key"]] = {**study, "frontal_bytes": frontal[0] if frontal else b""}
    return out


def test_every_case_is_salted_once(runs: dict[str, object]) -> None:
    salts: list[Salt] = runs["salts"]  # type: ignore[assignment]
    assert sorted(s.case for s in salts) == sorted(EXPECTED)
    assert len({s.study_id for s in salts}) == len(salts)


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_bad_item_is_a_reject_with_its_reason(runs: dict[str, object], case: str) -> None:
    tmp: Path = runs["tmp"]  # type: ignore[assignment]
    salt = next(s for s in runs["salts"] if s.case == case)  # type: ignore[attr-defined]
    build_rejects = _rejects(tmp / "salted_seq")
    shard_rejects = _rejects(tmp / "salted_shards")
    everything = pl.concat([build_rejects, shard_rejects])
    mine = everything.filter(pl.col("item") == salt.item)
    expected = EXPECTED[case]
    if expected is None:
        assert mine.height == 0, mine.to_dicts()
        studies = pl.read_parquet(tmp / "salted_seq" / "studies.parquet")
        assert salt.study_id in studies["study_id"].cast(pl.String).to_list()
        key = pseudonym(DEFAULT_KEY_SALT, "study", salt.study_id)
        built = _shard_studies(tmp / "salted_shards")
        assert key in built and len(built[key]["frontal_bytes"]) > 100
        assert built[key]["text"].isascii() and len(built[key]["text"].split()) >= 3
        return
    stage, kind, reason = expected
    assert mine.select("stage", "item_kind", "reason").rows() == [(stage, kind, reason)], mine.to_dicts()
    assert mine["message"][0].strip()


def test_every_good_study_is_built_unchanged(runs: dict[str, object]) -> None:
    """Studies no salt touched come out of the salted build exactly as from the clean one, through the shards."""
    tmp: Path = runs["tmp"]  # type: ignore[assignment]
    salts: list[Salt] = runs["salts"]  # type: ignore[assignment]
    touched = {s.study_id for s in salts} | {s.other_study_id for s in salts if s.other_study_id}
    clean = pl.read_parquet(tmp / "clean_seq" / "studies.parquet").with_columns(
        pl.col("study_id").cast(pl.String)
    )
    salted = pl.read_parquet(tmp / "salted_seq" / "studies.parquet").with_columns(
        pl.col("study_id").cast(pl.String)
    )
    good = clean.filter(~pl.col("study_id").is_in(sorted(touched))).sort("study_id")
    assert good.height > 30
    got = salted.filter(pl.col("study_id").is_in(good["study_id"].to_list())).sort("study_id")
    # A patient's day offsets count from the first study that was built: a salted first study moves them.
    shifted = {s.subject_id for s in salts}
    for a, b in zip(got.select(good.columns).to_dicts(), good.to_dicts(), strict=True):
        diff = sorted(k for k in a if a[k] != b[k])
        assert diff in ([], ["day_offset"] if a["subject_id"] in shifted else []), (diff, a, b)
    clean_shards = _shard_studies(tmp / "clean_shards")
    salted_shards = _shard_studies(tmp / "salted_shards")
    for study in good["study_id"].to_list():
        key = pseudonym(DEFAULT_KEY_SALT, "study", study)
        assert salted_shards[key]["frontal_bytes"] == clean_shards[key]["frontal_bytes"]
        assert salted_shards[key]["text"] == clean_shards[key]["text"]
    # The clean archive itself has no image a decoder refuses.
    assert _rejects(tmp / "clean_shards").height == 0


def test_accounting_identities_hold(runs: dict[str, object]) -> None:
    tmp: Path = runs["tmp"]  # type: ignore[assignment]
    report: dict = runs["salted_report"]  # type: ignore[assignment]
    for what in ("images", "reports"):
        acc = report["accounting"][what]
        assert acc["inputs"] == acc["accepted"] + acc["rejected"], (what, acc)
    assert not [w for w in report["warnings"] if w.startswith("accounting_mismatch")]
    build_rejects = _rejects(tmp / "salted_seq")
    assert (
        report["accounting"]["table_rows_rejected"]
        == build_rejects.filter(pl.col("item_kind") == "row").height
    )
    assert report["accounting"]["table_rows_rejected"] == 4
    # Shard stage: every study of the build is either in a shard or named by a shard reject.
    studies = pl.read_parquet(tmp / "salted_seq" / "studies.parquet")
    summary = json.loads((tmp / "salted_shards" / "summary.json").read_text())
    in_shards = sum(s["studies"] for s in summary["splits"].values())
    assert in_shards == len(_shard_studies(tmp / "salted_shards"))
    assert in_shards + _rejects(tmp / "salted_shards").height == studies.height


def _one_error_line(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in output, output
    return lines[0]


def test_missing_input_folder_and_column_stop_with_one_line(synth_archive: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(
        app, ["build-sequences", str(tmp_path / "nowhere"), "-o", str(tmp_path / "o"), "--no-progress"]
    )
    assert res.exit_code == 2 and "nowhere" in _one_error_line(res.output)
    root = copy_dicom_release(synth_archive, tmp_path / "arch")
    meta = root / "mimic-cxr-2.0.0-metadata.csv.gz"
    frame = pl.read_csv(io.BytesIO(gzip.decompress(meta.read_bytes())), infer_schema_length=0)
    meta.write_bytes(gzip.compress(frame.drop("study_id").write_csv().encode()))
    res = runner.invoke(app, ["build-sequences", str(root), "-o", str(tmp_path / "o"), "--no-progress"])
    line = _one_error_line(res.output)
    assert res.exit_code == 2 and "study_id" in line and meta.name in line
    assert not (tmp_path / "o").exists()

    res = runner.invoke(app, ["shard", str(tmp_path / "nowhere"), "-o", str(tmp_path / "s"), "--quiet"])
    assert res.exit_code == 2 and "nowhere" in _one_error_line(res.output)
    seq = tmp_path / "seq"
    seq.mkdir()
    (seq / "build_report.json").write_text(json.dumps({"image_root": str(root)}))
    pl.DataFrame({"subject_id": ["1"], "study_id": ["2"]}).write_parquet(seq / "studies.parquet")
    res = runner.invoke(app, ["shard", str(seq), "-o", str(tmp_path / "s"), "--quiet"])
    line = _one_error_line(res.output)
    assert res.exit_code == 2 and "frontal_path" in line and "studies.parquet" in line
