"""Outputs are medst's alone: every command's -o is a folder it created (or an empty one), never a file, a foreign
folder, an input or a folder around an input; a re-run replaces only its own files; nothing outside OUT moves."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from train_shards import make_tiny_shards

from medst.errors import UserInputError
from medst.outputs import MARKER, claim_output_dir

REPO = Path(__file__).resolve().parents[1]


def medst(*args: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "medst", *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    return lines[0]


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` with the sha256 of its bytes (folders by name)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-patient synthetic archive (64 px) and tiny shards; treat as read-only."""
    from medst.schemas.synth import SynthConfig
    from medst.synth import generate

    root = tmp_path_factory.mktemp("outputs")
    generate(SynthConfig(out=root / "archive", patients=4, seed=0, image_size=64), progress=False)
    make_tiny_shards(root / "tiny", patients=4, val_patients=2)
    return root


def test_build_sequences_refuses_the_archive_as_out_and_leaves_it_byte_identical(small: Path) -> None:
    archive = small / "archive"
    before = tree(archive)
    line = one_error_line(medst("build-sequences", archive, "-o", archive, "--no-progress"))
    assert "is the input" in line
    assert tree(archive) == before
    assert sorted(p.name for p in small.iterdir()) == ["archive", "tiny"]  # nothing hidden beside it


def test_build_sequences_refuses_out_inside_or_around_the_archive(small: Path) -> None:
    archive = small / "archive"
    before = tree(small)
    assert "inside the input" in one_error_line(medst("build-sequences", archive, "-o", archive / "seq"))
    assert "contains the input" in one_error_line(medst("build-sequences", archive, "-o", small))
    assert tree(small) == before


def test_build_sequences_refuses_a_file_as_out_and_keeps_it(small: Path, tmp_path: Path) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("my notes\n")
    line = one_error_line(medst("build-sequences", small / "archive", "-o", target, "--no-progress"))
    assert "is a file" in line
    assert target.read_text() == "my notes\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # no .notes.txt.old


@pytest.mark.parametrize(
    "command",
    ["build-sequences", "synth", "shard", "pretrain", "eval", "embed-dir", "demo"],
)
def test_every_command_refuses_a_foreign_folder_before_any_work(
    small: Path, tmp_path: Path, command: str
) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.docx").write_bytes(b"years of work")
    args: list[str | Path] = {
        "build-sequences": ["build-sequences", small / "archive", "-o", out],
        "synth": ["synth", out, "--patients", "2"],
        "shard": ["shard", small / "tiny" / "seq", "-o", out],
        "pretrain": ["pretrain", small / "tiny" / "shards", "-o", out, "--config", "demo", "--device", "cpu"],
        "eval": ["eval", tmp_path / "no-such-run", "-o", out],  # refused before the model is looked for
        "embed-dir": ["embed", "--text", small / "archive" / "synth.json", "-o", out, "-m", tmp_path],
        "demo": ["demo", "-o", out],
    }[command]
    line = one_error_line(medst(*args))
    assert str(out) in line and ("not empty" in line or "is a folder" in line), line
    assert sorted(p.name for p in out.iterdir()) == ["thesis.docx"]
    assert (out / "thesis.docx").read_bytes() == b"years of work"


def test_folder_of_another_command_is_refused(small: Path, tmp_path: Path) -> None:
    out = tmp_path / "synth-out"
    claim_output_dir(out, "synth")
    line = one_error_line(medst("build-sequences", small / "archive", "-o", out))
    assert "`medst synth`" in line


def test_rerun_on_own_folder_replaces_own_files_and_keeps_foreign_ones(small: Path, tmp_path: Path) -> None:
    out = tmp_path / "seq"
    first = medst("build-sequences", small / "archive", "-o", out, "--no-progress")
    assert first.returncode == 0, first.stderr
    built = tree(out)
    marker = json.loads((out / MARKER).read_text())
    assert marker["command"] == "build-sequences" and marker["complete"] is True
    assert "studies.parquet" in marker["entries"]
    # A file the user put there survives; a file an earlier run wrote and this one does not is removed.
    (out / "my-notes.txt").write_text("keep me")
    (out / "old_plot.png").write_bytes(b"stale")
    marker["entries"].append("old_plot.png")
    (out / MARKER).write_text(json.dumps(marker))
    again = medst("build-sequences", small / "archive", "-o", out, "--no-progress")
    assert again.returncode == 0, again.stderr
    assert (out / "my-notes.txt").read_text() == "keep me"
    assert not (out / "old_plot.png").exists()
    after = tree(out)
    del after["my-notes.txt"]
    assert after == built  # same inputs, same bytes; no staging folder left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seq"]


def test_a_failed_replace_keeps_the_previous_outputs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    claimed = claim_output_dir(out, "build-sequences")
    with claimed.replacing() as staged:
        (staged / "result.txt").write_text("first")
    with pytest.raises(RuntimeError), claim_output_dir(out, "build-sequences").replacing() as staged:
        (staged / "result.txt").write_text("half-written")
        raise RuntimeError("killed half way")
    assert (out / "result.txt").read_text() == "first"
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "result.txt"]


def test_legacy_folder_without_marker_is_accepted_when_it_holds_the_commands_files(tmp_path: Path) -> None:
    out = tmp_path / "shards"
    (out / "index").mkdir(parents=True)  # what an older medst's shard left, before markers
    claim_output_dir(out, "shard", legacy_markers=("index",))
    assert json.loads((out / MARKER).read_text())["command"] == "shard"
    other = tmp_path / "other"
    other.mkdir()
    (other / "data.csv").write_text("a,b\n")
    with pytest.raises(UserInputError, match="not empty"):
        claim_output_dir(other, "shard", legacy_markers=("index",))
    assert sorted(p.name for p in other.iterdir()) == ["data.csv"]


def test_out_may_lie_inside_a_root_but_not_be_or_hold_one(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    claim_output_dir(images / "seq", "build-sequences", roots=[Path("/"), images])  # `--image-root /` is fine
    with pytest.raises(UserInputError, match="is the input"):
        claim_output_dir(images, "build-sequences", roots=[images])
    with pytest.raises(UserInputError, match="contains the input"):
        claim_output_dir(tmp_path / "x", "build-sequences", roots=[tmp_path / "x" / "images"])
    with pytest.raises(UserInputError, match="inside the input"):
        claim_output_dir(images / "seq2", "build-sequences", inputs=[images])
    assert sorted(p.name for p in images.iterdir()) == ["seq"]
