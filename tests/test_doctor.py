"""`medst doctor` on this installation (which has every plugin), and in a real process where a required
decoder's plugins have been removed from pydicom's registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from typer.testing import CliRunner

from medst.archive.decoders import decoder_table
from medst.cli.app import app
from medst.doctor import collect, render


def test_doctor_command_reports_every_transfer_syntax() -> None:
    result = CliRunner().invoke(app, ["doctor"])
    assert result.exit_code == 0, result.output
    for row in decoder_table():
        assert row.name in result.output and row.uid in result.output
    for label in ("torch", "pydicom", "numpy", "polars", "webdataset", "transformers", "opencv"):
        assert f"  {label} " in result.output
    assert "CUDA:" in result.output and "CPU cores:" in result.output
    assert "problem:" not in result.output
    assert result.output.rstrip().endswith("ok: every required DICOM transfer syntax has a decoder")


def test_doctor_json_is_the_collected_data() -> None:
    result = CliRunner().invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["problems"] == []
    assert {row["uid"] for row in info["decoders"]} == {row.uid for row in decoder_table()}
    assert info["cpu_cores"] >= 1 and info["usable_cores"] >= 1
    assert info["versions"]["pydicom"] and info["versions"]["medst"]
    assert isinstance(info["cuda"]["available"], bool)
    assert info["cuda"]["device_count"] == len(info["cuda"]["devices"])


def test_render_shows_required_decoders_all_present() -> None:
    info = collect()
    text = render(info)
    assert "NO " not in text  # every decoder present here
    required = [row for row in info["decoders"] if row["required"]]
    assert len(required) >= 11


def test_doctor_fails_with_one_clear_line_when_a_required_decoder_is_missing() -> None:
    # A real process in which pydicom's JPEG 2000 decoder has lost all its plugins (pydicom's public
    # remove_plugin API), exactly as if pylibjpeg-openjpeg and pillow were not installed.
    code = (
        "from pydicom.pixels import get_decoder\n"
        "from pydicom.uid import JPEG2000Lossless\n"
        "decoder = get_decoder(JPEG2000Lossless)\n"
        "for plugin in list(decoder.available_plugins): decoder.remove_plugin(plugin)\n"
        "from medst.cli.app import app\n"
        "app(['doctor'])\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "problem: no decoder for required transfer syntax JPEG 2000 Image Compression (Lossless Only)" in (
        proc.stdout
    )
    assert "pip install pylibjpeg-openjpeg" in proc.stdout
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("medst doctor: 1 required DICOM decoder(s) missing")
