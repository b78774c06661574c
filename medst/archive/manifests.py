"""Checking an archive against its data manifest (``data_manifests/<name>.yaml``).

A manifest lists the files a release ships (required or not) with their required columns, the value formats of
its ids, and its published counts. `check_archive` says what differs, one line per difference; a difference is
information for the build report, never an error (subsets of a release are legitimate inputs).
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path
from typing import Any

import polars as pl
import yaml


def _manifest_dir() -> Path:
    try:
        from importlib.resources import files

        folder = Path(str(files("medst.data_manifests")))
        if folder.is_dir():
            return folder
    except ModuleNotFoundError:  # editable install made before the package mapping existed
        pass
    return Path(__file__).resolve().parents[2] / "data_manifests"


def load_manifest(name: str) -> dict[str, Any]:
    """The manifest ``name`` (e.g. ``mimic-cxr-2.0.0``) as a dict; KeyError when unknown."""
    path = _manifest_dir() / f"{name}.yaml"
    if not path.is_file():
        raise KeyError(f"no data manifest named {name!r} in {_manifest_dir()}")
    return dict(yaml.safe_load(path.read_text()))


def detect_manifest(root: Path, kind: str) -> str | None:
    """The manifest that describes the archive at `root` read as `kind` (None for generic tables)."""
    if (root / "synth_truth.parquet").is_file():
        return "medst-synth"
    return {"mimic-cxr": "mimic-cxr-2.0.0", "mimic-cxr-jpg": "mimic-cxr-jpg-2.0.0"}.get(kind)


def _header(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as fh:  # type: ignore[operator]
        line = fh.readline()
    return pl.read_csv(line.encode(), has_header=True, n_rows=0).columns if line.strip() else []


def check_archive(
    root: Path, manifest: dict[str, Any], images: pl.DataFrame | None, found: dict[str, int]
) -> list[str]:
    """Differences between the archive and `manifest`: missing files and columns, id values that break the
    documented formats (counted over `images`), and counts (`found`: images, studies, patients, reports) that
    differ from the published ones."""
    diffs: list[str] = []
    for spec in manifest.get("files", []):
        name = spec["name"]
        candidates = [root / name, root / name.removesuffix(".gz")]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            if spec.get("required", False):
                diffs.append(f"missing file {name}")
            continue
        if not spec.get("columns") or path.suffix == ".parquet":
            continue
        try:
            have = set(_header(path))
        except Exception as err:
            diffs.append(f"cannot read the header of {name}: {err}")
            continue
        lacking = [c for c in spec["columns"] if c not in have]
        if lacking:
            diffs.append(f"{name} lacks column(s) {', '.join(lacking)}")
    if images is not None and images.height:
        for column, pattern in (manifest.get("formats") or {}).items():
            if column not in images.columns:
                continue
            bad = images.filter(~pl.col(column).str.contains(pattern).fill_null(False)).height
            if bad:
                diffs.append(f"{bad} image rows have a {column} that does not match {pattern}")
    for key, published in (manifest.get("counts") or {}).items():
        if key in found and found[key] != published:
            diffs.append(f"{key}: found {found[key]}, the release publishes {published}")
    return diffs


def format_ok(value: str, pattern: str) -> bool:
    """True when `value` matches the manifest regex `pattern`."""
    return re.search(pattern, value) is not None
