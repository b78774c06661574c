"""`medst.hub.MedSTModel`: a Med-ST export saved and loaded the Hugging Face way, offline, with a model card."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from test_inference_helpers import build_tiny_export, write_images

import medst
from medst.inference import ModelLoadError

TEXTS = ["small left pleural effusion", "no pneumothorax"]


def _results(path: Path) -> Path:
    from medst.schemas.eval import MetricResult, Results

    metrics = [
        MetricResult(task="rsna-zeroshot", metric="auroc", variant="clean", protocol="p", value=0.8123, n=50),
        MetricResult(
            task="retrieval", metric="R@1 image->text", variant="both", protocol="p", value=0.3, n=9
        ),
        MetricResult(
            task="covidx-probe", metric="accuracy@1%", variant="clean", protocol="p", value=float("nan"), n=5
        ),
    ]
    res = Results(medst_version="x", run="r", model_fingerprint="f", config={}, metrics=metrics, tasks=[])
    path.write_text(res.model_dump_json())
    return path


def test_save_pretrained_then_from_pretrained_offline_in_a_fresh_process_gives_identical_embeddings(
    tmp_path: Path,
) -> None:
    from huggingface_hub import ModelCard

    from medst.hub import MedSTModel

    export = build_tiny_export(tmp_path / "run")
    images = write_images(tmp_path / "images", 3, ".png")
    model = MedSTModel.from_pretrained(str(export), device="cpu")
    saved = tmp_path / "hf-model"
    model.save_pretrained(
        saved, model_card_kwargs={"results": _results(tmp_path / "results.json"), "datasets": ["mimic-cxr"]}
    )

    names = sorted(p.name for p in saved.iterdir())
    assert {"config.json", "model.safetensors", "README.md", "tokenizer_config.json"} <= set(names)
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))]  # safetensors only

    card = ModelCard.load(saved / "README.md")
    assert card.content.startswith("---\n")
    meta = card.data.to_dict()
    assert (meta["license"], meta["library_name"], meta["datasets"]) == ("apache-2.0", "medst", ["mimic-cxr"])
    results = meta["model-index"][0]["results"]
    values = {(r["dataset"]["type"], r["metrics"][0]["type"]): r["metrics"][0]["value"] for r in results}
    assert values == {
        ("rsna-pneumonia", "roc_auc"): 0.8123,
        ("held-out-studies", "recall"): 0.3,
    }  # NaN left out

    expected = medst.load(export, device="cpu")
    want_img = expected.encode_images(images).numpy()
    want_txt = expected.encode_texts(TEXTS).numpy()
    script = textwrap.dedent(
        f"""
        import numpy as np
        from medst.hub import MedSTModel
        m = MedSTModel.from_pretrained({str(saved)!r}, device="cpu")
        np.save({str(tmp_path / "img.npy")!r}, m.encoder.encode_images({[str(p) for p in images]!r}).numpy())
        np.save({str(tmp_path / "txt.npy")!r}, m.encoder.encode_texts({TEXTS!r}).numpy())
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert np.array_equal(np.load(tmp_path / "img.npy"), want_img)
    assert np.array_equal(np.load(tmp_path / "txt.npy"), want_txt)
    # The saved folder is an ordinary medst export too.
    assert np.array_equal(medst.load(saved, device="cpu").encode_texts(TEXTS).numpy(), want_txt)
    assert json.loads((saved / "config.json").read_text())["format"] == "medst-model"


def test_from_pretrained_refuses_a_folder_without_safetensors_weights(tmp_path: Path) -> None:
    from medst.hub import MedSTModel

    export = build_tiny_export(tmp_path / "run")
    (export / "model.safetensors").rename(export / "model.bin")
    with pytest.raises(ModelLoadError, match="safetensors only"):
        MedSTModel.from_pretrained(str(export))
