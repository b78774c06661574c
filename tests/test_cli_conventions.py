"""CLI conventions (issue 18 item 4): `-h` is `--help` everywhere, `-q/--quiet` silences progress on every command
that shows it, `--workers` always counts processes, every choice is an enum taken from its schema Literal (listed in
`--help`, completed by the shell), shell completion installs, and `--help` reads at 80 columns."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from enum import Enum
from pathlib import Path
from typing import Any, get_args

import pytest
import typer
import yaml
from typer.testing import CliRunner

from medst.archive.readers import READERS
from medst.cli.app import app
from medst.executors import ENGINES
from medst.schemas.build import BuildConfig
from medst.schemas.embed import EmbedConfig
from medst.schemas.eval import EvalConfig, TaskName
from medst.schemas.model import ModelConfig
from medst.schemas.shards import ShardConfig
from medst.schemas.synth import Release
from medst.schemas.train import DeviceName, Precision, PretrainConfig

REPO = Path(__file__).resolve().parents[1]
MEDST = Path(sys.executable).with_name("medst")
GROUP: Any = typer.main.get_command(app)
COMMANDS = sorted(GROUP.commands)


def medst(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k not in ("MEDST_DEBUG", "COLUMNS")} | (env or {})
    return subprocess.run(
        [str(MEDST), *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=300, env=full_env
    )


def _field(model: Any, name: str) -> tuple[str, ...]:
    return _literal(model.model_fields[name].annotation)


def _literal(tp: Any) -> tuple[str, ...]:
    args = get_args(tp)
    if args and all(isinstance(a, str) for a in args):
        return args
    return tuple(v for a in args for v in _literal(a))


# Every choice option, with the one place its values are declared.
CHOICES: dict[str, dict[str, tuple[str, ...]]] = {
    "synth": {"--release": get_args(Release), "--engine": tuple(ENGINES)},
    "build-sequences": {
        "--compat": _field(BuildConfig, "compat"),
        "--read-headers": _field(BuildConfig, "read_headers"),
        "--check-files": _field(BuildConfig, "check_files"),
        "--engine": tuple(ENGINES),
    },
    "shard": {
        "--preset": _field(ShardConfig, "preset"),
        "--format": _field(ShardConfig, "format"),
        "--engine": tuple(ENGINES),
    },
    "pretrain": {
        "--lateral-init": _field(ModelConfig, "lateral_init"),
        "--precision": get_args(Precision),
        "--compat": _field(ModelConfig, "compat"),
        "--device": get_args(DeviceName),
        "--logger": _field(PretrainConfig, "loggers"),
    },
    "eval": {"--task": (*get_args(TaskName), "all"), "--split": _field(EvalConfig, "retrieval_split")},
    "embed": {"--preset": _field(EmbedConfig, "preset"), "--engine": tuple(ENGINES)},
}
PROGRESS_COMMANDS = ("synth", "build-sequences", "shard", "pretrain", "eval", "embed", "demo")


def _option(command: str, flag: str) -> Any:
    return next(p for p in GROUP.commands[command].params if flag in getattr(p, "opts", ()))


def _flat(text: str) -> str:
    """Help text as one line, undoing the wrapping (click may break a line after a hyphen)."""
    return " ".join(re.sub(r"-\n\s+", "-", text).split())


def test_choice_options_take_their_values_from_the_schema_literals() -> None:
    found = {
        name: {
            next(o for o in p.opts if o.startswith("--"))
            for p in GROUP.commands[name].params
            if getattr(p, "type_descriptor", None) is not None and p.type_descriptor.is_choice
        }
        for name in COMMANDS
    }
    assert {k: v for k, v in found.items() if v} == {k: set(v) for k, v in CHOICES.items()}
    for command, options in CHOICES.items():
        for flag, values in options.items():
            choices = _option(command, flag).type_descriptor.choices
            assert tuple(c.value for c in choices) == values, (command, flag)
            assert all(isinstance(c, Enum) and isinstance(c, str) for c in choices)


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_at_80_columns_has_no_long_line_and_lists_every_choice(command: str) -> None:
    args = [command] if command else []
    long = medst(*args, "--help", env={"COLUMNS": "80"})
    short = medst(*args, "-h", env={"COLUMNS": "80"})
    assert long.returncode == 0 and short.returncode == 0, long.stderr + short.stderr
    assert short.stdout == long.stdout and long.stdout.startswith("Usage: medst")
    wide = [line for line in long.stdout.splitlines() if len(line) > 80]
    assert not wide, wide
    text = _flat(long.stdout)
    for flag, values in CHOICES.get(command, {}).items():
        assert flag in text
        for value in values:
            assert re.search(rf"(?<![\w-]){re.escape(value)}(?![\w-])", text), (flag, value)
    if command in PROGRESS_COMMANDS:
        assert "-q, --quiet" in text
    # the older spellings work but are not advertised
    for old in ("--progress", "--no-progress", "--num-workers"):
        assert old not in text
    if command in ("synth", "build-sequences", "shard", "pretrain", "demo", "embed"):
        assert re.search(r"--workers <int> +\S*[^.]*process", long.stdout, re.I), command
    if command == "embed":
        assert "--threads" in text


def test_a_value_outside_the_choices_is_one_line_naming_them() -> None:
    proc = medst("shard", REPO, "-o", REPO / "never", "--format", "tiff")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: --format 'tiff': choose from jpg | png (see `medst shard --help`)"
    assert not (REPO / "never").exists()


def test_show_completion_prints_a_script_and_the_shell_completes_choices() -> None:
    proc = medst("--show-completion", "bash")
    assert proc.returncode == 0, proc.stderr
    assert "_MEDST_COMPLETE=complete_bash" in proc.stdout and "complete -o default -F" in proc.stdout

    def complete(words: str) -> list[str]:
        env = {"_MEDST_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split()))}
        done = medst(env=env)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert complete("medst shard SEQ --preset ") == ["mimic-jpg", "voi"]
    assert complete("medst pretrain SHARDS --precision ") == ["auto", "bf16", "fp32"]
    assert complete("medst pretrain SHARDS --config ") == ["demo", "paper"]
    assert complete("medst eval RUN --task ") == [*get_args(TaskName), "all"]
    # Registries: every engine and every archive reader, in their order.
    assert complete("medst shard SEQ --engine ") == list(ENGINES)
    assert complete("medst build-sequences ARCHIVE --reader ") == list(READERS)


def _config(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(
        app, ["pretrain", "shards", "-o", "run", "--config", "demo", "--print-config", *args]
    )
    assert result.exit_code == 0, result.output
    return dict(yaml.safe_load(result.output))


def test_pretrain_workers_and_quiet_with_their_older_spellings() -> None:
    base = _config()
    assert base["progress"] is True and base["num_workers"] == 0
    assert _config("--workers", "3")["num_workers"] == 3
    assert _config("--num-workers", "5")["num_workers"] == 5
    assert _config("-q")["progress"] is False
    assert _config("--quiet")["progress"] is False
    assert _config("--no-progress")["progress"] is False
    assert _config("--precision", "bf16", "--device", "cpu")["precision"] == "bf16"
    result = CliRunner().invoke(app, ["pretrain", "s", "-o", "r", "--workers", "2", "--num-workers", "3"])
    assert result.exit_code == 2


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("conventions") / "archive"
    proc = medst("synth", out, "--patients", "3", "--image-size", "64", "-q")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # -q: no progress lines
    return out


def test_quiet_silences_progress_and_the_old_flag_still_does(archive: Path, tmp_path: Path) -> None:
    loud = medst("build-sequences", archive, "-o", tmp_path / "seq")
    assert loud.returncode == 0 and loud.stderr.strip(), loud.stderr  # progress lines when not quiet
    for i, flag in enumerate(("-q", "--quiet", "--no-progress")):
        proc = medst("build-sequences", archive, "-o", tmp_path / f"seq{i}", flag)
        assert proc.returncode == 0 and proc.stderr == "", (flag, proc.stderr)
        assert proc.stdout == loud.stdout.replace(str(tmp_path / "seq"), str(tmp_path / f"seq{i}"))
    shard_loud = medst("shard", tmp_path / "seq", "-o", tmp_path / "sh", "--image-size", "64")
    shard_quiet = medst("shard", tmp_path / "seq", "-o", tmp_path / "shq", "--image-size", "64", "-q")
    assert shard_loud.returncode == 0 and shard_loud.stderr.strip(), shard_loud.stderr
    assert shard_quiet.returncode == 0 and shard_quiet.stderr == "", shard_quiet.stderr
