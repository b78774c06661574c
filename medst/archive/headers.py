"""Parallel DICOM header scan: the few fields an ImageRecord needs, never pixels, never PHI.

Each file is read header-only (``stop_before_pixels``) in a process pool of ``workers`` processes, in chunks,
with a progress bar. Only the fields in `HEADER_COLUMNS` leave the worker: patient names, birth dates,
institutions and accession numbers are never copied. A file whose header cannot be read comes back with an
``error`` reason code instead (it becomes a reject; the scan goes on). Headers whose bit layout is impossible
(``inconsistent_bits``) and uncompressed files whose Pixel Data is shorter (``truncated_pixel_data``) or longer
(``pixel_length_mismatch``) than the header describes are caught here, from the element's length, never its bytes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

HEADER_COLUMNS: dict[str, Any] = {
    "file": pl.String,
    "error": pl.String,
    "error_message": pl.String,
    "patient_id": pl.String,
    "study_uid": pl.String,
    "sop_uid": pl.String,
    "view_position": pl.String,
    "view_code_meaning": pl.String,
    "procedure_description": pl.String,
    "series_description": pl.String,
    "body_part": pl.String,
    "rows": pl.Int64,
    "columns": pl.Int64,
    "photometric_interpretation": pl.String,
    "transfer_syntax": pl.String,
    "study_date": pl.String,
    "study_time": pl.String,
}
"""Columns of the frame `scan_headers` returns (``file`` is the path as given)."""

_NATIVE_SYNTAXES = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}


def _max_pixels() -> int:
    from medst.archive.pixels import DEFAULT_MAX_PIXELS

    return DEFAULT_MAX_PIXELS


def _read(path: str) -> Any:
    from medst.archive.pixels import read_header  # the shared safe reader (raises ImageDecodeError)

    return read_header(path)


_UNDEFINED_LENGTH = 0xFFFFFFFF


def _pixel_element(path: str) -> tuple[int, int] | None:
    """(value length, file offset of the value) of the top-level Pixel Data element, None when there is none.

    Values over 256 bytes are skipped, not read, so this stays cheap; a file pydicom cannot walk gives
    (-1, -1): it has pixel data of unknown extent (then reported by its size alone).
    """
    import pydicom

    try:
        ds = pydicom.dcmread(path, defer_size=256, force=True)
        if "PixelData" not in ds:
            return None
        elem = ds.get_item("PixelData", keep_deferred=True)
        length = getattr(elem, "length", None)
        tell = getattr(elem, "value_tell", None)
        if length is None or tell is None:  # a small value pydicom already read
            return len(ds.PixelData), -1
        return int(length), int(tell)
    except Exception:  # damaged bytes of any kind: keep the less specific verdict
        return -1, -1


def _native_pixel_error(path: str, ds: Any) -> tuple[str, str] | None:
    """Reason and message when an uncompressed file's Pixel Data disagrees with its header, else None."""
    from medst.archive.layout import check_pixel_length, expected_pixel_bytes

    name = Path(path).name
    need = expected_pixel_bytes(ds)
    size = os.path.getsize(path)
    element = _pixel_element(path)
    if element is None:
        return "no_pixel_data", f"{name}: no Pixel Data element in the file"
    length, tell = element
    if length == _UNDEFINED_LENGTH:
        return (
            "pixel_length_mismatch",
            f"{name}: encapsulated pixel data under an uncompressed transfer syntax",
        )
    if length < 0 or tell < 0:
        # Unknown extent: only the file size can say the pixels are cut short.
        if size < need:
            return "truncated_pixel_data", f"{name}: file shorter than its {need} bytes of pixels"
        return None
    if tell + length > size:
        return "truncated_pixel_data", f"{name}: file ends inside its {length:,} bytes of pixel data"
    try:
        check_pixel_length(length, need)
    except Exception as err:
        return str(getattr(err, "reason", "decode_error")), f"{name}: {getattr(err, 'message', err)}"
    return None


def _bits_error(path: str, ds: Any) -> tuple[str, str] | None:
    from medst.archive.layout import check_bits
    from medst.errors import ImageDecodeError

    try:
        check_bits(ds)
    except ImageDecodeError as err:
        return err.reason, f"{Path(path).name}: {err.message}"
    return None


def _text(ds: Any, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None:
        return None
    s = str(value).strip()
    return s or None


def read_one(path: str) -> dict[str, Any]:
    """Header fields of one file as a dict with the keys of `HEADER_COLUMNS` (never raises)."""
    row: dict[str, Any] = dict.fromkeys(HEADER_COLUMNS)
    row["file"] = path
    try:
        ds = _read(path)
        meta = getattr(ds, "file_meta", None)
        syntax = (
            str(meta.get("TransferSyntaxUID")) if meta is not None and "TransferSyntaxUID" in meta else None
        )
        vcs = ds.get("ViewCodeSequence")
        code = None
        if vcs:
            code = _text(vcs[0], "CodeMeaning")
        rows = ds.get("Rows")
        cols = ds.get("Columns")
        row.update(
            patient_id=_text(ds, "PatientID"),
            study_uid=_text(ds, "StudyInstanceUID"),
            sop_uid=_text(ds, "SOPInstanceUID"),
            view_position=_text(ds, "ViewPosition"),
            view_code_meaning=code,
            procedure_description=_text(ds, "PerformedProcedureStepDescription"),
            series_description=_text(ds, "SeriesDescription"),
            body_part=_text(ds, "BodyPartExamined"),
            rows=int(rows) if rows is not None else None,
            columns=int(cols) if cols is not None else None,
            photometric_interpretation=_text(ds, "PhotometricInterpretation"),
            transfer_syntax=syntax,
            study_date=_text(ds, "StudyDate"),
            study_time=_text(ds, "StudyTime"),
        )
        if rows is None or cols is None:
            row["error"], row["error_message"] = (
                "no_pixel_data",
                f"{Path(path).name}: no Rows/Columns in header",
            )
        elif int(rows) * int(cols) > _max_pixels():
            # Refused here as `read_image` would refuse it, before anyone sizes a buffer from the claim.
            row["error"] = "too_large"
            row["error_message"] = f"{Path(path).name}: header claims {int(rows)} x {int(cols)} pixels"
        elif (bad_bits := _bits_error(path, ds)) is not None:
            row["error"], row["error_message"] = bad_bits
        elif syntax in _NATIVE_SYNTAXES and "BitsAllocated" in ds:
            # Uncompressed pixels have a known size: fewer bytes were cut off, more belong to another header.
            found = _native_pixel_error(path, ds)
            if found is not None:
                row["error"], row["error_message"] = found
    except Exception as err:  # any failure is this file's problem, never the build's
        reason = getattr(err, "reason", None) or "unreadable_header"
        message = getattr(err, "message", None) or f"{Path(path).name}: {type(err).__name__}: {err}"
        row = dict.fromkeys(HEADER_COLUMNS)
        row.update(file=path, error=reason, error_message=str(message).splitlines()[0][:300])
    return row


def _read_chunk(paths: Sequence[str]) -> list[dict[str, Any]]:
    return [read_one(p) for p in paths]


def scan_headers(
    paths: Sequence[str], workers: int = 1, progress: bool = True, chunk: int = 64
) -> pl.DataFrame:
    """Read the headers of `paths` (absolute or relative to the cwd) with `workers` processes.

    Returns one row per path, in the order given, with the columns of `HEADER_COLUMNS`.
    """
    from medst.archive.parallel import map_chunks

    pieces = [list(paths[i : i + chunk]) for i in range(0, len(paths), chunk)]
    rows = map_chunks(
        _read_chunk, pieces, workers, total=len(paths), progress=progress, desc="headers", unit="file"
    )
    return pl.DataFrame(rows, schema=HEADER_COLUMNS) if rows else pl.DataFrame(schema=HEADER_COLUMNS)
