"""`medst inspect`: a timeline sheet drawn from real shards, and one-line errors."""

from __future__ import annotations

import tarfile
from pathlib import Path

import cv2
import pytest
from test_shards_helpers import build_seq
from typer.testing import CliRunner

from medst.cli.app import app
from medst.schemas.shards import ShardConfig
from medst.shards.inspect import draw_timeline, find_timeline
from medst.shards.writer import write_shards


@pytest.fixture(scope="module")
def shards(realdata: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    seq = build_seq(realdata, tmp_path_factory.mktemp("seq"), max_patients=4, dicom=False)
    out = tmp_path_factory.mktemp("shards")
    write_shards(ShardConfig(seq=seq, out=out, samples_per_shard=2, image_size=192), progress=False)
    return out


def _key_with_lateral(shards: Path) -> str:
    for path in sorted(shards.glob("*.tar")):
        with tarfile.open(path) as tar:
            for m in tar.getmembers():
                if ".lateral." in m.name:
                    return m.name.split(".", 1)[0]
    raise AssertionError("fixture has no lateral image")


def _keys(shards: Path) -> list[str]:
    keys = []
    for path in sorted(shards.glob("*.tar")):
        with tarfile.open(path) as tar:
            keys += [m.name[: -len(".json")] for m in tar.getmembers() if m.name.endswith(".json")]
    return keys


def test_sheet_shows_the_patients_studies(shards: Path, tmp_path: Path) -> None:
    key = _key_with_lateral(shards)
    meta, files = find_timeline(shards, key)
    assert meta["key"] == key and len(meta["studies"]) >= 2
    assert sum(".lateral." in name for name in files) >= 1
    result = CliRunner().invoke(
        app, ["inspect", str(shards), "-o", str(tmp_path / "sheet.png"), "--patient", key]
    )
    assert result.exit_code == 0, result.output
    img = cv2.imread(str(tmp_path / "sheet.png"))
    assert img is not None and img.shape[1] > img.shape[0] > 300  # one column per study
    # default: the longest timeline
    keys = _keys(shards)
    longest = max(len(find_timeline(shards, k)[0]["studies"]) for k in keys)
    meta_default, _ = find_timeline(shards)
    assert len(keys) >= 3 and len(meta_default["studies"]) == longest
    assert draw_timeline(shards, tmp_path / "d.png").stat().st_size > 10_000


def test_unknown_patient_is_one_line_error(shards: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["inspect", str(shards), "-o", str(tmp_path / "x.png"), "--patient", "nope"]
    )
    assert result.exit_code == 2 and "nope" in result.output and "Traceback" not in result.output
