"""`medst doctor`: what this installation can do, collected as data and rendered as text.

`collect()` gathers library versions, the DICOM decoder table (from pydicom's own plugin registry), CUDA
devices and CPU cores; `render()` turns that into the report a user pastes into a bug report; `problems()` lists
what makes the installation unfit to build an archive (a required transfer syntax without a decoder).
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict
from importlib import metadata
from typing import Any

from medst.archive.decoders import decoder_table

# (label, distribution names to try): distributions, not modules, so nothing heavy is imported for a version.
_PACKAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("medst", ("medst",)),
    ("torch", ("torch",)),
    ("pydicom", ("pydicom",)),
    ("numpy", ("numpy",)),
    ("polars", ("polars",)),
    ("webdataset", ("webdataset",)),
    ("transformers", ("transformers",)),
    ("opencv", ("opencv-python-headless", "opencv-python", "opencv-contrib-python-headless")),
    ("pylibjpeg", ("pylibjpeg",)),
    ("pylibjpeg-libjpeg", ("pylibjpeg-libjpeg",)),
    ("pylibjpeg-openjpeg", ("pylibjpeg-openjpeg",)),
    ("pylibjpeg-rle", ("pylibjpeg-rle",)),
    ("pyjpegls", ("pyjpegls",)),
    ("pillow", ("pillow", "Pillow")),
)

# Which package to install when a family of transfer syntaxes has no decoder (pydicom's pylibjpeg plugins).
_INSTALL_HINTS: tuple[tuple[str, str], ...] = (
    ("RLE", "pylibjpeg-rle"),
    ("JPEG-LS", "pyjpegls"),
    ("JPEG 2000", "pylibjpeg-openjpeg"),
    ("JPEG", "pylibjpeg pylibjpeg-libjpeg"),
)


def _version(distributions: tuple[str, ...]) -> str | None:
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _cuda() -> dict[str, Any]:
    """CUDA as torch sees it; never raises (a broken driver is reported, not thrown)."""
    try:
        import torch

        available = bool(torch.cuda.is_available())
        count = torch.cuda.device_count() if available else 0
        names = [torch.cuda.get_device_name(i) for i in range(count)]
        return {"available": available, "device_count": count, "devices": names, "error": None}
    except Exception as err:  # ImportError, driver/runtime mismatch, ...
        return {"available": False, "device_count": 0, "devices": [], "error": str(err)}


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def collect() -> dict[str, Any]:
    """Everything `medst doctor` reports, as plain JSON-serialisable data.

    Keys: ``versions`` (label -> version or None), ``python``, ``platform``, ``decoders`` (one dict per
    `medst.archive.decoders.DecoderInfo`), ``cuda`` (available, device_count, devices, error), ``cpu_cores``
    (logical CPUs in the machine), ``usable_cores`` (CPUs this process may run on), ``problems`` (list of str;
    empty when medst can process every required transfer syntax).
    """
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {label: _version(dists) for label, dists in _PACKAGES},
        "decoders": [asdict(row) for row in decoder_table()],
        "cuda": _cuda(),
        "cpu_cores": os.cpu_count() or 1,
        "usable_cores": _usable_cores(),
    }
    info["problems"] = problems(info)
    return info


def _hint(name: str) -> str:
    for family, package in _INSTALL_HINTS:
        if family in name:
            return package
    return "a pydicom pixel plugin"


def problems(info: dict[str, Any]) -> list[str]:
    """One line per required transfer syntax that has no decoder, saying what to install."""
    lines = []
    for row in info["decoders"]:
        if row["required"] and not row["available"]:
            lines.append(f"no decoder for required transfer syntax {row['name']} ({row['uid']}): "
                         f"pip install {_hint(row['name'])}")  # fmt: skip
    return lines


def render(info: dict[str, Any]) -> str:
    """The human report: versions, decoder table, CUDA, CPU cores, then problems (if any)."""
    out = [
        f"medst {info['versions'].get('medst') or 'unknown'}  (python {info['python']}, {info['platform']})",
        "",
    ]
    out.append("versions")
    for label, version in info["versions"].items():
        if label != "medst":
            out.append(f"  {label:<20} {version or 'not installed'}")
    out += ["", "DICOM pixel decoders"]
    width = max(len(row["name"]) for row in info["decoders"])
    out.append(f"  {'transfer syntax':<{width}}  {'UID':<24}  {'ok':<3}  {'req':<3}  plugins")
    for row in info["decoders"]:
        ok = "yes" if row["available"] else "NO"
        req = "yes" if row["required"] else "-"
        plugins = ", ".join(row["plugins"]) or "none (" + "; ".join(row["missing"]) + ")"
        out.append(f"  {row['name']:<{width}}  {row['uid']:<24}  {ok:<3}  {req:<3}  {plugins}")
    cuda = info["cuda"]
    out.append("")
    if cuda["available"]:
        out.append(f"CUDA: yes, {cuda['device_count']} device(s): {', '.join(cuda['devices'])}")
    else:
        out.append("CUDA: not usable" + (f" ({cuda['error']})" if cuda["error"] else " (CPU only)"))
    out.append(f"CPU cores: {info['cpu_cores']} ({info['usable_cores']} usable by this process)")
    if info["problems"]:
        out += ["", *(f"problem: {line}" for line in info["problems"])]
    else:
        out += ["", "ok: every required DICOM transfer syntax has a decoder"]
    return "\n".join(out)
