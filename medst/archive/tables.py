"""Reading tables: the MIMIC-CXR CSVs (plain or gzipped) and any user CSV/Parquet.

Every table is read with all columns as strings, so that one malformed value never makes a whole file
unreadable; callers cast with ``strict=False`` and turn the rows that fail into rejects. A file that cannot be
read at all, or lacks a required column, is a user error (`UserInputError`) naming the file and the fix.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import polars as pl

from medst.errors import UserInputError

ROW_INDEX = "__row"
"""Name of the 1-based data-row number column added by `read_table` (for reject messages)."""


def find_table(root: Path, stem: str) -> Path | None:
    """The file ``stem`` (e.g. ``mimic-cxr-2.0.0-metadata.csv``) under `root`, as ``.csv.gz`` or ``.csv``."""
    for name in (stem + ".gz", stem):
        p = root / name
        if p.is_file():
            return p
    return None


def read_table(
    path: Path,
    required: Iterable[str] = (),
    what: str = "table",
) -> pl.DataFrame:
    """Read a CSV (optionally .gz) or Parquet file with every column as a string, plus `ROW_INDEX`.

    CSV bytes are decoded like report files (`medst.archive.text_encoding`): a byte-order mark (UTF-8, UTF-16,
    UTF-32; a spreadsheet's "Unicode text" export is UTF-16), BOM-less UTF-16, UTF-8, then the declared fallback
    Windows-1252 (the covid-chestxray metadata is Latin-1, which it reads the same).
    Raises `UserInputError` when the file is missing, unreadable or lacks a column of `required`.
    """
    if not path.is_file():
        raise UserInputError(f"{what} not found: {path} (check the path)")
    try:
        if path.suffix == ".parquet":
            df = pl.read_parquet(path)
            df = df.with_columns(pl.all().cast(pl.String, strict=False))
        else:
            df = _read_csv(path)
    except UserInputError:
        raise
    except Exception as err:  # any parser failure means the file itself is unusable
        raise UserInputError(
            f"cannot read {what} {path}: {type(err).__name__}: {err}".splitlines()[0]
        ) from err
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise UserInputError(
            f"{what} {path} lacks required column(s) {', '.join(missing)}; it has: {', '.join(df.columns[:20])}"
        )
    return df.with_row_index(ROW_INDEX, offset=1)


def _read_csv(path: Path) -> pl.DataFrame:
    raw = path.read_bytes()
    if path.suffix == ".gz" or raw[:2] == b"\x1f\x8b":
        import gzip

        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise UserInputError(f"cannot read {path}: not a valid gzip file ({err})") from err
    return pl.read_csv(
        _csv_utf8(raw, path),
        infer_schema=False,
        truncate_ragged_lines=True,
    )


def _csv_utf8(raw: bytes, path: Path) -> bytes:
    """The bytes of a CSV as UTF-8 for polars, decoded as `medst.archive.text_encoding` says; raises
    `UserInputError` when they are not text.

    Most tables are plain ASCII, and UTF-8 ones need no re-encoding: for those the bytes go to polars as they
    are (a MIMIC-size build reads 160 MB of tables; decoding them to text and encoding that again cost about a
    quarter of a second of the main process).
    ASCII without a NUL in its first 4 kB is what every rule of `decode_bytes` reads as itself (a mark and
    BOM-less UTF-16 need bytes over 127 or a NUL there)."""
    from medst.archive.text_encoding import decode_bytes, looks_binary

    if raw.isascii() and b"\x00" not in raw[:4096]:
        if looks_binary(raw[:65536].decode("ascii")):
            raise UserInputError(f"cannot read {path}: it is not a text (CSV) file")
        return raw
    text, encoding = decode_bytes(raw)
    if looks_binary(text[:65536]):
        raise UserInputError(f"cannot read {path}: it is not a text (CSV) file")
    # A strict UTF-8 decode without a mark gives back exactly these bytes.
    return raw if encoding == "utf-8" else text.encode("utf8")


def blank_to_null(df: pl.DataFrame, columns: Iterable[str]) -> pl.DataFrame:
    """Strip the given string columns and turn empty strings into nulls."""
    exprs = []
    for c in columns:
        s = pl.col(c).str.strip_chars()
        exprs.append(pl.when(s == "").then(None).otherwise(s).alias(c))
    return df.with_columns(exprs) if exprs else df


def int_id(column: str) -> pl.Expr:
    """A MIMIC numeric id column as a canonical string ('10000032', also accepting '10000032.0' and 'p10000032');
    null when it is not a number."""
    s = pl.col(column).str.strip_chars().str.strip_chars_start("psPS")
    as_int = s.cast(pl.Float64, strict=False).cast(pl.Int64, strict=False)
    return as_int.cast(pl.String).alias(column)
