"""An archive in object storage: `build-sequences s3://...` writes the same manifests as from the local copy, and
`shard` of those manifests (images read from the bucket) writes the same tar members. A real S3 server (moto) on
loopback holds a small `medst synth` archive."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from storage_servers import s3_holding
from typer.testing import CliRunner

from medst.archive import remote
from medst.cli.app import app
from medst.schemas.synth import SynthConfig
from medst.synth import generate

BUCKET = "medst-archive"
MANIFESTS = ("images", "studies", "sequences", "rejects")


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("url") / "mimic"
    generate(SynthConfig(out=out, patients=3, seed=2, image_size=64), progress=False)
    return out


@pytest.fixture(scope="module")
def s3_archive(archive: Path) -> Iterator[str]:
    """The archive uploaded to a bucket of a local S3 server; credentials and endpoint from the environment."""
    with s3_holding(archive, f"{BUCKET}/mimic-cxr") as url:
        yield url


def _medst(*args: str | Path) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def _report(seq: Path) -> dict[str, object]:
    report = json.loads((seq / "build_report.json").read_text())
    report["options"].pop("archive")
    report["options"].pop("out")
    return report


def _same_build(local: Path, remote: Path, url: str, archive: Path) -> None:
    for name in MANIFESTS:
        a, b = pl.read_parquet(local / f"{name}.parquet"), pl.read_parquet(remote / f"{name}.parquet")
        assert a.height and a.equals(b), name  # paths are relative to the archive root in both
    a, b = _report(local), _report(remote)
    assert a.pop("image_root") == str(archive.resolve()) and b.pop("image_root") == url
    assert a == b  # counts, accounting, rejects, the data manifest check: all the same


def test_build_sequences_from_s3_matches_the_local_copy(
    archive: Path, s3_archive: str, tmp_path: Path
) -> None:
    _medst("build-sequences", archive, "-o", tmp_path / "local", "-q")
    _medst("build-sequences", s3_archive, "-o", tmp_path / "remote", "-q")
    _same_build(tmp_path / "local", tmp_path / "remote", s3_archive, archive)
    assert (
        json.loads((tmp_path / "remote" / "build_report.json").read_text())["options"]["archive"]
        == s3_archive
    )


@pytest.mark.parametrize("first_read", [remote.HEADER_BYTES, 16])
def test_headers_are_read_from_the_bucket_by_ranged_reads(
    archive: Path, s3_archive: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first_read: int
) -> None:
    # Every header read: views, sizes, transfer syntaxes and header rejects come from the DICOMs in the bucket.
    # A first read that ends before the Pixel Data tag (16 bytes) is followed by a read of the whole object.
    monkeypatch.setattr(remote, "HEADER_BYTES", first_read)
    _medst("build-sequences", archive, "-o", tmp_path / "local", "-q", "--read-headers", "always")
    _medst("build-sequences", s3_archive, "-o", tmp_path / "remote", "-q", "--read-headers", "always")
    _same_build(tmp_path / "local", tmp_path / "remote", s3_archive, archive)
    images = pl.read_parquet(tmp_path / "remote" / "images.parquet")
    assert images.get_column("transfer_syntax").null_count() == 0


def test_shard_reads_the_images_from_the_bucket(archive: Path, s3_archive: str, tmp_path: Path) -> None:
    _medst("build-sequences", archive, "-o", tmp_path / "seq_local", "-q")
    _medst("build-sequences", s3_archive, "-o", tmp_path / "seq_remote", "-q")
    for name in ("local", "remote"):
        _medst(
            "shard", tmp_path / f"seq_{name}", "-o", tmp_path / f"shards_{name}", "--image-size", "64", "-q"
        )
    local_tars = sorted((tmp_path / "shards_local").glob("*.tar"))
    assert local_tars
    for tar_path in local_tars:
        with tarfile.open(tar_path) as a, tarfile.open(tmp_path / "shards_remote" / tar_path.name) as b:
            members = [(m.name, a.extractfile(m).read()) for m in a.getmembers()]  # type: ignore[union-attr]
            assert members == [(m.name, b.extractfile(m).read()) for m in b.getmembers()]  # type: ignore[union-attr]
            assert any(name.endswith(".jpg") for name, _ in members)


def test_a_missing_bucket_or_archive_is_one_line_and_exit_2(s3_archive: str, tmp_path: Path) -> None:
    for url in ("s3://no-such-bucket/mimic-cxr", f"s3://{BUCKET}/nothing-here"):
        result = CliRunner().invoke(app, ["build-sequences", url, "-o", str(tmp_path / "seq")])
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output and url in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
        assert not (tmp_path / "seq").exists()  # nothing written


def test_embed_of_an_s3_build_reads_its_images_from_the_bucket(
    archive: Path, s3_archive: str, tmp_path: Path
) -> None:
    import fsspec
    from test_inference_helpers import build_tiny_export

    export = build_tiny_export(tmp_path / "model")
    for name, source in (("local", str(archive)), ("remote", s3_archive)):
        _medst("build-sequences", source, "-o", tmp_path / f"seq_{name}", "-q")
    studies = pl.read_parquet(tmp_path / "seq_remote" / "studies.parquet")
    gone = studies.row(0, named=True)
    # One image deleted from the bucket after the build: its study is an error row, the others embed as before.
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    key = f"{s3_archive.removeprefix('s3://')}/{gone['frontal_path']}"
    saved = fs.cat_file(key)
    fs.rm_file(key)
    try:
        for name in ("local", "remote"):
            _medst(
                "embed", tmp_path / f"seq_{name}", "-o", tmp_path / f"{name}.parquet", "--model", export, "-q"
            )
    finally:
        fs.pipe_file(key, saved)
    local, remote = (pl.read_parquet(tmp_path / f"{name}.parquet") for name in ("local", "remote"))
    assert remote["id"].to_list() == local["id"].to_list() == studies["study_id"].to_list()
    missing = remote.filter(pl.col("id") == gone["study_id"]).row(0, named=True)
    assert missing["error"] == "unreadable_image" and missing["embedding"] is None
    assert f"{s3_archive}/{gone['frontal_path']}: no such object" in missing["error_message"]
    rest_local, rest_remote = (df.filter(pl.col("id") != gone["study_id"]) for df in (local, remote))
    assert rest_local.height == studies.height - 1 and rest_local["error"].is_null().all()
    assert rest_remote.equals(rest_local)  # same paths, views and vectors, bit for bit
    assert "frontal+lateral" in rest_remote["views"].to_list()
