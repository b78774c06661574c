"""Progress output in log files: no carriage-return frames when stderr is not a terminal, plain lines instead."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from medst.progress import PlainProgress, progress

REPO = Path(__file__).resolve().parents[1]


def test_a_real_command_with_stderr_to_a_file_writes_plain_lines_only(tmp_path: Path) -> None:
    log = tmp_path / "synth.log"
    env = {**os.environ, "MEDST_PROGRESS_INTERVAL": "0"}  # a line per update, so a short run shows several
    with log.open("wb") as err:
        proc = subprocess.run(
            [sys.executable, "-m", "medst", "synth", str(tmp_path / "a"), "--patients", "2", "--image-size", "64"],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=err, env=env, timeout=300,
        )  # fmt: skip
    assert proc.returncode == 0
    text = log.read_bytes().decode()
    assert "\r" not in text and "\x1b[" not in text
    lines = text.splitlines()
    assert any(re.fullmatch(r"images: \d+/\d+ img \(100%\) \d+ s, .* img/s", line) for line in lines), text
    assert any(line.startswith("reports: ") for line in lines), text


def test_default_interval_gives_one_closing_line(capsys: pytest.CaptureFixture[str]) -> None:
    os.environ.pop("MEDST_PROGRESS_INTERVAL", None)
    bar = progress(total=5, desc="shards", unit="shard")  # pytest's captured stderr is not a terminal
    assert isinstance(bar, PlainProgress)
    with bar:
        for _ in range(5):
            bar.update()
        bar.set_postfix({"loss": "0.52"})
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1, err  # nothing until 30 s pass, then one line when it ends
    assert err[0].startswith("shards: 5/5 shard (100%) ") and err[0].endswith("shard/s, loss=0.52")


def test_iteration_and_disabled(capsys: pytest.CaptureFixture[str]) -> None:
    assert list(progress(range(3), desc="batches")) == [0, 1, 2]
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("batches: 3/3 it (100%)")
    assert list(progress(range(3), enabled=False)) == [0, 1, 2]
    assert capsys.readouterr().err == ""


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_on_a_terminal_it_is_still_a_tqdm_bar() -> None:
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))  # a new pty is 0 columns wide
    code = "from medst.progress import progress\nfor _ in progress(range(3), desc='steps'): pass\n"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, stderr=slave, timeout=120)
    os.close(slave)
    seen = b""
    try:
        while chunk := os.read(master, 4096):
            seen += chunk
    except OSError:  # the terminal is drained
        pass
    os.close(master)
    assert proc.returncode == 0
    assert b"\r" in seen and b"steps: 100%" in seen, seen
