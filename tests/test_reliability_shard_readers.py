"""Damaged shards give one line naming the shard and the member, in `inspect` and in the loader (issue 14, case 12).

Real tar files: shards written by `medst shard`, then truncated, or rewritten (with a matching index entry, as a
complete shard) to hold a member that is not an image, a PNG decompression bomb, or an oversized member.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import pytest
from train_shards import make_tiny_shards

from medst.schemas.shards import LoaderConfig
from medst.shards.loader import TimelineLoader
from medst.shards.members import MAX_IMAGE_BYTES, ShardReadError, decode_image, read_members

REPO = Path(__file__).resolve().parents[1]
SHARD = "train-000000.tar"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("readers")
    make_tiny_shards(root)
    return root


@pytest.fixture(scope="module")
def tokenizer(tiny: Path):  # type: ignore[no-untyped-def]
    from medst.model.text import build_demo_text_model
    from medst.model.tokenize import load_tokenizer
    from medst.train.components import training_texts

    folder = tiny / "text_model"
    build_demo_text_model(
        training_texts(tiny / "shards"), folder, vocab_size=200, hidden=32, layers=1, heads=2
    )
    return load_tokenizer(folder)


def _png_bomb(side: int = 10_000) -> bytes:
    """A real PNG of side x side black grey pixels: 100 MB of pixels in about 100 KB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + pixels
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _damage(tiny: Path, dest: Path, member_suffix: str, data: bytes) -> str:
    """Copy the shards and rewrite SHARD with the first member ending in `member_suffix` replaced by `data`; its
    index entry is updated, so the folder holds a complete shard with one bad member. Returns the member's name."""
    shutil.copytree(tiny / "shards", dest)
    path = dest / SHARD
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    target = next(m.name for m, _ in members if m.name.endswith(member_suffix))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for info, content in members:
            content = data if info.name == target else content
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    path.write_bytes(buf.getvalue())
    entry_path = dest / "index" / "train-000000.json"
    entry = json.loads(entry_path.read_text())
    entry.update(bytes=path.stat().st_size, sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    entry_path.write_text(json.dumps(entry))
    return target


def _loader(shards: Path, tokenizer, skip: bool = False) -> TimelineLoader:  # type: ignore[no-untyped-def]
    config = LoaderConfig(
        shards=shards,
        seq_len=2,
        windows_per_batch=2,
        letterbox=64,
        crop=48,
        shuffle=False,
        skip_bad_samples=skip,
    )
    return TimelineLoader(config, tokenizer)


def _inspect(shards: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "medst.cli", "inspect", str(shards), "-o", str(out), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)


def _one_line(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    line = proc.stderr.strip()
    assert "\n" not in line and all(w in line for w in words), line


def test_truncated_tar_names_shard_and_member(tiny: Path, tmp_path: Path) -> None:
    data = (tiny / "shards" / SHARD).read_bytes()
    with tarfile.open(tiny / "shards" / SHARD) as tar:
        members = tar.getmembers()
    cut = members[2].offset_data + members[2].size // 2  # inside the third member
    path = tmp_path / SHARD
    path.write_bytes(data[:cut])
    with open(path, "rb") as fh, pytest.raises(ShardReadError) as err:
        list(read_members(fh, path))
    assert SHARD in str(err.value) and members[2].name in str(err.value) and "truncated" in str(err.value)


def test_inspect_names_a_truncated_shard(tiny: Path, tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    shutil.copytree(tiny / "shards", shards)
    with tarfile.open(shards / SHARD) as tar:
        key = tar.getmembers()[0].name.split(".")[0]
    data = (shards / SHARD).read_bytes()
    (shards / SHARD).write_bytes(data[: len(data) // 2])  # its index entry now says it is incomplete
    _one_line(_inspect(shards, tmp_path / "t.png", "--patient", key), key, SHARD, "missing or damaged")
    drawn = _inspect(shards, tmp_path / "u.png")  # the other shards still draw
    assert drawn.returncode == 0 and (tmp_path / "u.png").stat().st_size > 1000


@pytest.mark.parametrize("kind", ["not_an_image", "png_bomb"])
def test_bad_image_member_is_one_line_in_loader_and_inspect(
    tiny: Path, tmp_path: Path, tokenizer, kind: str
) -> None:  # type: ignore[no-untyped-def]
    bad = b"this is a report, not an image" if kind == "not_an_image" else _png_bomb()
    shards = tmp_path / "shards"
    member = _damage(tiny, shards, ".frontal.jpg", bad)
    with _loader(shards, tokenizer) as loader, pytest.raises(ShardReadError) as err:
        list(loader)
    assert "\n" not in str(err.value) and SHARD in str(err.value) and member in str(err.value)
    if kind == "png_bomb":
        assert "pixel cap" in str(err.value)
    key = member.split(".")[0]
    _one_line(_inspect(shards, tmp_path / "t.png", "--patient", key), SHARD, member)
    assert not (tmp_path / "t.png").exists()


def test_skip_bad_samples_leaves_them_out_and_names_them(tiny: Path, tmp_path: Path, tokenizer) -> None:  # type: ignore[no-untyped-def]
    shards = tmp_path / "shards"
    member = _damage(tiny, shards, ".frontal.jpg", b"not an image")
    with _loader(tiny / "shards", tokenizer) as clean:
        full = [b.num_windows for b in clean]
    with _loader(shards, tokenizer, skip=True) as loader:
        batches = list(loader)
    skipped = [line for b in batches for line in b.skipped]
    assert len(batches) == len(full)
    assert skipped and all(SHARD in line and member in line for line in skipped)
    assert sum(b.num_windows for b in batches) == sum(full) - len(skipped)


def test_oversized_members_are_refused_before_they_are_read(tmp_path: Path) -> None:
    path = tmp_path / "big.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("abc.json")
        info.size = 2 << 20  # over the 1 MiB cap of text members
        tar.addfile(info, io.BytesIO(b" " * info.size))
    with open(path, "rb") as fh, pytest.raises(ShardReadError, match=r"'abc\.json'.*over the 1 MiB cap"):
        list(read_members(fh, path))
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("abc.s00.frontal.png")
        info.size = MAX_IMAGE_BYTES + 1
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    with open(path, "rb") as fh, pytest.raises(ShardReadError, match=r"frontal\.png'.*over the 64 MiB cap"):
        list(read_members(fh, path))


def test_png_bomb_is_refused_from_its_header() -> None:
    bomb = _png_bomb()
    assert len(bomb) < 1_000_000
    with pytest.raises(ValueError, match="10000x10000 pixels"):
        decode_image(bomb)


def test_pretrain_stops_on_a_bad_sample_or_skips_and_counts_it(tiny: Path, tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    member = _damage(tiny, shards, ".frontal.jpg", b"not an image")
    cmd = [sys.executable, "-m", "medst.cli", "pretrain", str(shards), "--config", "demo", "--steps", "18"]
    cmd += ["--batch-size", "2", "--val-every", "100", "--ckpt-every", "100", "--no-progress"]  # 2 epochs
    stopped = subprocess.run(
        [*cmd, "-o", str(tmp_path / "a")], capture_output=True, text=True, cwd=REPO, timeout=600
    )
    _one_line(stopped, SHARD, member)
    ran = subprocess.run(
        [*cmd, "-o", str(tmp_path / "b"), "--skip-bad-samples"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert ran.returncode == 0, ran.stderr
    assert f"skipped a damaged sample: {shards / SHARD}: member '{member}'" in ran.stdout
    logged = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    counts = [row["skipped_samples"] for row in logged if row.get("kind") == "train"]
    assert counts and counts[-1] == ran.stdout.count("skipped a damaged sample") > 0
