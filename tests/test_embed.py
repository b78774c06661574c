"""`medst embed`: folders, globs, manifests and shards of images and a text file -> one Parquet file; a bad file is
an error row, never a crash."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from test_inference_helpers import build_tiny_export, write_images
from typer.testing import CliRunner

import medst
from medst.cli.app import app
from medst.inference import MedSTEncoder


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_export(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="module")
def enc(export: Path) -> MedSTEncoder:
    return medst.load(export, device="cpu")


def _vectors(df: pl.DataFrame, column: str = "embedding") -> torch.Tensor:
    return torch.from_numpy(np.stack([np.asarray(v, dtype=np.float32) for v in df[column].to_list()]))


def _embed(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["embed", *args, "--quiet"])
    return result.exit_code, result.output


def test_folder_with_a_garbage_file_gives_an_error_row_and_every_good_row(
    export: Path, enc: MedSTEncoder, tmp_path: Path
) -> None:
    folder = tmp_path / "images"
    good = write_images(folder, 4, ".png") + write_images(folder / "sub", 1, ".jpg", start=4)
    (folder / "broken.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00garbage" * 20)
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out.parquet"
    code, output = _embed(str(folder), "-o", str(out), "--model", str(export), "--batch-size", "2")
    assert code == 0, output
    assert "6 images (1 errors" in output and "skipped 1 file" in output
    df = pl.read_parquet(out)
    assert df.height == 6 and set(df["kind"]) == {"image"}
    bad = df.filter(pl.col("error").is_not_null())
    assert bad["id"].to_list() == ["broken.dcm"] and bad["embedding"].is_null().all()
    assert bad["error_message"][0]
    ok = df.filter(pl.col("error").is_null()).sort("path")
    assert ok["path"].to_list() == sorted(str(p) for p in good)
    assert "sub/img004.jpg" in ok["id"].to_list()
    want = enc.encode_images(sorted(good, key=str))
    assert torch.allclose(_vectors(ok), want, atol=1e-5)
    assert _vectors(ok, "cls").shape == (5, 64)
    meta = pl.read_parquet_metadata(out)
    assert meta["medst_version"] == medst.__version__ and '"preset": "mimic-jpg"' in meta["preprocess"]


def test_every_line_of_a_text_file_and_a_glob_of_images(
    export: Path, enc: MedSTEncoder, tmp_path: Path
) -> None:
    images = write_images(tmp_path / "imgs", 3, ".png")
    lines = ["Small left pleural effusion.", "", "1. No pneumothorax. 2. Heart size is normal."]
    text = tmp_path / "prompts.txt"
    text.write_text("\n".join(lines) + "\n")
    out = tmp_path / "both.parquet"
    code, output = _embed(
        str(tmp_path / "imgs" / "*.png"), "-o", str(out), "--model", str(export), "--text", str(text)
    )
    assert code == 0, output
    df = pl.read_parquet(out)
    assert df["kind"].to_list() == ["image"] * 3 + ["text"] * 3
    texts = df.filter(pl.col("kind") == "text")
    assert texts["text"].to_list() == lines and texts["id"].to_list() == ["line-1", "line-2", "line-3"]
    assert texts["error"].to_list() == [None, "empty_text", None]
    got = _vectors(texts.filter(pl.col("error").is_null()))
    assert torch.allclose(got, enc.encode_texts([lines[0], lines[2]]), atol=1e-6)
    assert torch.allclose(_vectors(df.head(3)), enc.encode_images(images), atol=1e-5)


def test_manifest_and_shards_embed_every_study_with_its_lateral(
    export: Path, enc: MedSTEncoder, tmp_path: Path
) -> None:
    from train_shards import make_tiny_shards

    from medst.schemas.shards import DEFAULT_KEY_SALT
    from medst.shards.assign import pseudonym

    shards = make_tiny_shards(tmp_path, patients=5, val_patients=0)  # two shards of <= 4 timelines
    studies = pl.read_parquet(tmp_path / "seq" / "studies.parquet")
    out = tmp_path / "seq.parquet"
    code, output = _embed(str(tmp_path / "seq"), "-o", str(out), "--model", str(export))
    assert code == 0, output
    df = pl.read_parquet(out)
    assert df["id"].to_list() == studies["study_id"].to_list() and df["error"].is_null().all()
    with_lateral = studies["lateral_path"].is_not_null().to_list()
    assert df["views"].to_list() == ["frontal+lateral" if x else "frontal" for x in with_lateral]
    images = tmp_path / "images"
    row = studies.row(with_lateral.index(True), named=True)
    want = enc.encode_images([images / row["frontal_path"]], [images / row["lateral_path"]])
    got = _vectors(df.filter(pl.col("id") == row["study_id"]))
    assert torch.allclose(got, want, atol=1e-5)

    # images.parquet: one single-view row per image, id = dicom_id
    files = sorted(p.name for p in images.glob("*.png"))
    pl.DataFrame({"dicom_id": [f[:-4] for f in files], "path": files}).write_parquet(
        tmp_path / "seq" / "images.parquet"
    )
    out_img = tmp_path / "img.parquet"
    code, output = _embed(
        str(tmp_path / "seq" / "images.parquet"), "-o", str(out_img), "--model", str(export)
    )
    assert code == 0, output
    per_image = pl.read_parquet(out_img)
    assert per_image["id"].to_list() == [f[:-4] for f in files] and set(per_image["views"]) == {"frontal"}

    out2 = tmp_path / "shards.parquet"
    code, output = _embed(str(shards), "-o", str(out2), "--model", str(export))
    assert code == 0, output
    sh = pl.read_parquet(out2)
    assert sh.height == studies.height and sh["error"].is_null().all()
    assert sh["views"].to_list().count("frontal+lateral") == sum(with_lateral)
    # the same study read back from its shard (JPEG q95 of the same pixels) embeds to nearly the same vector
    key = pseudonym(DEFAULT_KEY_SALT, "study", row["study_id"])
    from_shard = _vectors(sh.filter(pl.col("id").str.ends_with("/" + key)))
    assert from_shard.shape == (1, 64)
    assert float(torch.nn.functional.cosine_similarity(from_shard, want)[0]) > 0.999

    # a damaged shard is one error row; the other shard's studies are all there
    first, second = sorted(shards.glob("*.tar"))
    kept = sh.filter(pl.col("path").str.starts_with(second.name + ":")).height
    assert kept > 0
    first.write_bytes(first.read_bytes()[:2000])
    code, output = _embed(str(shards), "-o", str(out2), "--model", str(export))
    assert code == 0, output
    damaged = pl.read_parquet(out2)
    assert damaged["error"].to_list().count("incomplete_shard") == 1
    assert damaged.filter(pl.col("error").is_null()).height == kept


def test_wrong_model_or_no_input_is_one_clear_line(export: Path, tmp_path: Path) -> None:
    code, output = _embed(
        str(tmp_path), "-o", str(tmp_path / "o.parquet"), "--model", str(tmp_path / "nomodel")
    )
    assert code == 2 and output.startswith("error: ") and "nomodel" in output and "Traceback" not in output
    code, output = _embed("-o", str(tmp_path / "o.parquet"), "--model", str(export))
    assert code == 2 and "--text" in output
    code, output = _embed(str(tmp_path / "missing" / "*.png"), "-o", str(tmp_path / "o.parquet"), "--model",
                          str(export))  # fmt: skip
    assert code == 2 and "matches no file" in output


def test_decoding_threads_do_not_change_the_vectors(export: Path, tmp_path: Path) -> None:
    # (--workers counts processes, as in every command: see test_executors.py for embed on the engines.)
    write_images(tmp_path / "imgs", 3, ".png")
    frames = []
    for i, threads in enumerate(("3", "0")):
        out = tmp_path / f"{i}.parquet"
        code, output = _embed(
            str(tmp_path / "imgs"), "-o", str(out), "--model", str(export), "--threads", threads
        )
        assert code == 0, output
        frames.append(pl.read_parquet(out))
    assert torch.equal(_vectors(frames[0]), _vectors(frames[1]))
    code, output = _embed(str(tmp_path / "imgs"), "-o", str(tmp_path / "x.parquet"), "--model", str(export),
                          "--threads", "-1")  # fmt: skip
    assert code == 2 and output.startswith("error: --threads -1: "), output
