"""Where MIMIC-CXR reports come from: a folder tree of ``sXXXXXXXX.txt``, the official
``mimic-cxr-reports.zip`` (read in place, never extracted), or a sectioned CSV (``study, impression, findings,
...`` as written by the dataset publishers' sectioning script).

Every reader returns the frame ``study_id, report_item, raw`` (`REPORT_COLUMNS`): one row per report found,
``report_item`` naming it for reject messages. A sectioned CSV is turned back into MIMIC-style text
(`` IMPRESSION: ...``) so that one parser handles every source.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Iterable
from pathlib import Path

import polars as pl

from medst.archive.source import REPORT_COLUMNS
from medst.archive.tables import ROW_INDEX, read_table
from medst.errors import UserInputError

_REPORT_NAME = re.compile(r"^s(\d+)\.txt$")


def walk_tree(root: Path) -> tuple[list[str], list[str]]:
    """All files under `root` as paths relative to `root` (POSIX), split into (report .txt files named
    ``sNNN.txt``, everything else), each sorted."""
    reports: list[str] = []
    others: list[str] = []
    base = str(root)
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames.sort()
        rel = os.path.relpath(dirpath, base)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        for name in filenames:
            (reports if _REPORT_NAME.match(name) else others).append(prefix + name)
    reports.sort()
    others.sort()
    return reports, others


def reports_from_files(root: Path, rel_paths: Iterable[str]) -> pl.DataFrame:
    """Read the given ``sNNN.txt`` files (relative to `root`); undecodable bytes are replaced, never fatal."""
    ids: list[str] = []
    items: list[str] = []
    texts: list[str | None] = []
    for rel in rel_paths:
        name = rel.rsplit("/", 1)[-1]
        m = _REPORT_NAME.match(name)
        if not m:
            continue
        try:
            with open(os.path.join(root, rel), "rb") as fh:
                raw = fh.read().decode("utf-8", errors="replace")
        except OSError:
            raw = None
        ids.append(m.group(1))
        items.append(rel)
        texts.append(raw)
    return pl.DataFrame({"study_id": ids, "report_item": items, "raw": texts}, schema=REPORT_COLUMNS)


def reports_from_zip(path: Path) -> pl.DataFrame:
    """Reports inside the official zip (``files/pXX/pNNN/sNNN.txt`` members), read in place."""
    ids: list[str] = []
    items: list[str] = []
    texts: list[str | None] = []
    try:
        with zipfile.ZipFile(path) as zf:
            for info in sorted(zf.infolist(), key=lambda i: i.filename):
                name = info.filename.rsplit("/", 1)[-1]
                m = _REPORT_NAME.match(name)
                if info.is_dir() or not m:
                    continue
                try:
                    raw: str | None = zf.read(info).decode("utf-8", errors="replace")
                except (zipfile.BadZipFile, OSError, ValueError):
                    raw = None
                ids.append(m.group(1))
                items.append(f"{path.name}:{info.filename}")
                texts.append(raw)
    except zipfile.BadZipFile as err:
        raise UserInputError(
            f"cannot read reports zip {path}: {err} (re-download mimic-cxr-reports.zip)"
        ) from err
    return pl.DataFrame({"study_id": ids, "report_item": items, "raw": texts}, schema=REPORT_COLUMNS)


_CSV_SECTIONS = ("impression", "findings", "last_paragraph", "comparison", "indication")


def reports_from_sectioned_csv(path: Path) -> pl.DataFrame:
    """A sectioned CSV: a ``study`` (or ``study_id``) column and section columns (at least one of
    ``impression``/``findings``); rebuilt as MIMIC-style text."""
    df = read_table(path, what="sectioned reports CSV")
    study_col = "study" if "study" in df.columns else "study_id" if "study_id" in df.columns else None
    if study_col is None:
        raise UserInputError(f"sectioned reports CSV {path} needs a 'study' or 'study_id' column")
    present = [c for c in _CSV_SECTIONS if c in df.columns]
    if not ({"impression", "findings", "last_paragraph"} & set(present)):
        raise UserInputError(f"sectioned reports CSV {path} needs an 'impression' or 'findings' column")
    parts = []
    for c in present:
        header = "\n\n" if c == "last_paragraph" else f"\n {c.upper()}: "
        parts.append(pl.when(pl.col(c).is_not_null()).then(pl.lit(header) + pl.col(c)).otherwise(pl.lit("")))
    raw = pl.concat_str(parts) if parts else pl.lit("")
    return df.select(
        pl.col(study_col).str.strip_chars().str.strip_chars_start("sS").alias("study_id"),
        (pl.lit(f"{path.name} row ") + pl.col(ROW_INDEX).cast(pl.String)).alias("report_item"),
        raw.alias("raw"),
    )


def read_reports(path: Path) -> pl.DataFrame:
    """Reports from `path`: a folder tree, a ``.zip``, or a sectioned ``.csv``/``.csv.gz``/``.parquet``."""
    if path.is_dir():
        reports, _ = walk_tree(path)
        return reports_from_files(path, reports)
    if not path.exists():
        raise UserInputError(
            f"--reports {path} does not exist (give a folder tree, the reports zip or a CSV)"
        )
    if path.suffix == ".zip":
        return reports_from_zip(path)
    if path.name.endswith((".csv", ".csv.gz", ".parquet")):
        return reports_from_sectioned_csv(path)
    raise UserInputError(f"--reports {path}: expected a folder, a .zip or a sectioned .csv")
