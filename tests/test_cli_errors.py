"""One error path: every user error of every command is one line on stderr and exit 2, naming the option; a bug is
one line with a --debug hint and exit 1; the traceback only with --debug or MEDST_DEBUG=1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer

REPO = Path(__file__).resolve().parents[1]


def medst(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "medst", *map(str, args)]
    full_env = {k: v for k, v in os.environ.items() if k != "MEDST_DEBUG"} | (env or {})
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=full_env)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli-errors")
    (root / "bad.yaml").write_text("lr: [1, 2\nsteps: 3\n")  # unclosed list
    (root / "negative.yaml").write_text("lr: -1\n")
    (root / "taken").mkdir()
    (root / "lines.txt").write_text("no acute findings\n")
    return root


CASES: dict[str, tuple[list[str], str]] = {
    # name: (arguments; {root} is the fixture folder, text the one line must contain)
    "doctor unknown option": (["doctor", "--colour"], "No such option: --colour"),
    "synth bad option": (["synth", "{root}/s", "--image-size", "3"], "--image-size 3: "),
    "synth bad release": (["synth", "{root}/s", "--release", "tiff"], "--release 'tiff': "),
    "build-sequences missing archive": (["build-sequences", "{root}/nope", "-o", "{root}/b"], "nope"),
    "build-sequences bad option": (
        ["build-sequences", "{root}", "-o", "{root}/b", "--compat", "authors"],
        "--compat 'authors': ",
    ),
    "shard bad option": (["shard", "{root}", "-o", "{root}/sh", "--image-size", "10"], "--image-size 10: "),
    "shard bad part": (["shard", "{root}", "-o", "{root}/sh", "--part", "3"], "--part"),
    "shard missing seq": (["shard", "{root}/nope", "-o", "{root}/sh"], "nope"),
    "inspect missing shards": (["inspect", "{root}/nope", "-o", "{root}/t.png"], "nope"),
    "pretrain bad yaml": (
        ["pretrain", "{root}", "-o", "{root}/r", "--config", "{root}/bad.yaml"],
        "bad YAML",
    ),
    "pretrain bad yaml value": (
        ["pretrain", "{root}", "-o", "{root}/r", "--config", "{root}/negative.yaml"],
        "--lr -1: ",
    ),
    "pretrain bad option": (
        ["pretrain", "{root}", "-o", "{root}/r", "--accumulate", "0"],
        "--accumulate 0: ",
    ),
    "pretrain missing config": (
        ["pretrain", "{root}", "-o", "{root}/r", "--config", "{root}/n.yaml"],
        "n.yaml",
    ),
    "eval unknown task": (["eval", "{root}", "--task", "mnist", "-o", "{root}/e"], "--task 'mnist'"),
    "eval missing run": (["eval", "{root}/nope", "-o", "{root}/e"], "nope"),
    "embed bad option": (
        ["embed", "--text", "{root}/lines.txt", "-o", "{root}/x.parquet", "--batch-size", "0"],
        "--batch-size 0: ",
    ),
    "embed folder as out": (["embed", "--text", "{root}/lines.txt", "-o", "{root}/taken"], "is a folder"),
    "embed missing model": (
        ["embed", "--text", "{root}/lines.txt", "-o", "{root}/x.parquet", "-m", "{root}/nope"],
        "nope",
    ),
    "demo bad option": (["demo", "-o", "{root}/d", "--patients", "1"], "--patients 1: "),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_user_error_is_one_line_and_exit_2(files: Path, case: str) -> None:
    args, expected = CASES[case]
    proc = medst(*[a.replace("{root}", str(files)) for a in args])
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]
    assert not (files / "r").exists() and not (files / "e").exists()  # an error costs no folder


def test_debug_flag_or_env_shows_the_traceback(files: Path) -> None:
    args = ["pretrain", str(files), "-o", str(files / "r"), "--config", str(files / "bad.yaml")]
    for proc in (medst(*args, "--debug"), medst("--debug", *args), medst(*args, env={"MEDST_DEBUG": "1"})):
        assert proc.returncode == 2
        assert "Traceback" in proc.stderr and "yaml" in proc.stderr
        assert proc.stderr.rstrip().splitlines()[-1].startswith("error: bad YAML")


def test_a_bug_is_one_line_with_a_debug_hint_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    from medst.cli.errors import run

    app = typer.Typer()

    @app.command()
    def broken(n: int = 1) -> None:
        print({}["missing"])

    @app.command()
    def other() -> None:  # two commands make a group, as medst is
        pass

    os.environ.pop("MEDST_DEBUG", None)
    assert run(typer.main.get_command(app), ["broken"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "internal error (KeyError" in err[0] and "--debug" in err[0]
