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
from itertools import pairwise
from pathlib import Path

import polars as pl

from medst.archive.source import REPORT_COLUMNS
from medst.archive.tables import ROW_INDEX, read_table
from medst.archive.text_encoding import decode_text
from medst.errors import UserInputError

_REPORT_NAME = re.compile(r"^s(\d+)\.txt$")

MAX_REPORT_BYTES = 1 << 20
"""A radiology report is a few kilobytes (MIMIC-CXR's longest is under 20 kB). A file over this size is not a
report and is never read whole: parsing 100 MB of text takes minutes and gigabytes."""
TOO_LARGE = "too_large"
"""``section_used`` of a report file over `MAX_REPORT_BYTES`; the build turns it into a ``report_too_large``
reject."""
UNDECODABLE = "undecodable"
"""``section_used`` of a report whose bytes are not text (see `medst.archive.text_encoding`); the build turns it
into an ``undecodable_report`` reject."""
BINARY = "binary"
"""``encoding`` of a report whose bytes are not text."""


def _read_capped(path: str) -> tuple[str | None, str | None]:
    """(text, encoding) of a report file: text None when unreadable (encoding None) or not text (encoding
    `BINARY`); text `TOO_LARGE` when over the cap. Decoding follows `medst.archive.text_encoding`."""
    # os.open/os.read rather than open(): a MIMIC-size build reads 228k small files, and the buffered file
    # object costs more than the read itself.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None, None
    try:
        data = os.read(fd, MAX_REPORT_BYTES + 1)
        while data and len(data) <= MAX_REPORT_BYTES:  # a short read is not yet the end of the file
            more = os.read(fd, MAX_REPORT_BYTES + 1 - len(data))
            if not more:
                break
            data += more
    except OSError:
        return None, None
    finally:
        os.close(fd)
    if len(data) > MAX_REPORT_BYTES:
        return TOO_LARGE, None
    return decode_report(data)


# Tab, newline, form feed, carriage return and printable ASCII: bytes made only of these decode the same under
# every rule of `medst.archive.text_encoding` (no mark, no NUL, valid UTF-8, no control characters).
_PLAIN_ASCII = bytes([9, 10, 12, 13, *range(32, 127)])


def decode_report(data: bytes) -> tuple[str | None, str]:
    """(text, encoding) of one report's bytes; (None, `BINARY`) when they are not text."""
    if not data.translate(None, _PLAIN_ASCII):
        return data.decode("ascii"), "utf-8"  # what decode_text gives for them, at a third of its cost
    text, enc = decode_text(data)
    return (text, enc) if text is not None else (None, BINARY)


def _scan(folder: str, prefix: str) -> list[str]:
    """Every file under `folder` as `prefix` + its POSIX path relative to `folder` (iterative scandir)."""
    found: list[str] = []
    stack = [(folder, prefix)]
    while stack:
        path, pre = stack.pop()
        with os.scandir(path) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    stack.append((entry.path, pre + entry.name + "/"))
                else:
                    found.append(pre + entry.name)
    return found


def walk_tree(root: Path) -> tuple[list[str], list[str]]:
    """All files under `root` as paths relative to `root` (POSIX), split into (report .txt files named
    ``sNNN.txt``, everything else), each sorted. Top-level folders are scanned in two threads: directory listing
    is system-call bound, and a second thread overlaps the waits on a cold cache; more threads than the two cores
    of the target machine only hand the GIL to and fro (on a warm MIMIC-size tree four took twice the CPU time
    of one for no shorter wall time)."""
    from concurrent.futures import ThreadPoolExecutor

    base = str(root)
    files: list[str] = []
    subdirs: list[tuple[str, str]] = []
    with os.scandir(base) as it:
        for entry in it:
            if entry.is_dir(follow_symlinks=False):
                subdirs.append((entry.path, entry.name + "/"))
            else:
                files.append(entry.name)
    with ThreadPoolExecutor(max_workers=2) as pool:
        for part in pool.map(lambda a: _scan(*a), subdirs):
            files.extend(part)
    reports: list[str] = []
    others: list[str] = []
    for f in files:  # one name test per file (a MIMIC tree has 600k)
        (reports if _REPORT_NAME.match(f.rsplit("/", 1)[-1]) else others).append(f)
    return sorted(reports), sorted(others)


def reports_from_files(root: Path, rel_paths: Iterable[str]) -> pl.DataFrame:
    """Read the given ``sNNN.txt`` files (relative to `root`), decoded as `medst.archive.text_encoding` says;
    the ``encoding`` column names the encoding used (`BINARY` when the bytes are not text)."""
    ids: list[str] = []
    items: list[str] = []
    texts: list[str | None] = []
    encodings: list[str | None] = []
    for rel in rel_paths:
        name = rel.rsplit("/", 1)[-1]
        m = _REPORT_NAME.match(name)
        if not m:
            continue
        raw, enc = _read_capped(os.path.join(root, rel))
        if raw == TOO_LARGE:
            raw = None  # not a report: counted as an empty one
        ids.append(m.group(1))
        items.append(rel)
        texts.append(raw)
        encodings.append(enc)
    return pl.DataFrame(
        {"study_id": ids, "report_item": items, "raw": texts, "encoding": encodings},
        schema={**REPORT_COLUMNS, "encoding": pl.String},
    )


def _read_parse_chunk(
    args: tuple[str, list[str], int],
) -> list[tuple[str | None, str, int, bool, bool, str | None]]:
    from medst.archive.reports import parse_report_fields

    root, rels, min_tokens = args
    folder = os.path.join(root, "")  # + a relative path is os.path.join(root, rel), without a call per file
    out: list[tuple[str | None, str, int, bool, bool, str | None]] = []
    for rel in rels:
        raw, enc = _read_capped(folder + rel)
        if raw == TOO_LARGE:
            out.append((TOO_LARGE, "", 0, False, False, None))
            continue
        if enc == BINARY:
            out.append((UNDECODABLE, "", 0, False, False, enc))
            continue
        used, text, n, is_empty, has_addendum, _ = parse_report_fields(raw, min_tokens)
        out.append((used, text, n, is_empty, has_addendum, enc))
    return out


class ReportParsing:
    """``sNNN.txt`` files (relative to `root`) being read and parsed in `workers` processes (or Ray tasks, on the
    engine the command chose): the file reading and the parsing both run in the workers, and only the parsed
    fields come back. Starting returns once the jobs are submitted, so a reader can go on with its tables while
    the workers parse; `result` waits for them. See `parse_report_files` for the frame."""

    # A small first piece: starting waits for one piece, and this keeps that wait short.
    FIRST_CHUNK = 64
    CHUNK = 4000

    def __init__(
        self, root: Path, rel_paths: list[str], min_tokens: int = 3, workers: int = 1, progress: bool = False
    ) -> None:
        import threading

        from medst.executors import current_engine, run_jobs

        self._rels = [r for r in rel_paths if _REPORT_NAME.match(r.rsplit("/", 1)[-1])]
        n = len(self._rels)
        bounds = [0, *range(min(self.FIRST_CHUNK, n), n, self.CHUNK), n]
        pieces = [(str(root), self._rels[a:b], min_tokens) for a, b in pairwise(bounds) if b > a]
        self._results: list[list[tuple[str | None, str, int, bool, bool, str | None]]] | None
        self._results = [[] for _ in pieces]
        self._progress = progress
        self._done = 0
        self._error: BaseException | None = None

        def keep(i: int, rows: list[tuple[str | None, str, int, bool, bool, str | None]]) -> None:
            assert self._results is not None
            self._results[i] = rows
            self._done += len(rows)

        # The job runner blocks until every piece is parsed, so it runs on a thread of its own: this process goes
        # on with its tables while the workers parse, and `result` waits. A thread does not inherit the engine
        # the command set (`use_engine`), so it is handed over here.
        engine = current_engine()

        def run() -> None:
            try:
                run_jobs(_read_parse_chunk, pieces, workers, keep, names=[f"report chunk {i}" for i in range(len(pieces))],
                         engine=engine)  # fmt: skip
            except BaseException as err:  # re-raised by `result`, in the caller's thread
                self._error = err

        self._thread = threading.Thread(target=run, name="medst-report-parsing", daemon=True)
        self._thread.start()

    def result(self) -> pl.DataFrame:
        """The parsed frame (blocks until every piece is done). Call it once: it lets go of the rows."""
        from medst.progress import progress as show_progress

        if self._results is None:
            raise RuntimeError("ReportParsing.result() was already called")
        n = len(self._rels)
        with show_progress(
            total=n, initial=self._done, enabled=self._progress, desc="reports", unit="report"
        ) as bar:
            shown = self._done
            while self._thread.is_alive():
                self._thread.join(timeout=0.5)
                bar.update(self._done - shown)
                shown = self._done
        if self._error is not None:
            raise self._error
        parsed = pl.DataFrame([row for rows in self._results for row in rows], schema=_PARSED, orient="row")
        # The build keeps this object (in SourceData) to its end: let go of the rows, a few hundred MB as Python
        # objects at MIMIC size.
        self._results = None
        ids = pl.DataFrame({"report_item": self._rels}, schema={"report_item": pl.String}).with_columns(
            pl.col("report_item").str.extract(r"s(\d+)\.txt$", 1).alias("study_id")
        )
        return pl.concat([ids.select("study_id", "report_item"), parsed], how="horizontal")


def parse_report_files(
    root: Path, rel_paths: list[str], min_tokens: int = 3, workers: int = 1, progress: bool = False
) -> pl.DataFrame:
    """Read and parse ``sNNN.txt`` files (relative to `root`) in `workers` processes: the file reading and the
    parsing both run in the workers, and only the parsed fields come back. Returns ``study_id, report_item,
    section_used, text, n_tokens, is_empty, has_addendum, encoding`` in the order of `rel_paths` (``section_used``
    is `TOO_LARGE` or `UNDECODABLE` for files that were not parsed)."""
    return ReportParsing(root, rel_paths, min_tokens, workers, progress).result()


_PARSED = {
    "section_used": pl.String,
    "text": pl.String,
    "n_tokens": pl.Int64,
    "is_empty": pl.Boolean,
    "has_addendum": pl.Boolean,
    "encoding": pl.String,
}


def reports_from_zip(path: Path) -> pl.DataFrame:
    """Reports inside the official zip (``files/pXX/pNNN/sNNN.txt`` members), read in place."""
    ids: list[str] = []
    items: list[str] = []
    texts: list[str | None] = []
    encodings: list[str | None] = []
    try:
        with zipfile.ZipFile(path) as zf:
            for info in sorted(zf.infolist(), key=lambda i: i.filename):
                name = info.filename.rsplit("/", 1)[-1]
                m = _REPORT_NAME.match(name)
                if info.is_dir() or not m:
                    continue
                raw: str | None = None
                enc: str | None = None
                try:
                    data = zf.read(info) if info.file_size <= MAX_REPORT_BYTES else None
                    if data is not None:
                        raw, enc = decode_report(data)
                except (zipfile.BadZipFile, OSError, ValueError):
                    raw = None
                ids.append(m.group(1))
                items.append(f"{path.name}:{info.filename}")
                texts.append(raw)
                encodings.append(enc)
    except zipfile.BadZipFile as err:
        raise UserInputError(
            f"cannot read reports zip {path}: {err} (re-download mimic-cxr-reports.zip)"
        ) from err
    return pl.DataFrame(
        {"study_id": ids, "report_item": items, "raw": texts, "encoding": encodings},
        schema={**REPORT_COLUMNS, "encoding": pl.String},
    )


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
