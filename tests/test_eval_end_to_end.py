"""`medst eval` end to end on the synthetic archive with a tiny random model: every task runs, results.json /
results.md / plots are written with CIs and chance levels; the feature cache is hit on a re-run and invalidated by
another model; the CLI stops with one line when benchmark files are missing."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medst.eval.features import FeatureExtractor
from medst.eval.run import evaluate
from medst.eval.tasks import TASKS
from medst.schemas.eval import ALL_TASKS, EvalConfig

TEXTS = [
    "no acute cardiopulmonary process",
    "small left pleural effusion is unchanged",
    "right lower lobe pneumonia has worsened",
    "mild pulmonary edema has improved",
] * 4


def _tiny_model(folder: Path, text_dir: Path, seed: int) -> Path:
    import torch
    from transformers import AutoModel, AutoTokenizer

    from medst.model import MedST, ModelConfig
    from medst.model.io import save_model

    torch.manual_seed(seed)
    bert = AutoModel.from_pretrained(str(text_dir), local_files_only=True)
    model = MedST(ModelConfig.preset("tiny"), text_model=bert)
    return save_model(
        model, folder, tokenizer=AutoTokenizer.from_pretrained(str(text_dir), local_files_only=True)
    )


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two exported tiny random models that differ only in their initialisation seed."""
    from medst.model.text import build_demo_text_model

    root = tmp_path_factory.mktemp("eval_models")
    text_dir = build_demo_text_model(TEXTS, root / "text", hidden=64, layers=2, heads=2, max_length=64)
    return _tiny_model(root / "a", text_dir, 0), _tiny_model(root / "b", text_dir, 1)


def _encoder(folder: Path) -> Any:
    import medst

    if hasattr(medst, "load"):
        return medst.load(folder, device="cpu")
    import torch

    from medst.inference.encoder import MedSTEncoder
    from medst.inference.settings import settings_from_config
    from medst.model.io import load_model, load_tokenizer, read_model_meta

    model = load_model(folder)
    settings = settings_from_config(
        read_model_meta(folder), model.config.image_size, model.config.text.max_length
    )
    return MedSTEncoder(model, load_tokenizer(folder), settings, torch.device("cpu"))


@pytest.fixture(scope="module")
def shards(synth_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """Shards built from the synthetic archive by the real pipeline (None when the loader is not in the checkout)."""
    try:
        import medst.shards.loader  # noqa: F401
        from medst.schemas.build import BuildConfig
        from medst.sequences.build import build_sequences
    except ImportError:
        return None
    from medst.schemas.shards import ShardConfig
    from medst.shards.writer import write_shards

    root = tmp_path_factory.mktemp("eval_shards")
    build_sequences(BuildConfig(archive=synth_archive, out=root / "seq"), progress=False)
    write_shards(ShardConfig(seq=root / "seq", out=root / "shards", image_size=128), progress=False)
    return root / "shards"


def _parts(cache: Path) -> list[Path]:
    return sorted(cache.rglob("part-*.safetensors"))


def test_feature_cache_reused_and_invalidated_by_model(
    models: tuple[Path, Path], synth_archive: Path, tmp_path: Path
) -> None:
    paths = sorted((synth_archive / "benchmarks" / "covidx" / "test").iterdir())
    cache = tmp_path / "cache"
    first = FeatureExtractor(_encoder(models[0]), cache, batch_size=4, progress=False)
    a = first.images(paths, "cls")
    assert first.encoded_images == len(paths) and a.shape == (len(paths), 64)
    again = FeatureExtractor(
        _encoder(models[0]), cache, batch_size=4, progress=False
    )  # a new process would do this
    b = again.images(paths, "cls")
    assert again.encoded_images == 0, "second run must come from the cache"
    np.testing.assert_array_equal(a, b)
    assert again.texts(["no pneumonia"]).shape == (1, 64) and again.encoded_texts == 1
    assert (
        again.texts(["no pneumonia"]).shape == (1, 64) and again.encoded_texts == 1
    )  # in-memory + disk cache hit
    other = FeatureExtractor(_encoder(models[1]), cache, batch_size=4, progress=False)
    assert other.fingerprint != first.fingerprint
    c = other.images(paths, "cls")
    assert other.encoded_images == len(paths), "another model must not read the first model's features"
    assert not np.allclose(a, c)
    # global and cls features are cached separately
    assert first.images(paths[:2], "global").shape == (2, 64) and first.encoded_images == len(paths) + 2


def test_eval_all_tasks_end_to_end(
    models: tuple[Path, Path], synth_archive: Path, shards: Path | None, tmp_path: Path
) -> None:
    tasks = list(ALL_TASKS) if shards is not None else [t for t in ALL_TASKS if not TASKS[t].needs_shards]
    out = tmp_path / "eval"
    config = EvalConfig(
        run=models[0],
        tasks=tasks,
        data=synth_archive / "benchmarks",
        shards=shards,
        out=out,
        bootstrap=40,
        progress=False,
    )
    encoder = _encoder(models[0])
    results = evaluate(config, encoder=encoder)

    assert {m.task for m in results.metrics} == set(tasks)
    for m in results.metrics:
        assert m.ci_low is not None and m.ci_high is not None, m.metric
        assert m.chance is not None and m.n > 0, m.metric
        if np.isfinite(m.value) and np.isfinite(m.ci_low):
            assert m.ci_low - 1e-9 <= m.ci_high
    # both protocol variants where SPEC asks for them
    assert results.get("mscxrt-sentence", "accuracy", "reference") and results.get(
        "mscxrt-sentence", "accuracy", "clean"
    )
    assert results.get("rsna-zeroshot", "auroc", "reference") and results.get(
        "rsna-zeroshot", "auroc", "clean"
    )
    assert results.get("mscxrt-image", "5-fold accuracy/mean").std is not None
    for pct in ("1%", "10%", "100%"):
        for variant in ("reference", "clean"):
            assert 0.0 <= results.get("covidx-probe", f"accuracy@{pct}", variant).value <= 1.0
    if shards is not None:
        r10 = results.get("retrieval", "R@10 image->text")
        assert r10.chance == pytest.approx(min(1.0, 10 / r10.n))

    saved = json.loads((out / "results.json").read_text())
    assert saved["model_fingerprint"] == results.model_fingerprint and len(saved["metrics"]) == len(
        results.metrics
    )
    md = (out / "results.md").read_text()
    assert (
        "| task | metric | variant | value | 95% CI | chance |" in md and "reference" in md and "clean" in md
    )
    for name in (
        "rsna_roc",
        "rsna_confusion",
        "mscxrt_sentence_roc",
        "mscxrt_image_accuracy_per_finding",
        "covidx_confusion",
    ):
        assert (out / "plots" / f"{name}.png").stat().st_size > 1000, name
    assert (out / "rsna_test_patients.txt").read_text().count("\n") == results.get(
        "rsna-zeroshot", "accuracy"
    ).n

    # A second run (another seed list) re-encodes nothing: no new cache files, same features -> same numbers.
    parts = _parts(out / "feature_cache")
    again = evaluate(
        config.model_copy(update={"tasks": ["mscxrt-image", "rsna-zeroshot"], "seeds": [42]}), encoder=encoder
    )
    assert _parts(out / "feature_cache") == parts
    # NaN when the small synthetic RSNA test split holds one class only; NaN must then stay NaN.
    first = results.get("rsna-zeroshot", "auroc", "clean").value
    second = again.get("rsna-zeroshot", "auroc", "clean").value
    assert second == first or (math.isnan(first) and math.isnan(second))


def test_cli_missing_benchmark_files_is_one_line(models: tuple[Path, Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from medst.cli.app import app

    empty = tmp_path / "empty"
    empty.mkdir()
    for task, option in (
        ("covidx-probe", "--covidx-dir"),
        ("rsna-zeroshot", "--rsna-dir"),
        ("mscxrt-image", "--mscxrt-dir"),
    ):
        result = CliRunner().invoke(
            app, ["eval", str(models[0]), "--task", task, "--data", str(empty), "-o", str(tmp_path / "o")]
        )
        assert result.exit_code == 2, result.output
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and option in lines[0], result.output
        assert not (tmp_path / "o").exists()  # a failed eval leaves no output folder behind


def test_rsna_zero_shot_on_real_dicoms_rejects_the_corrupt_one(
    models: tuple[Path, Path], realdata: Path, tmp_path: Path
) -> None:
    """RSNA layout built from real DICOM files (linked, not copied): real JPEG-baseline CR images are encoded, a
    file that does not decode becomes a reject instead of stopping the evaluation."""
    from medst.eval import readers as R
    from medst.eval import rsna

    chest = realdata / "dicom" / "chest"
    sources = [chest / "rsna_sample_ap.dcm", chest / "siim_sample_pa.dcm"] * 2
    sources.append(realdata / "dicom" / "negative" / "RG2_JPLY_corrupt.dcm")
    folder = tmp_path / "rsna"
    (folder / R.RSNA_IMAGES).mkdir(parents=True)
    lines = ["patientId,x,y,width,height,Target"]
    ids = []
    for i, src in enumerate(sources):
        pid = f"real-{i}"
        ids.append(pid)
        (folder / R.RSNA_IMAGES / f"{pid}.dcm").symlink_to(src)
        lines.append(f"{pid},1,1,5,5,1" if i % 2 else f"{pid},,,,,0")
    (folder / R.RSNA_LABELS).write_text("\n".join(lines) + "\n")
    extractor = FeatureExtractor(_encoder(models[0]), tmp_path / "cache", batch_size=4, progress=False)
    out = rsna.run(extractor, R.read_rsna(folder), {"seed": 0, "test_patients": ids}, tmp_path / "out", 20)
    assert out.summary.n_rows == len(sources) - 1 and out.summary.n_rejected == 1
    assert out.summary.rejects == [f"real-{len(sources) - 1}: image_decode_error"]
    assert any(r.endswith("decode_error") for r in extractor.rejects)
    assert {(m.metric, m.variant) for m in out.metrics} == {
        ("accuracy", "both"),
        ("f1", "both"),
        ("auroc", "reference"),
        ("auroc", "clean"),
    }


def test_cli_eval_runs_and_prints_the_table(
    models: tuple[Path, Path], synth_archive: Path, tmp_path: Path
) -> None:

    from typer.testing import CliRunner

    from medst.cli.app import app

    out = tmp_path / "o"
    args = ["eval", str(models[0]), "--task", "mscxrt-sentence", "--task", "rsna-zeroshot", "--data", str(synth_archive),
            "--bootstrap", "10", "--quiet", "-o", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "| mscxrt-sentence | accuracy | reference |" in result.output
    assert "| rsna-zeroshot | auroc | clean |" in result.output
    saved = json.loads((out / "results.json").read_text())
    assert {m["task"] for m in saved["metrics"]} == {"mscxrt-sentence", "rsna-zeroshot"}


def test_eval_features_equal_the_inference_api(
    models: tuple[Path, Path], synth_archive: Path, tmp_path: Path
) -> None:
    """What `medst eval` scores (through its cache) is what `medst.load(...).encode_images` gives: equal up to float
    summation order (eval batches images in cache-key order), and bit-identical between a fresh and a cached run."""
    import medst
    from medst.eval.run import load_encoder

    paths = sorted((synth_archive / "benchmarks" / "rsna" / "stage_2_train_images").glob("*.dcm"))[:6]
    direct = medst.load(models[0], device="cpu")
    cache = tmp_path / "cache"
    fresh = FeatureExtractor(load_encoder(models[0], device="cpu"), cache, batch_size=4, progress=False)
    cached = FeatureExtractor(load_encoder(models[0], device="cpu"), cache, batch_size=4, progress=False)
    for features in ("global", "cls"):
        want = direct.encode_images(paths, features=features).numpy()
        got = fresh.images(paths, features)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6, err_msg=features)
        np.testing.assert_array_equal(cached.images(paths, features), got, err_msg=features)
    assert fresh.encoded_images == 2 * len(paths) and cached.encoded_images == 0
