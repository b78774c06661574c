"""`medst pretrain --logger`: real MLflow file stores and W&B offline runs, read back with their own clients."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
from train_shards import make_tiny_shards, make_tiny_text_model
from typer.testing import CliRunner

from medst.cli.app import app
from medst.errors import UserInputError
from medst.train.logging import read_metrics
from medst.train.trackers import TRACKERS, resolve_trackers


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_shards(tmp_path_factory.mktemp("tracker_data"), patients=8, val_patients=2)


@pytest.fixture(scope="module")
def text_model(shards: Path) -> Path:
    return make_tiny_text_model(shards)


def _pretrain(shards: Path, text_model: Path, out: Path, *extra: str) -> str:
    args = ["pretrain", str(shards), "-o", str(out), "--config", "demo", "--steps", "4", "--batch-size", "2",
            "--text-model", str(text_model), "--ckpt-every", "2", "--val-every", "4", "--num-workers", "0",
            "--device", "cpu", "--no-progress", *extra]  # fmt: skip
    # log_every is 10 in the demo preset: a train record is logged at the last step of each invocation.
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.output


def _train_losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "train"}


def test_mlflow_run_in_a_local_file_store_holds_params_and_loss_history_and_resume_continues_it(
    shards: Path, text_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 opens a file store only when asked
    run = tmp_path / "run-a"
    # Stopped after 2 steps, then resumed to 4: one MLflow run, with the records of both invocations.
    _pretrain(shards, text_model, run, "--logger", "mlflow", "--experiment", "trackers-test",
              "--max-steps-this-invocation", "2")  # fmt: skip
    run_id = json.loads((run / "trackers.json").read_text())["mlflow"]
    _pretrain(
        shards, text_model, run, "--logger", "mlflow", "--experiment", "trackers-test", "--resume", "latest"
    )
    assert json.loads((run / "trackers.json").read_text())["mlflow"] == run_id
    assert not (run / "tensorboard").exists()  # --logger replaces the default

    client = MlflowClient(tracking_uri=(run / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("trackers-test")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [run_id]
    found = client.get_run(run_id)
    assert found.info.run_name == "run-a" and found.info.status == "FINISHED"
    params = found.data.params
    assert params["preset"] == "demo" and params["batch_size"] == "2" and params["steps"] == "4"
    assert float(params["lr"]) == 5e-4 and params["loggers"] == "['mlflow']"
    # Nested config values are flattened to dotted keys.
    assert not any(isinstance(v, dict) for v in params.values())

    history = client.get_metric_history(run_id, "train/loss")
    expected = _train_losses(run)
    assert sorted(expected) == [2, 4]
    assert {m.step: m.value for m in history} == pytest.approx(expected)
    assert [m.step for m in client.get_metric_history(run_id, "val/acc_i2t")] == [4]
    assert {m.step for m in client.get_metric_history(run_id, "train/lr")} == {2, 4}
    assert "curves.png" in {a.path for a in client.list_artifacts(run_id)}


def _wandb_records(path: Path) -> list[Any]:
    """The protobuf records of a W&B ``.wandb`` transaction log (LevelDB log format: 32 KiB blocks of chunks with
    a 7-byte header: CRC32C, length, type 1 full / 2 first / 3 middle / 4 last), after W&B's 7-byte file header."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a W&B transaction log"
    records, pending, pos, block = [], b"", 7, 32768
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # the rest of a block too short for a header is padding
            pos += left
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def test_wandb_offline_run_folder_holds_the_config_and_loss_history(
    shards: Path, text_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("wandb", reason="the wandb extra is not installed")
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_PROJECT", "WANDB_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))  # no API key anywhere: offline by default
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run-w"
    _pretrain(shards, text_model, run, "--logger", "wandb", "--logger", "tensorboard")
    assert list((run / "tensorboard").iterdir())  # trackers combine

    run_id = json.loads((run / "trackers.json").read_text())["wandb"]
    folders = list((run / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(folders) == 1, list((run / "wandb").iterdir())
    log = folders[0] / f"run-{run_id}.wandb"
    records = _wandb_records(log)
    history: dict[int, dict[str, float]] = {}
    config: dict[str, Any] = {}
    for record in records:
        if record.HasField("history"):
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
            history[int(items["_step"])] = items
        elif record.HasField("config"):
            config.update({i.key: json.loads(i.value_json) for i in record.config.update})
        elif record.HasField("run"):
            assert record.run.run_id == run_id and record.run.display_name == "run-w"
            assert record.run.project == "medst"
    assert (
        config["preset"] == "demo"
        and config["batch_size"] == 2
        and config["loggers"] == ["wandb", "tensorboard"]
    )
    expected = _train_losses(run)
    assert sorted(expected) == [4]
    assert history[4]["train/loss"] == pytest.approx(expected[4])
    assert "val/acc_i2t" in history[4]
    assert (folders[0] / "files" / "curves.png").is_file()


def test_wandb_mode_from_the_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb", reason="the wandb extra is not installed")
    from medst.train.trackers import WandbTracker

    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_SILENT", "true")
    tracker = WandbTracker(tmp_path, start_step=0, experiment=None)
    tracker.log_metrics(1, {"train/loss": 1.0})
    tracker.close()
    assert not list(tmp_path.glob("wandb/offline-run-*"))  # disabled: nothing written, nothing sent


def test_logger_choices_are_checked_before_a_run_starts() -> None:
    with pytest.raises(UserInputError, match="cannot be combined"):
        resolve_trackers(["none", "mlflow"])
    with pytest.raises(UserInputError, match="unknown logger 'comet'"):
        resolve_trackers(["comet"])
    assert resolve_trackers(["none"]) == []
    assert resolve_trackers(None, tensorboard=False) == []
    assert resolve_trackers(None) == (["tensorboard"] if TRACKERS["tensorboard"].available() else [])


def test_a_requested_tracker_that_is_not_installed_names_its_extra(
    shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "mlflow", None)  # importing it fails, as without the extra
    result = CliRunner().invoke(
        app, ["pretrain", str(shards), "-o", str(tmp_path / "r"), "--config", "demo", "--logger", "mlflow"]
    )
    assert result.exit_code == 2
    assert "pip install 'medst[mlflow]'" in result.output
    assert not (tmp_path / "r").exists()  # refused before the run folder is made


def _damaged_copy(shards: Path, dest: Path) -> str:
    """A copy of ``shards`` whose first training shard holds a frontal image that is not an image (its index
    entry updated, so the shard counts as complete and the run starts); returns the damaged member's name."""
    import hashlib
    import io
    import shutil
    import tarfile

    shutil.copytree(shards, dest)
    tar_path = dest / "train-000000.tar"
    with tarfile.open(tar_path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    target = next(m.name for m, _ in members if m.name.endswith(".frontal.jpg"))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for info, content in members:
            content = b"not an image" if info.name == target else content
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    tar_path.write_bytes(buf.getvalue())
    entry_path = dest / "index" / "train-000000.json"
    entry = json.loads(entry_path.read_text())
    entry.update(bytes=tar_path.stat().st_size, sha256=hashlib.sha256(buf.getvalue()).hexdigest())
    entry_path.write_text(json.dumps(entry))
    return target


def test_a_run_that_crashes_ends_its_tracker_runs_as_failed_and_raises_its_own_error(
    shards: Path, text_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed")
    pytest.importorskip("wandb", reason="the wandb extra is not installed")
    from mlflow.tracking import MlflowClient

    from medst.schemas.train import resolve_config
    from medst.shards.members import ShardReadError
    from medst.train.loop import pretrain

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_PROJECT", "WANDB_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))  # offline
    monkeypatch.setenv("WANDB_SILENT", "true")
    damaged = tmp_path / "shards"
    member = _damaged_copy(shards, damaged)
    run = tmp_path / "run-crash"
    options = {"shards": damaged, "out": run, "text_model": text_model, "steps": 40, "batch_size": 2,
               "log_every": 1, "ckpt_every": 1000, "val_every": None, "num_workers": 0, "device": "cpu",
               "progress": False, "export": False, "loggers": ["mlflow", "wandb", "tensorboard"],
               "experiment": "crash-test"}  # fmt: skip
    # 40 steps are several epochs: every shard is read, so the damaged image stops the run.
    with pytest.raises(ShardReadError) as raised:
        pretrain(resolve_config("demo", options))
    assert "train-000000.tar" in str(raised.value) and member in str(raised.value)

    ids = json.loads((run / "trackers.json").read_text())
    client = MlflowClient(tracking_uri=(run / "mlruns").as_uri())
    found = client.get_run(ids["mlflow"])
    assert found.info.status == "FAILED"
    # It failed mid-training, after logged steps.
    assert client.get_metric_history(ids["mlflow"], "train/loss")
    assert found.info.end_time is not None and found.info.end_time >= found.info.start_time

    (folder,) = (run / "wandb").glob(f"offline-run-*-{ids['wandb']}")
    exits = [r.exit for r in _wandb_records(folder / f"run-{ids['wandb']}.wandb") if r.HasField("exit")]
    assert [e.exit_code for e in exits] == [1]
