"""The faster table and manifest paths of build-sequences give what the plain paths gave: tables handed to polars
without a decode/encode round trip read as before in every encoding, and the manifests written on a thread of
their own still report a failed write (the byte-identity of whole builds is
`test_build_synth.test_synth_rerun_identical_bytes`)."""

from __future__ import annotations

import codecs
import gzip
from pathlib import Path

import polars as pl
import pytest

from medst.archive.tables import read_table
from medst.archive.text_encoding import decode_bytes, looks_binary
from medst.errors import UserInputError
from medst.sequences.build_output import _ManifestWriter

ROWS = "dicom_id,subject_id,study_id,ViewPosition\nd1,10000032,50414267,PA\nd2,10000032,50414267,LATERAL\n"
ACCENTED = ROWS.replace("LATERAL", "LATÉRAL \u2013 caf\u00e9")

TABLES = {
    "ascii": ROWS.encode("ascii"),
    "ascii_crlf": ROWS.replace("\n", "\r\n").encode("ascii"),
    "ascii_ragged": (ROWS + "d3,1,2,PA,extra,fields\n").encode("ascii"),
    "utf8": ACCENTED.encode("utf-8"),
    "utf8_bom": codecs.BOM_UTF8 + ACCENTED.encode("utf-8"),
    "cp1252": ACCENTED.encode("cp1252"),
    "latin1_undefined_in_cp1252": ROWS.encode("ascii") + b"d4,1,2,\x81\x8d\n",
    "utf16_bom": ACCENTED.encode("utf-16"),
    "utf16le_no_bom": ROWS.encode("utf-16-le"),  # ASCII bytes with a NUL every other byte
    "utf32_bom": ACCENTED.encode("utf-32"),
    "nul_after_4k": ROWS.encode("ascii") + b"d5,1,2,PA\n" * 500 + b"d6,1,2,P\x00A\n",
    "nul_after_64k": ROWS.encode("ascii") + b"d5,1,2,PA\n" * 7000 + b"d6,1,2,P\x00A\n",
    "controls": ROWS.encode("ascii") + b"d7,1,2,\x01\x02\x03\x04\x05\x06\x07\x08\n" * 10,
    "binary": bytes(range(256)) * 8,
}


def _read_reference(path: Path) -> pl.DataFrame:
    """`read_table` of a CSV as it was: every table decoded to text, then encoded to UTF-8 for polars."""
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    text, _ = decode_bytes(raw)
    if looks_binary(text[:65536]):
        raise UserInputError(f"cannot read {path}: it is not a text (CSV) file")
    try:
        df = pl.read_csv(text.encode("utf8"), infer_schema=False, truncate_ragged_lines=True)
    except Exception as err:
        raise UserInputError(
            f"cannot read table {path}: {type(err).__name__}: {err}".splitlines()[0]
        ) from err
    return df.with_row_index("__row", offset=1)


def _outcome(read, path: Path) -> tuple[str, object]:  # type: ignore[no-untyped-def]
    try:
        df = read(path)
    except UserInputError as err:
        return "error", str(err).split(":")[0]  # the kind of failure, not the parser's wording
    return "frame", df.rows()


@pytest.mark.parametrize("gzipped", [False, True])
@pytest.mark.parametrize("name", sorted(TABLES))
def test_table_reads_as_the_round_trip_did(tmp_path: Path, name: str, gzipped: bool) -> None:
    data = TABLES[name]
    path = tmp_path / ("t.csv.gz" if gzipped else "t.csv")
    path.write_bytes(gzip.compress(data, mtime=0) if gzipped else data)
    new = _outcome(lambda p: read_table(p), path)
    assert new == _outcome(_read_reference, path)
    if name in ("ascii", "utf8", "cp1252", "utf16_bom"):
        assert new[0] == "frame"
    if name in ("nul_after_4k", "controls", "binary"):
        assert new[0] == "error"


def test_accented_table_keeps_its_text(tmp_path: Path) -> None:
    for name in ("utf8", "utf8_bom", "cp1252", "utf16_bom", "utf32_bom"):
        (tmp_path / f"{name}.csv").write_bytes(TABLES[name])
        df = read_table(tmp_path / f"{name}.csv", ["dicom_id", "ViewPosition"])
        assert df.get_column("ViewPosition").to_list() == ["PA", "LATÉRAL \u2013 caf\u00e9"], name


def test_binary_table_is_one_user_error(tmp_path: Path) -> None:
    (tmp_path / "t.csv.gz").write_bytes(gzip.compress(TABLES["controls"]))
    with pytest.raises(UserInputError, match="not a text"):
        read_table(tmp_path / "t.csv.gz")


def test_manifest_writer_writes_and_reports_a_failed_write(tmp_path: Path) -> None:
    frame = pl.DataFrame({"a": ["x", "y"], "b": [1, 2]})
    writer = _ManifestWriter(tmp_path, (("one", frame), ("two", frame.head(1))))
    writer.join()
    assert pl.read_parquet(tmp_path / "one.parquet").equals(frame)
    assert pl.read_parquet(tmp_path / "two.parquet").equals(frame.head(1))
    broken = _ManifestWriter(tmp_path / "no-such-folder", (("one", frame),))
    with pytest.raises(OSError):
        broken.join()
