"""`medst.load` finds the model in run and export folders, refuses folders whose config and weights disagree,
and never unpickles code."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_inference_helpers import build_tiny_export, write_images

import medst
from medst.inference import ModelLoadError


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_export(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_images(tmp_path_factory.mktemp("images"), 3)


def _copy(export: Path, to: Path) -> Path:
    shutil.copytree(export, to)
    return to


def test_import_medst_stays_light() -> None:
    code = (
        "import sys, medst; assert callable(medst.load); assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_path_and_folder_without_model_say_what_to_give(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no such file or folder"):
        medst.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"no model found .*model\.safetensors"):
        medst.load(tmp_path / "empty")


def test_config_that_does_not_match_the_weights_is_refused_naming_the_shapes(
    export: Path, tmp_path: Path
) -> None:
    folder = _copy(export, tmp_path / "m")
    meta = json.loads((folder / "config.json").read_text())
    meta["model_config"]["proj_dim"] = 32
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match=r"does not match .*shape.*img_global"):
        medst.load(folder, device="cpu")


def test_weights_with_a_missing_key_are_refused_naming_it(export: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    folder = _copy(export, tmp_path / "m")
    state = load_file(str(folder / "model.safetensors"))
    del state["vit.cls_token"]
    state["extra.weight"] = torch.zeros(2)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "medst-model"})
    with pytest.raises(ModelLoadError) as err:
        medst.load(folder, device="cpu")
    assert "missing" in str(err.value) and "vit.cls_token" in str(err.value)
    assert "unexpected" in str(err.value) and "extra.weight" in str(err.value)


class _Payload:
    """Unpickling this runs ``Path.touch(marker)``: stands in for arbitrary code hidden in a checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.marker,))


def test_a_pickled_checkpoint_with_code_is_refused_without_running_it(export: Path, tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    shutil.copy(export / "config.json", folder / "config.json")
    marker = tmp_path / "payload_ran"
    torch.save({"model": {"vit.cls_token": torch.zeros(1)}, "hook": _Payload(marker)}, folder / "model.pt")
    for target in (folder, folder / "model.pt"):
        with pytest.raises(ModelLoadError, match=r"refusing .*model\.pt.*not unpickled"):
            medst.load(target, device="cpu")
    assert not marker.exists()
    # The payload is live: plain unpickling (what medst never does) runs it.
    with open(folder / "model.pt", "rb") as fh:
        torch.load(fh, weights_only=False)
    assert marker.exists()


def test_a_plain_tensor_pt_file_loads_like_the_safetensors(
    export: Path, images: list[Path], tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    folder = _copy(export, tmp_path / "m")
    torch.save({"state_dict": load_file(str(folder / "model.safetensors"))}, folder / "model.pt")
    (folder / "model.safetensors").unlink()
    a = medst.load(export, device="cpu").encode_images(images)
    b = medst.load(folder, device="cpu").encode_images(images)
    assert torch.equal(a, b)
    # the fingerprint identifies the weights file, so the two files differ while their numbers agree
    fp = medst.load(export, device="cpu").fingerprint
    assert len(fp) == 64 and fp == medst.load(export, device="cpu").fingerprint


def test_recorded_preprocessing_is_used(tmp_path: Path) -> None:
    folder = build_tiny_export(tmp_path, extra={"preprocess": {"preset": "voi", "stored_size": 128}})
    enc = medst.load(folder, device="cpu")
    assert (enc.settings.preset, enc.settings.stored_size, enc.settings.recorded) == ("voi", 128, True)
    assert medst.load(folder, device="cpu", preset="mimic-jpg").settings.preset == "mimic-jpg"


# ------------------------------------------------------------------------------------------- a real run folder


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two real training steps of the demo preset on tiny shards: RUN/export and RUN/checkpoints/step-00000002."""
    from train_shards import make_tiny_shards

    from medst.schemas.train import resolve_config
    from medst.train.loop import pretrain

    root = tmp_path_factory.mktemp("run")
    shards = make_tiny_shards(root, patients=4, val_patients=0)
    out = root / "run"
    options = {"shards": shards, "out": out, "steps": 2, "batch_size": 2, "ckpt_every": 2, "num_workers": 0,
               "device": "cpu", "progress": False, "tensorboard": False}  # fmt: skip
    pretrain(resolve_config("demo", options))
    return out


def test_run_folder_uses_its_export_and_latest_checkpoint_gives_the_same_model(
    run: Path, images: list[Path], tmp_path: Path
) -> None:
    enc = medst.load(run, device="cpu")
    assert enc.source == run / "export"
    ckpt = medst.load(run, device="cpu", checkpoint="latest")
    assert ckpt.source == run / "checkpoints" / "step-00000002"
    assert ckpt.settings == enc.settings
    assert torch.equal(enc.encode_images(images), ckpt.encode_images(images))
    texts = ["small left pleural effusion", "no pneumothorax"]
    assert torch.equal(enc.encode_texts(texts), ckpt.encode_texts(texts))
    # a run without export (still training) falls back to its newest checkpoint
    partial = tmp_path / "partial"
    shutil.copytree(run, partial, ignore=shutil.ignore_patterns("export"))
    assert medst.load(partial, device="cpu").source == partial / "checkpoints" / "step-00000002"


def test_an_exported_run_records_the_shard_preprocessing(run: Path) -> None:
    """The export carries the shards' intensity preset and stored size, so nothing is assumed at load time."""
    import json

    options = json.loads((run.parent / "shards" / "summary.json").read_text())["options"]
    recorded = json.loads((run / "export" / "config.json").read_text())["extra"]["data"]["options"]
    assert recorded["preset"] == options["preset"] and recorded["image_size"] == options["image_size"]
    settings = medst.load(run / "export", device="cpu").settings
    assert settings.recorded
    assert (settings.preset, settings.stored_size) == (options["preset"], options["image_size"])
