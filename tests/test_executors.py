"""Job engines (`medst.executors`): a lost local worker is an error naming the job, never a hang; Ray writes the
same shard, manifest and synthetic archive bytes as the local engine, a killed Ray shard run resumes to the same
bytes, and `embed` on local workers or Ray writes the rows of the in-process run."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from medst.cli.app import app
from medst.errors import UserInputError, WorkerDiedError
from medst.executors import EngineChoice, run_jobs, use_engine
from medst.inference.embed import embed
from medst.schemas.build import BuildConfig
from medst.schemas.embed import EmbedConfig
from medst.schemas.shards import ShardConfig
from medst.schemas.synth import SynthConfig
from medst.sequences.build import build_sequences
from medst.shards.writer import write_shards
from medst.synth import generate

REPO = Path(__file__).resolve().parents[1]
SHARD_OPTIONS = {"image_size": 96, "samples_per_shard": 2}


def _square_or_die(x: int) -> int:
    if x == 3:
        os.kill(os.getpid(), signal.SIGKILL)  # what the out-of-memory killer does to a worker
    return x * x


def test_local_engine_hands_every_result_over_with_its_position() -> None:
    for workers in (1, 2):
        results: dict[int, int] = {}
        run_jobs(_square_or_die, [0, 1, 2, 4, 5], workers, results.__setitem__)
        assert results == {0: 0, 1: 1, 2: 4, 3: 16, 4: 25}


def test_a_killed_local_worker_ends_the_run_with_an_error_naming_the_job() -> None:
    # Before, a dead worker left the parent waiting forever; pytest's timeout would fail this test.
    # The job is run once more, alone, so the second loss names it (and only it).
    names = [f"job number {x}" for x in range(6)]
    with pytest.raises(WorkerDiedError, match=r"^job number 3 lost its worker process 2 times"):
        run_jobs(_square_or_die, list(range(6)), 2, lambda i, r: None, names=names)


def test_unknown_engine_and_stray_address_are_user_errors() -> None:
    with pytest.raises(UserInputError, match="--engine must be one of"):
        run_jobs(_square_or_die, [1], 1, print, engine=EngineChoice("dask", None))  # type: ignore[arg-type]
    with (
        pytest.raises(UserInputError, match="--ray-address is only used with --engine ray"),
        use_engine("local", "127.0.0.1:6379"),
    ):
        pass


def _outputs(folder: Path, patterns: tuple[str, ...]) -> dict[str, bytes]:
    paths = [p for pattern in patterns for p in folder.glob(pattern)]
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(paths)}


SHARD_FILES = ("*.tar", "index/*.json", "rejects/*.parquet")


@pytest.fixture(scope="module")
def ray_session():  # type: ignore[no-untyped-def]
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'medst[ray]'")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def seq_and_local_shards(synth_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("engines")
    config = BuildConfig(archive=synth_archive, out=root / "seq", read_headers="always", workers=2)
    build_sequences(config, progress=False)
    write_shards(
        ShardConfig(seq=root / "seq", out=root / "local", workers=2, **SHARD_OPTIONS), progress=False
    )
    return root / "seq", root / "local"


def test_ray_engine_builds_the_same_manifests_and_shards_as_the_local_engine(
    ray_session: object, synth_archive: Path, seq_and_local_shards: tuple[Path, Path], tmp_path: Path
) -> None:
    seq, local = seq_and_local_shards
    with use_engine("ray"):
        build_sequences(BuildConfig(archive=synth_archive, out=tmp_path / "seq", read_headers="always", workers=2),
                        progress=False)  # fmt: skip
    manifests = ("*.parquet",)
    assert _outputs(tmp_path / "seq", manifests) == _outputs(seq, manifests)
    assert len(_outputs(seq, manifests)) >= 3

    write_shards(
        ShardConfig(seq=seq, out=tmp_path / "ray", workers=2, engine="ray", **SHARD_OPTIONS), progress=False
    )
    reference = _outputs(local, SHARD_FILES)
    assert sum(k.endswith(".tar") for k in reference) >= 8
    assert _outputs(tmp_path / "ray", SHARD_FILES) == reference


def test_a_sigkilled_ray_shard_run_resumes_to_the_same_bytes(
    ray_session: object, seq_and_local_shards: tuple[Path, Path], tmp_path: Path
) -> None:
    seq, local = seq_and_local_shards
    out = tmp_path / "ray"
    command = [sys.executable, "-m", "medst.cli", "shard", str(seq), "-o", str(out), "--engine", "ray",
               "--workers", "2", "--image-size", "96", "--samples-per-shard", "2", "--quiet"]  # fmt: skip
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not list(out.glob("*.tar")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    # Whatever the killed run left (complete shards, a tar without its index entry, temporary files), the re-run,
    # on this process's Ray, finishes the build with the bytes of an uninterrupted local build.
    write_shards(ShardConfig(seq=seq, out=out, workers=2, engine="ray", **SHARD_OPTIONS), progress=False)
    assert _outputs(out, SHARD_FILES) == _outputs(local, SHARD_FILES)
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]


def test_build_sequences_cli_on_ray_starts_ray_once_and_writes_the_local_manifests(
    ray_session: object, synth_archive: Path, seq_and_local_shards: tuple[Path, Path], tmp_path: Path
) -> None:
    # The command opens its own Ray for the whole build (header scan, and report parsing on a helper thread).
    seq, _local = seq_and_local_shards
    out = tmp_path / "seq"
    done = subprocess.run(
        [sys.executable, "-m", "medst.cli", "build-sequences", str(synth_archive), "-o", str(out), "--engine", "ray",
         "--workers", "2", "--read-headers", "always", "-q"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert _outputs(out, ("*.parquet",)) == _outputs(seq, ("*.parquet",))


def _file_hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_synth_on_ray_writes_the_bytes_of_the_in_process_run(ray_session: object, tmp_path: Path) -> None:
    options = {"patients": 3, "seed": 5, "image_size": 64, "release": "both"}
    generate(SynthConfig(out=tmp_path / "here", **options), progress=False)  # type: ignore[arg-type]
    generate(SynthConfig(out=tmp_path / "ray", workers=2, engine="ray", **options), progress=False)  # type: ignore[arg-type]
    here = _file_hashes(tmp_path / "here")
    assert sum(k.endswith(".dcm") for k in here) >= 6 and _file_hashes(tmp_path / "ray") == here


def test_synth_address_without_ray_is_one_line_and_leaves_no_folder(tmp_path: Path) -> None:
    out = tmp_path / "archive"
    done = subprocess.run(
        [sys.executable, "-m", "medst.cli", "synth", str(out), "--patients", "1", "--ray-address", "auto"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr == "error: --ray-address is only used with --engine ray\n"
    assert not out.exists()


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_inference_helpers import build_tiny_export

    return build_tiny_export(tmp_path_factory.mktemp("tiny_model"))


def test_embed_in_local_workers_and_on_ray_writes_the_in_process_rows(
    ray_session: object, synth_archive: Path, tiny_export: Path, tmp_path: Path
) -> None:
    # Real DICOM files of several transfer syntaxes (frontal and lateral views, paired by study) and text lines;
    # batches of 2 so that several jobs run. The test processes use one torch thread (conftest), and so do the
    # worker processes and Ray tasks: the vectors must be bitwise the same.
    folder = tmp_path / "dicoms"
    for path in sorted(synth_archive.glob("files/p*/p*/s*/*.dcm"))[:7]:
        target = folder / path.relative_to(synth_archive)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    text = tmp_path / "lines.txt"
    text.write_text("Small left pleural effusion.\n\nNo pneumothorax.\nHeart size is normal.\n")
    frames = {}
    for name, extra in (
        ("here", {}),
        ("local", {"workers": 2}),
        ("ray", {"workers": 2, "engine": "ray"}),
    ):
        out = tmp_path / f"{name}.parquet"
        config = EmbedConfig(input=str(folder), text=text, out=out, model=tiny_export, batch_size=2, device="cpu",
                             progress=False, **extra)  # type: ignore[arg-type]  # fmt: skip
        summary = embed(config)
        assert summary.images >= 5 and summary.texts == 4, summary
        frames[name] = pl.read_parquet(out)
    here = frames["here"]
    assert here["embedding"].is_not_null().sum() >= 8 and "frontal+lateral" in here["views"].to_list()
    for name in ("local", "ray"):
        assert frames[name].equals(here), name


def test_embed_address_without_ray_is_one_line(tiny_export: Path, tmp_path: Path) -> None:
    text = tmp_path / "lines.txt"
    text.write_text("No pneumothorax.\n")
    out = tmp_path / "o.parquet"
    args = [
        "embed",
        "--text",
        str(text),
        "-o",
        str(out),
        "--model",
        str(tiny_export),
        "--ray-address",
        "auto",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert (
        result.output.startswith("error: ")
        and "--ray-address is only used with --engine ray" in result.output
    )
    assert not out.exists()


def _children(pid: int) -> list[int]:
    """Live processes started by ``pid``, but multiprocessing's resource tracker (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z" and b"resource_tracker" not in cmdline:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc")
@pytest.mark.parametrize("context", [None, "spawn"])  # the default (fork on Linux), and shard's
def test_local_workers_end_when_their_parent_is_killed(context: str | None) -> None:
    """`kill -9` of a run must not leave its worker processes behind (they would wait for work forever)."""
    program = (
        "import time; from medst.executors import run_jobs; "
        f"run_jobs(time.sleep, [120.0, 120.0], 2, lambda i, r: None, context={context!r})"
    )
    driver = subprocess.Popen([sys.executable, "-c", program])
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(workers) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
            workers = _children(driver.pid)
        assert len(workers) == 2, "the pool did not start its two workers"
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        deadline = time.monotonic() + 15
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [w for w in workers if _alive(w)]
        assert not left, f"workers {left} outlived their killed parent"
    finally:
        driver.kill()
        for w in workers:  # re-parented once the driver is gone: found by the pids seen before
            with contextlib.suppress(ProcessLookupError):
                os.kill(w, signal.SIGKILL)
