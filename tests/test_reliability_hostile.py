"""Hostile files: tars with escaping names, links or devices; pickled checkpoints carrying code; a 100 MB report
and a DICOM claiming 100k x 100k pixels. Each is refused (or rejected) without side effects or a memory blow-up."""

from __future__ import annotations

import io
import json
import pickle
import shutil
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pydicom
import pytest
from salting import copy_dicom_release
from train_shards import make_tiny_shards
from typer.testing import CliRunner

from medst.cli.app import app
from medst.errors import MedstError
from medst.model.building import load_tokenizer
from medst.schemas.shards import ShardConfig
from medst.schemas.train import resolve_config
from medst.shards.index import list_entries
from medst.shards.loader import TimelineLoader

REPO = Path(__file__).resolve().parents[1]


class _Payload:
    """Unpickling this runs `open(marker, 'w')`: proof that pickled code was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny real shards (trainer helper) and a 2-step run on them: RUN/ has checkpoints and an export."""
    from medst.train.loop import pretrain

    root = tmp_path_factory.mktemp("hostile")
    shards = make_tiny_shards(root, patients=6, val_patients=2)
    pretrain(resolve_config("demo", {
        "shards": shards, "out": root / "run", "steps": 2, "batch_size": 2, "ckpt_every": 2, "val_every": 1000,
        "num_workers": 0, "device": "cpu", "progress": False,
    }))  # fmt: skip
    return root


# -- hostile shard tars -------------------------------------------------------------------------------------


def _hostile_member(kind: str, target: Path) -> tarfile.TarInfo:
    name = {"dotdot": f"../{target.name}", "absolute": str(target)}.get(kind, "zz-evil.json")
    info = tarfile.TarInfo(name)
    if kind == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, str(target)
    elif kind == "hardlink":
        info.type, info.linkname = tarfile.LNKTYPE, str(target)
    elif kind == "device":
        info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
    return info


def _poison(shards: Path, kind: str, target: Path) -> None:
    """Append one hostile member to every shard of the folder and fix up the index (size and hash), as an
    attacker handing over a whole folder would."""
    import hashlib

    for entry in list_entries(shards):
        tar_path = shards / entry.shard
        with tarfile.open(tar_path) as tar:
            members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
        with tarfile.open(tar_path, "w", format=tarfile.GNU_FORMAT) as tar:
            info = _hostile_member(kind, target)
            data = b'{"studies": []}' if info.isreg() else b""
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))  # first, so every reader meets it
            for m, d in members:
                tar.addfile(m, io.BytesIO(d))
        index = shards / "index" / f"{entry.shard.removesuffix('.tar')}.json"
        meta = json.loads(index.read_text())
        meta["bytes"] = tar_path.stat().st_size
        meta["sha256"] = hashlib.sha256(tar_path.read_bytes()).hexdigest()
        index.write_text(json.dumps(meta))


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink", "device"])
def test_loader_and_inspect_refuse_hostile_members(tiny: Path, tmp_path: Path, kind: str) -> None:
    shards = tmp_path / "shards"
    shutil.copytree(tiny / "shards", shards)
    outside = tmp_path / "outside" / "evil.json"
    outside.parent.mkdir()
    _poison(shards, kind, outside)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    from medst.schemas.shards import LoaderConfig

    loader = TimelineLoader(
        LoaderConfig(shards=shards, windows_per_batch=2, letterbox=96, crop=64, num_workers=0, split="train"),
        load_tokenizer(tiny / "run" / "export"),
    )
    with pytest.raises(MedstError, match="member"):
        next(iter(loader))
    res = CliRunner().invoke(app, ["inspect", str(shards), "-o", str(tmp_path / "sheet.png")])
    assert res.exit_code == 2 and "member" in res.output and "Traceback" not in res.output, res.output
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert after == before and not outside.exists()


# -- pickled code in checkpoints ----------------------------------------------------------------------------


def test_resume_from_a_pickled_checkpoint_is_refused_without_running_it(tiny: Path, tmp_path: Path) -> None:
    import torch

    run = tmp_path / "run"
    shutil.copytree(tiny / "run", run)
    ckpt = run / "checkpoints" / "step-00000002"
    marker = tmp_path / "pwned"
    for name in ("model.safetensors", "optimizer.safetensors", "rank-0.safetensors"):
        torch.save({"state": _Payload(marker)}, ckpt / name)  # a pickle where safetensors belong
    # Whoever swaps the files also fixes the sizes the checkpoint records (else the size check refuses it first).
    sizes = json.loads((ckpt / "files.json").read_text())
    (ckpt / "files.json").write_text(json.dumps({n: (ckpt / n).stat().st_size for n in sizes}))
    cmd = [sys.executable, "-m", "medst.cli", "pretrain", str(tiny / "shards"), "-o", str(run), "--config", "demo",
           "--steps", "2", "--batch-size", "2", "--ckpt-every", "2", "--val-every", "1000", "--num-workers", "0",
           "--device", "cpu", "--no-progress", "--resume", str(ckpt)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert not marker.exists(), "unpickling ran code"
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith("error:") and "not safetensors" in lines[0]


@pytest.mark.parametrize("name", ["model.safetensors", "model.pt", "pytorch_model.bin"])
def test_medst_load_of_pickled_weights_is_refused_without_running_them(
    tiny: Path, tmp_path: Path, name: str
) -> None:
    import torch

    import medst

    folder = tmp_path / "export"
    shutil.copytree(tiny / "run" / "export", folder)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "pwned"
    torch.save({"vit.cls_token": _Payload(marker)}, folder / name)
    with pytest.raises(MedstError):
        medst.load(folder, device="cpu")
    assert not marker.exists(), "unpickling ran code"
    # And a plain pickle.dumps file with a .pt name too.
    (folder / name).write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(MedstError):
        medst.load(folder, device="cpu")
    assert not marker.exists()


# -- oversized inputs, measured in a fresh process --------------------------------------------------------


def _peak_rss_delta_mb(script: str) -> tuple[float, str]:
    """Run `script` (which defines `setup()` and `attack()`) in a fresh interpreter; the peak RSS growth of
    `attack()` over the peak after `setup()`, in MB, and the script's last stdout line."""
    code = textwrap.dedent(script) + textwrap.dedent(
        """
        import resource
        setup()
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out = attack()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print((peak - base) / 1024.0)
        print(out)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    return float(lines[-2]), lines[-1]


def test_100mb_report_is_rejected_in_bounded_memory(synth_archive: Path, tmp_path: Path) -> None:
    root = copy_dicom_release(synth_archive, tmp_path / "arch")
    import gzip

    meta = gzip.decompress((root / "mimic-cxr-2.0.0-metadata.csv.gz").read_bytes()).decode().splitlines()
    with_frontal = {line.split(",")[2] for line in meta[1:] if line.split(",")[4] in ("PA", "AP")}
    report = next(p for p in sorted((root / "files").rglob("s*.txt")) if p.stem[1:] in with_frontal)
    with open(report, "wb") as fh:  # 100 MB of plausible words, written in pieces
        piece = b" FINDINGS: the lungs are clear and there is no effusion or pneumothorax.\n" * 14000
        for _ in range(100 * 2**20 // len(piece) + 1):
            fh.write(piece)
    assert report.stat().st_size >= 100 * 2**20
    delta, reason = _peak_rss_delta_mb(
        f"""
        import json, shutil
        from pathlib import Path
        from medst.schemas.build import BuildConfig
        from medst.sequences.build import build_sequences
        import polars as pl

        def setup():
            # The same build once without the big file, so the baseline holds every import and buffer.
            shutil.copy({str(report)!r}, {str(tmp_path / "big.txt")!r})
            Path({str(report)!r}).write_text(Path({str(synth_archive / report.relative_to(root))!r}).read_text())
            build_sequences(BuildConfig(archive=Path({str(root)!r}), out=Path({str(tmp_path / "o1")!r})), progress=False)
            shutil.move({str(tmp_path / "big.txt")!r}, {str(report)!r})

        def attack():
            out = Path({str(tmp_path / "o2")!r})
            build_sequences(BuildConfig(archive=Path({str(root)!r}), out=out), progress=False)
            rej = pl.read_parquet(out / "rejects.parquet")
            return rej.filter(pl.col("item") == {report.relative_to(root).as_posix()!r})["reason"].to_list()
        """
    )
    print(f"100 MB report: peak RSS growth {delta:.1f} MB")
    assert reason == "['report_too_large']", reason
    assert delta < 60, f"peak RSS grew by {delta:.0f} MB reading a 100 MB report"


def test_dicom_claiming_65535_squared_pixels_is_rejected_in_bounded_memory(
    synth_archive: Path, tmp_path: Path
) -> None:
    src = sorted((synth_archive / "files").rglob("*.dcm"))[0]
    ds = pydicom.dcmread(src)
    ds.decompress() if ds.file_meta.TransferSyntaxUID.is_compressed else None
    # Rows and Columns are 16-bit in DICOM: 65535 x 65535 (4.3 gigapixels, 8.6 GB as 16-bit) is the largest claim.
    ds.Rows = ds.Columns = 65535
    big = tmp_path / "huge.dcm"
    ds.save_as(big, enforce_file_format=True)
    delta, result = _peak_rss_delta_mb(
        f"""
        from pathlib import Path
        import numpy as np
        from medst.archive.pixels import read_image
        from medst.archive.headers import read_one
        from medst.errors import ImageDecodeError

        def setup():
            read_image(Path({str(src)!r}))

        def attack():
            try:
                read_image(Path({str(big)!r}))
            except ImageDecodeError as err:
                return err.reason + " " + str(read_one({str(big)!r})["error"])
            return "decoded"
        """
    )
    print(f"65535 x 65535 DICOM: peak RSS growth {delta:.1f} MB")
    assert result == "too_large too_large", result
    assert delta < 60, f"peak RSS grew by {delta:.0f} MB on a 65535 x 65535 header"


def test_shard_stage_rejects_a_huge_claim_when_headers_were_not_read(
    tiny: Path, synth_archive: Path, tmp_path: Path
) -> None:
    """Without a header scan the shard writer meets the file and rejects it (too_large), keeping the rest."""
    import polars as pl

    from medst.shards.writer import write_shards

    seq = tiny / "seq"
    images = tmp_path / "images"
    shutil.copytree(tiny / "images", images)
    ds = pydicom.dcmread(sorted((synth_archive / "files").rglob("*.dcm"))[0])
    ds.Rows = ds.Columns = 65535
    ds.save_as(images / "huge.dcm", enforce_file_format=True)
    studies = pl.read_parquet(seq / "studies.parquet")
    first = studies["study_id"][0]
    studies = studies.with_columns(
        pl.when(pl.col("study_id") == first)
        .then(pl.lit("huge.dcm"))
        .otherwise(pl.col("frontal_path"))
        .alias("frontal_path")
    )
    (tmp_path / "seq").mkdir()
    studies.write_parquet(tmp_path / "seq" / "studies.parquet")
    (tmp_path / "seq" / "build_report.json").write_text(json.dumps({"image_root": str(images)}))
    write_shards(ShardConfig(seq=tmp_path / "seq", out=tmp_path / "out", image_size=64), progress=False)
    rejects = pl.read_parquet(tmp_path / "out" / "rejects.parquet")
    assert rejects["reason"].to_list() == ["frontal_too_large"]
