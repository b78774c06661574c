"""Pretrain config: presets, YAML files, CLI overrides, the written config, and the resume check."""

from __future__ import annotations

from pathlib import Path

import pytest

from medst.errors import UserInputError
from medst.schemas.train import (
    PRESETS,
    PretrainConfig,
    config_differences,
    config_to_yaml,
    resolve_config,
    resolve_resumed_config,
)


def test_paper_preset_is_the_authors_recipe() -> None:
    cfg = resolve_config("paper")
    assert cfg.preset == "paper" and cfg.model_preset == "paper"
    assert cfg.lr == 4e-5 and cfg.betas == (0.9, 0.999) and cfg.weight_decay == 0.05
    assert cfg.warmup_fraction == 0.4 and cfg.min_lr == 1e-8
    assert cfg.epochs == 8 and cfg.steps is None
    assert cfg.batch_size == 10 and cfg.seq_len == 4
    assert cfg.precision == "auto"  # bf16 autocast on CUDA, fp32 on CPU


def test_demo_preset_and_cli_overrides() -> None:
    cfg = resolve_config("demo", {"steps": 7, "lr": 2e-4, "seed": None, "out": Path("r")})
    assert cfg.model_preset == "tiny" and cfg.build_demo_text_model
    assert cfg.steps == 7 and cfg.epochs is None
    assert cfg.lr == 2e-4
    assert cfg.seed == 0  # None means "not given on the command line"
    assert cfg.out == Path("r")
    # --epochs replaces the preset's step count instead of clashing with it
    by_epochs = resolve_config("demo", {"epochs": 2})
    assert by_epochs.epochs == 2 and by_epochs.steps is None


def test_yaml_file_names_its_base_preset_and_cli_wins(tmp_path: Path) -> None:
    file = tmp_path / "mine.yaml"
    file.write_text("preset: demo\nbatch_size: 3\nlr: 0.01\nmodel_overrides:\n  text.max_length: 32\n")
    cfg = resolve_config(file, {"lr": 0.5, "model_overrides": {"depth": 1}})
    assert cfg.preset == "demo" and cfg.model_preset == "tiny"
    assert cfg.batch_size == 3
    assert cfg.lr == 0.5
    assert cfg.model.text.max_length == 32 and cfg.model.depth == 1 and cfg.model.width == 64  # tiny's width


def test_toml_file(tmp_path: Path) -> None:
    file = tmp_path / "mine.toml"
    file.write_text('preset = "demo"\nseq_len = 3\n[model_overrides]\n"text.max_length" = 48\n')
    cfg = resolve_config(file)
    assert cfg.preset == "demo" and cfg.seq_len == 3 and cfg.model.text.max_length == 48


def test_written_config_round_trips(tmp_path: Path) -> None:
    cfg = resolve_config("demo", {"steps": 11, "text_model": tmp_path})
    file = tmp_path / "config.yaml"
    file.write_text(config_to_yaml(cfg))
    again = resolve_config(file)
    assert again == cfg


def test_bad_inputs_are_one_line_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="not found"):
        resolve_config(tmp_path / "missing.yaml")
    with pytest.raises(UserInputError, match="lr"):
        resolve_config("demo", {"lr": -1.0})
    bad = tmp_path / "bad.yaml"
    bad.write_text("preset: nope\n")
    with pytest.raises(UserInputError, match="unknown preset"):
        resolve_config(bad)
    with pytest.raises(UserInputError, match="no_such_option"):
        resolve_config("demo", {"no_such_option": 1})
    with pytest.raises(UserInputError, match="batch_size"):  # one window of one study has no negatives
        resolve_config("demo", {"batch_size": 1})


def test_resume_check_ignores_bookkeeping_but_not_the_recipe() -> None:
    base = resolve_config("demo")
    assert config_differences(base, base.model_copy(update={"num_workers": 3, "resume": "latest"})) == []
    assert config_differences(base, base.model_copy(update={"lr": 1.0, "seed": 5})) == ["lr", "seed"]


def test_every_preset_validates() -> None:
    for name in PRESETS:
        assert isinstance(resolve_config(name), PretrainConfig)


def test_cli_prints_the_resolved_config(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from medst.cli.app import app

    result = CliRunner().invoke(
        app,
        [
            "pretrain",
            str(tmp_path),
            "-o",
            str(tmp_path / "run"),
            "--config",
            "demo",
            "--lr",
            "0.02",
            "--print-config",
        ],
    )
    assert result.exit_code == 0, result.output
    file = tmp_path / "printed.yaml"
    file.write_text(result.output)
    again = resolve_config(file)
    assert again.lr == 0.02 and again.preset == "demo" and again.shards == tmp_path


def test_the_model_is_a_section_of_the_config_that_layers_fill_field_by_field(tmp_path: Path) -> None:
    file = tmp_path / "mine.yaml"
    file.write_text("preset: demo\nmodel:\n  depth: 1\n  temperatures:\n    local: 0.2\n")
    cfg = resolve_config(file, {"lambda1": 0.5, "compat": "reference"})  # the command line's flat options
    assert (cfg.model.depth, cfg.model.width, cfg.model.temperatures.local) == (1, 64, 0.2)
    assert (
        cfg.model.temperatures.global_ == 0.07
        and cfg.model.lambda1 == 0.5
        and cfg.model.compat == "reference"
    )
    written = config_to_yaml(cfg)
    assert "lambda1" not in written.split("model:")[0]  # one home: under model only
    assert resolve_config(_write(tmp_path / "again.yaml", written)) == cfg
    with pytest.raises(UserInputError, match="heads"):
        resolve_config("demo", {"model_overrides": {"width": 63}})


def test_a_run_written_before_the_model_was_nested_loads_and_resumes(tmp_path: Path) -> None:
    flat = (
        "preset: demo\nmodel_preset: tiny\nsteps: 5\nepochs: null\nlambda1: 2.0\nlambda2: 0.5\n"
        "compat: reference\nlateral_init: copy\ngrad_checkpointing: true\ngather_negatives: false\n"
        "model_overrides:\n  text.max_length: 32\n  depth: 1\n"
    )
    stored = _write(tmp_path / "config.yaml", flat)
    cfg = resolve_resumed_config(stored, {"num_workers": 2})
    model = cfg.model
    assert (model.lambda1, model.lambda2, model.compat, model.lateral_init) == (2.0, 0.5, "reference", "copy")
    assert model.grad_checkpointing and model.text.max_length == 32 and model.depth == 1 and model.width == 64
    assert cfg.num_workers == 2 and cfg.steps == 5
    with pytest.raises(UserInputError, match=r"--lambda1 3.0 differs .*model.lambda1: 2.0"):
        resolve_resumed_config(stored, {"lambda1": 3.0})


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
