"""Shards read from a URL: the same plan, texts, batches and trained weights as from local disk, retries of
transient failures, and one clear line for a missing object. Real servers on loopback (`storage_servers`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from storage_servers import http_server, s3_holding, s3_server
from train_shards import make_tiny_shards, make_tiny_text_model
from typer.testing import CliRunner

from medst.cli.app import app
from medst.errors import UserInputError
from medst.schemas.shards import LoaderConfig
from medst.schemas.train import PretrainConfig, config_to_yaml, resolve_config
from medst.shards.index import list_entries
from medst.shards.loader import TimelineLoader
from medst.storage import Location, RemotePath, to_location
from medst.train.components import training_texts

REPO = Path(__file__).resolve().parents[1]
STEPS = 4


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_shards(tmp_path_factory.mktemp("storage_data"))


@pytest.fixture(scope="module")
def base_url(shards: Path) -> Iterator[str]:
    with http_server(shards.parent) as url:
        yield url


@pytest.fixture(scope="module")
def text_model(shards: Path) -> Path:
    """One demo text model for the runs compared bitwise (see tests/test_train_loop.py)."""
    return make_tiny_text_model(shards)


@pytest.fixture()
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("medst.storage.RETRY_PAUSE_S", 0.01)


def _batches(shards: Location, text_model: Path) -> list[dict[str, object]]:
    config = LoaderConfig(
        shards=shards, windows_per_batch=2, letterbox=64, crop=56, max_tokens=32, random_offset=True, seed=3
    )
    with TimelineLoader(config, text_model) as loader:
        return [vars(batch) for batch in loader]


def _same_batches(a: list[dict[str, object]], b: list[dict[str, object]]) -> bool:
    def same(x: object, y: object) -> bool:
        return torch.equal(x, y) if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) else x == y

    return len(a) == len(b) and all(same(x[k], y[k]) for x, y in zip(a, b, strict=True) for k in x)


def medst(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MEDST_DEBUG"}
    cmd = [sys.executable, "-m", "medst", *map(str, args)]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)


def test_a_location_is_a_path_unless_it_is_a_url(tmp_path: Path) -> None:
    assert to_location("shards") == Path("shards")
    assert to_location(f"file://{tmp_path}/shards") == tmp_path / "shards"
    assert to_location("s3://bucket/shards/") == RemotePath("s3://bucket/shards")
    config = PretrainConfig(shards="https://data.example.org/shards")
    assert isinstance(config.shards, RemotePath) and config.shards / "plan.json" == RemotePath(
        "https://data.example.org/shards/plan.json"
    )
    # A run config with a URL is written and read back as that URL (resume finds the same shards).
    assert "shards: https://data.example.org/shards\n" in config_to_yaml(config)
    assert PretrainConfig(shards=str(config.model_dump(mode="json")["shards"])).shards == config.shards


def test_plan_index_texts_and_batches_over_http_equal_the_local_ones(
    shards: Path, base_url: str, text_model: Path
) -> None:
    url = to_location(f"{base_url}/{shards.name}")
    assert list_entries(url) == list_entries(shards)
    assert training_texts(url) == training_texts(shards)
    assert _same_batches(_batches(url, text_model), _batches(shards, text_model))


def test_embed_lists_the_same_studies_from_a_url(shards: Path, base_url: str) -> None:
    from medst.inference.sources import image_source

    def jobs(spec: str) -> list[tuple[str, object]]:
        return [(job.id, job.frontal) for job in image_source(spec).jobs]

    local = jobs(str(shards))
    assert local and jobs(f"{base_url}/{shards.name}") == local


@pytest.mark.usefixtures("quick_retries")
@pytest.mark.parametrize("mode", ["flaky", "cut"])
def test_a_503_or_a_dropped_connection_is_retried_to_the_same_batches(
    shards: Path, base_url: str, text_model: Path, mode: str
) -> None:
    # flaky: the first GET of every tar answers 503; cut: it sends half the tar and drops the connection.
    streamed = _batches(to_location(f"{base_url}/{mode}/{shards.name}"), text_model)
    assert _same_batches(streamed, _batches(shards, text_model))


def test_a_missing_object_is_a_user_error_naming_its_url(base_url: str) -> None:
    missing = RemotePath(f"{base_url}/nowhere/shard-000000.tar")
    with pytest.raises(UserInputError, match=f"^{missing.url}: no such object$"):
        missing.open().read()
    with pytest.raises(UserInputError, match=r"no plan\.json at"):
        list_entries(RemotePath(f"{base_url}/nowhere"))


def test_pretrain_streamed_over_http_ends_with_the_same_weights_as_from_disk(
    shards: Path, base_url: str, text_model: Path, tmp_path: Path
) -> None:
    from medst.model.io import load_model
    from medst.train.loop import pretrain, weights_digest

    options = {"steps": STEPS, "batch_size": 2, "val_every": 2, "ckpt_every": 2, "device": "cpu",
               "progress": False, "text_model": text_model}  # fmt: skip
    # One loader worker in both runs (a DataLoader with workers draws its seed from the global RNG).
    local = pretrain(
        resolve_config("demo", {"shards": shards, "out": tmp_path / "local", "num_workers": 1, **options})
    )
    # Through the command line; the URL travels to the worker process.
    result = CliRunner().invoke(
        app,
        ["pretrain", f"{base_url}/{shards.name}", "-o", str(tmp_path / "url"), "--config", "demo",
         "--steps", str(STEPS), "--batch-size", "2", "--text-model", str(text_model), "--val-every", "2",
         "--ckpt-every", "2", "--num-workers", "1", "--device", "cpu", "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert weights_digest(load_model(tmp_path / "url" / "export")) == local.weights_sha256

    # Retrieval (`medst eval --task retrieval --shards URL`) embeds the same held-out studies from the URL.
    import numpy as np

    from medst.eval.retrieval import held_out_embeddings
    from medst.eval.run import load_encoder

    encoder = load_encoder(tmp_path / "url", "cpu")
    streamed = held_out_embeddings(encoder, to_location(f"{base_url}/{shards.name}"), "validate")
    on_disk = held_out_embeddings(encoder, shards, "validate")
    assert streamed[2] == on_disk[2] and np.array_equal(streamed[0], on_disk[0])
    assert np.array_equal(streamed[1], on_disk[1])


def test_missing_shards_or_server_are_one_line_and_exit_2(
    shards: Path, base_url: str, tmp_path: Path
) -> None:
    partial = shards.parent / "partial"
    if not partial.exists():
        shutil.copytree(shards, partial)
        next(partial.glob("train-*.tar")).unlink()  # the index names it; the server answers 404
    cases = [
        (f"{base_url}/nowhere", f"{base_url}/nowhere is not a shard folder (no plan.json"),
        (f"{base_url}/partial", "lacks 1 shard(s) of its plan"),
        ("http://127.0.0.1:9/shards", "http://127.0.0.1:9/shards/plan.json: cannot read (after 4 tries)"),
    ]
    for i, (url, text) in enumerate(cases):
        proc = medst("pretrain", url, "-o", tmp_path / f"run{i}", "--config", "demo", "--device", "cpu")
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and text in lines[0], proc.stderr


@pytest.fixture(scope="module")
def s3_shards(shards: Path) -> Iterator[str]:
    """The shards uploaded to a bucket of a local S3 server; credentials and endpoint from the environment."""
    with s3_holding(shards, "medst-shards/shards") as url:
        yield url


def test_s3_reads_the_same_plan_texts_and_batches(shards: Path, s3_shards: str, text_model: Path) -> None:
    url = to_location(s3_shards)
    assert isinstance(url, RemotePath)
    assert list_entries(url) == list_entries(shards)
    assert training_texts(url) == training_texts(shards)
    assert _same_batches(_batches(url, text_model), _batches(shards, text_model))
    with pytest.raises(UserInputError, match="s3://medst-shards/nowhere is not a shard folder"):
        list_entries(RemotePath("s3://medst-shards/nowhere"))


def test_shard_writes_to_s3_the_same_bytes_and_resends_only_what_is_missing(
    shards: Path, s3_shards: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    from medst.shards.publish import publish

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the default staging folder lives under it
    dest = "s3://medst-shards/built"
    result = CliRunner().invoke(
        app,
        ["shard", str(shards.parent / "seq"), "-o", dest, "--image-size", "128", "--samples-per-shard", "4",
         "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    remote = to_location(dest)
    assert isinstance(remote, RemotePath)
    # Same shards, same bytes (each entry records its tar's size and sha256), readable as a shard folder.
    assert list_entries(remote) == list_entries(shards)
    assert (remote / "summary.json").is_file()
    staging = next((tmp_path / "medst-staging").iterdir())
    # A re-run sends nothing already on the store; a shard whose entry is gone is sent again, tar first.
    assert publish(staging, remote, [e.shard[:-4] for e in list_entries(shards)]) == 0
    first = list_entries(shards)[0].shard[:-4]
    import fsspec

    fsspec.filesystem("s3").rm(f"medst-shards/built/index/{first}.json")
    assert publish(staging, remote, [first]) == 1 and list_entries(remote) == list_entries(shards)


def test_shard_refuses_an_http_output_in_one_line(shards: Path, base_url: str) -> None:
    proc = medst("shard", shards.parent / "seq", "-o", f"{base_url}/out", "--image-size", "128")
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "URLs are read-only" in lines[0], proc.stderr


def test_a_second_s3_endpoint_in_the_same_process_is_the_one_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """fsspec keeps one filesystem per set of options: the endpoint from the environment must be one of them, or a
    process that moves to another S3 server (a test session, a notebook switching stores) keeps reaching the first."""
    pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    import fsspec

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "medst-test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for n in (1, 2):  # moto's servers in one process share their buckets: each gets its own
        with s3_server() as endpoint:
            monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
            fs = fsspec.filesystem("s3", endpoint_url=endpoint, skip_instance_cache=True)
            fs.mkdir(f"medst-endpoint-{n}")
            fs.pipe(f"medst-endpoint-{n}/note.txt", f"server {n}".encode())
            assert RemotePath(f"s3://medst-endpoint-{n}/note.txt").read_bytes() == f"server {n}".encode()
