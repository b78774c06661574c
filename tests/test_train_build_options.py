"""One T from build to training: build-sequences' options travel in the shards' plan.json, pretrain takes its window
length T from there (unless --seq-len says otherwise), records it in config.yaml, and warns on a compat mismatch.
All on a real synthetic archive (8 patients, 64 px) built with T = 3, stride 2, min_len 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from medst.cli.app import app
from medst.schemas.build import BuildConfig
from medst.schemas.shards import ShardConfig, ShardPlan, plan_build
from medst.schemas.synth import SynthConfig
from medst.schemas.train import PretrainConfig, resolve_config
from medst.sequences.build import build_sequences
from medst.sequences.windows import cut_windows
from medst.shards.writer import write_shards
from medst.synth import generate
from medst.train.components import compat_mismatch
from medst.train.loop import pretrain

BUILD = {"seq_len": 3, "stride": 2, "min_len": 2}


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onet") / "archive"
    generate(SynthConfig(out=out, patients=8, seed=0, image_size=64), progress=False)
    return out


def _build_and_shard(archive: Path, root: Path, compat: str) -> tuple[Path, Path]:
    seq, shards = root / f"seq-{compat}", root / f"shards-{compat}"
    build_sequences(BuildConfig(archive=archive, out=seq, compat=compat, **BUILD), progress=False)  # type: ignore[arg-type]
    write_shards(ShardConfig(seq=seq, out=shards, image_size=64), progress=False)
    return seq, shards


@pytest.fixture(scope="module")
def clean(archive: Path) -> tuple[Path, Path]:
    return _build_and_shard(archive, archive.parent, "clean")


@pytest.fixture(scope="module")
def text_model(clean: tuple[Path, Path]) -> Path:
    """One small text model for every run (each run folder would otherwise train its own)."""
    from medst.model.config import ModelConfig
    from medst.model.text import build_demo_text_model
    from medst.train.components import training_texts

    text = ModelConfig.preset("tiny").text
    return build_demo_text_model(
        training_texts(clean[1]), clean[1].parent / "text_model", vocab_size=text.vocab_size, hidden=text.hidden,
        layers=text.layers, heads=text.heads, max_length=text.max_length,
    )  # fmt: skip


def _cli(shards: Path, run: Path, text_model: Path, *extra: str, steps: int = 1) -> list[str]:
    return [
        "pretrain", str(shards), "-o", str(run), "--config", "demo", "--steps", str(steps), "--batch-size", "2",
        "--text-model", str(text_model), "--workers", "0", "--device", "cpu", "--val-every", "100", "-q", *extra,
    ]  # fmt: skip


def test_plan_records_the_build_and_the_manifest_windows_are_the_loaders(clean: tuple[Path, Path]) -> None:
    seq, shards = clean
    plan = json.loads((shards / "plan.json").read_text())
    report = json.loads((seq / "build_report.json").read_text())
    assert plan["build"] == {**BUILD, "compat": "clean", "medst_version": report["medst_version"]}
    assert plan_build(shards) == ShardPlan.model_validate(plan).build

    # sequences.parquet is cut by the same function the loader cuts shard timelines with.
    studies = pl.read_parquet(seq / "studies.parquet")  # one row per time step, in (subject_id, time) order
    expected = [
        (subject, ids[a:b])
        for (subject,), group in studies.group_by("subject_id", maintain_order=True)
        for ids in [group.get_column("study_id").to_list()]
        for a, b in cut_windows(len(ids), BUILD["seq_len"], BUILD["stride"], BUILD["min_len"])
    ]
    sequences = pl.read_parquet(seq / "sequences.parquet").sort("sequence_id")
    assert (
        list(zip(sequences["subject_id"].to_list(), sequences["study_ids"].to_list(), strict=True))
        == expected
    )
    assert any(len(ids) < BUILD["seq_len"] for _, ids in expected)  # a remainder window is in the test


def test_pretrain_takes_t_from_the_build_and_warns_on_a_compat_mismatch(
    clean: tuple[Path, Path], text_model: Path, tmp_path: Path
) -> None:
    shards = clean[1]
    run = tmp_path / "run"
    result = CliRunner().invoke(app, _cli(shards, run, text_model, "--compat", "reference"))
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((run / "config.yaml").read_text())["seq_len"] == BUILD["seq_len"]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, result.stderr
    assert "--compat reference on shards whose timelines were built with --compat clean" in warnings[0]

    # --seq-len wins over the build's T (training on another T is legitimate).
    printed = CliRunner().invoke(
        app, _cli(shards, tmp_path / "other", text_model, "--seq-len", "2", "--print-config")
    )
    assert printed.exit_code == 0, printed.output
    assert yaml.safe_load(printed.stdout)["seq_len"] == 2


def test_a_resumed_run_keeps_its_stored_t(clean: tuple[Path, Path], text_model: Path, tmp_path: Path) -> None:
    shards, run = clean[1], tmp_path / "run"
    first = CliRunner().invoke(
        app, _cli(shards, run, text_model, "--seq-len", "2", "--max-steps-this-invocation", "1", steps=2)
    )
    assert first.exit_code == 0, first.output
    resumed = CliRunner().invoke(app, ["pretrain", "-o", str(run), "--resume", "latest", "-q"])
    assert resumed.exit_code == 0, resumed.output
    assert "done: 2/2 steps" in resumed.stdout
    assert yaml.safe_load((run / "config.yaml").read_text())["seq_len"] == 2


def test_an_old_plan_without_the_build_block_trains_with_the_default_t(
    clean: tuple[Path, Path], text_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = tmp_path / "shards"
    shutil.copytree(clean[1], old)
    plan = json.loads((old / "plan.json").read_text())
    del plan["build"]  # as a medst before the block wrote it
    (old / "plan.json").write_text(json.dumps(plan, indent=1, sort_keys=True))
    assert plan_build(old) is None

    options = {"shards": old, "out": tmp_path / "run", "text_model": text_model, "steps": 1, "batch_size": 2,
               "num_workers": 0, "device": "cpu", "progress": False, "export": False, "compat": "reference"}  # fmt: skip
    summary = pretrain(resolve_config("demo", options))
    assert summary.steps == 1
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["seq_len"] == 4
    assert "warning" not in capsys.readouterr().err  # nothing recorded, nothing to compare


def test_clean_training_on_reference_timelines_is_named(archive: Path, tmp_path: Path) -> None:
    _, shards = _build_and_shard(archive, tmp_path, "reference")
    build = plan_build(shards)
    assert build is not None and build.compat == "reference" and build.seq_len == BUILD["seq_len"]
    line = compat_mismatch(PretrainConfig(shards=shards, compat="clean"))
    assert (
        line is not None
        and "--compat clean on shards whose timelines were built with --compat reference" in line
    )
    assert compat_mismatch(PretrainConfig(shards=shards, compat="reference")) is None
