"""Reports and tables as real archives write them: encodings, content-free reports, time formats, view spellings,
and builds that keep too little (issue 14, cases 4, 5, 10, 11). Every input is a real file written here."""

from __future__ import annotations

import codecs
import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from PIL import Image

from medst.archive.report_files import parse_report_files
from medst.archive.reports import CONTENT_FREE, parse_report
from medst.archive.tables import read_table
from medst.archive.text_encoding import decode_text
from medst.archive.times import parse_time
from medst.schemas.build import BuildConfig
from medst.sequences.build import build_sequences
from medst.sequences.views import classify_position

REPORT = "FINAL REPORT\n IMPRESSION: Small left pleural effusion, new since prior.\n"
CLEAN = "small left pleural effusion new since prior"
HEADERS_ONLY = "FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n\n INDICATION:  ___\n"


def _images(root: Path, names: list[str]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        if not (root / name).exists():
            Image.new("L", (8, 8), 128).save(root / name)


def _archive(tmp: Path, rows: dict[str, list[str]]) -> Path:
    """A generic archive at `tmp`: images/<file> as real PNGs and t.csv holding `rows`."""
    _images(tmp / "images", sorted(set(rows["file"])))
    pl.DataFrame(rows).write_csv(tmp / "t.csv")
    return tmp


def _config(root: Path, **kw: object) -> BuildConfig:
    columns = {"patient": "pid", "time": "when", "image": "file", "view": "view"}
    columns.update(kw.pop("columns", {}))  # type: ignore[arg-type]
    args = {"archive": root, "out": root / "out", "table": Path("t.csv"), "image_root": root / "images"}
    args.update(kw)
    return BuildConfig(columns=columns, **args)  # type: ignore[arg-type]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "medst.cli", "build-sequences", *args, "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
    )


# -- case 4: report decoding -------------------------------------------------------------------------------------

ENCODED = {
    "utf8": REPORT.encode("utf-8"),
    "utf8bom": codecs.BOM_UTF8 + REPORT.encode("utf-8"),
    "utf16le_bom": REPORT.encode("utf-16"),  # native order with BOM
    "utf16be_bom": codecs.BOM_UTF16_BE + REPORT.encode("utf-16-be"),
    "utf32_bom": REPORT.encode("utf-32"),
    "utf16le_nobom": REPORT.encode("utf-16-le"),
    "utf16be_nobom": REPORT.encode("utf-16-be"),
    "cp1252": REPORT.replace("prior", "prior \u2013 caf\u00e9").encode("cp1252"),
}


@pytest.mark.parametrize("name", sorted(ENCODED))
def test_report_bytes_decode_to_the_same_text(name: str) -> None:
    text, enc = decode_text(ENCODED[name])
    assert text is not None
    assert parse_report(text).text == CLEAN + (" caf" if name == "cp1252" else "")
    assert (enc == "cp1252") == (name == "cp1252")


def test_binary_bytes_are_not_text() -> None:
    import io

    assert decode_text(Path(__file__).read_bytes())[0] is not None  # a text file decodes; a real PNG must not
    buf = io.BytesIO()
    Image.new("L", (32, 32), 7).save(buf, format="PNG")
    assert decode_text(buf.getvalue())[0] is None
    assert decode_text(b"FINDINGS: clear\x01\x02\x03\x04")[0] is None  # 4 controls in 19 characters


def test_report_folder_in_every_encoding(tmp_path: Path) -> None:
    """MIMIC-style ``sNNN.txt`` files read in workers: one text for every encoding, a binary file flagged."""
    rels = []
    for k, name in enumerate(sorted(ENCODED)):
        (tmp_path / f"s{k}.txt").write_bytes(ENCODED[name])
        rels.append(f"s{k}.txt")
    (tmp_path / "s99.txt").write_bytes(bytes(range(256)) * 4)
    parsed = parse_report_files(tmp_path, [*rels, "s99.txt"])
    texts = parsed.get_column("text").to_list()
    assert texts[:-1] == [CLEAN + (" caf" if n == "cp1252" else "") for n in sorted(ENCODED)]
    assert parsed.get_column("section_used")[-1] == "undecodable"
    assert "f i n a l" not in " ".join(texts)


def test_build_rejects_undecodable_and_counts_fallback(tmp_path: Path) -> None:
    names = sorted(ENCODED)
    (tmp_path / "reports").mkdir()
    for name in names:
        (tmp_path / "reports" / f"{name}.txt").write_bytes(ENCODED[name])
    (tmp_path / "reports" / "binary.txt").write_bytes(bytes(range(256)) * 4)
    rows = {
        "pid": [f"P{k}" for k in range(len(names) + 1)],
        "when": ["20200125"] * (len(names) + 1),
        "file": [f"{k}.png" for k in range(len(names) + 1)],
        "view": ["PA"] * (len(names) + 1),
        "rep": [f"reports/{n}.txt" for n in names] + ["reports/binary.txt"],
    }
    root = _archive(tmp_path, rows)
    summary = build_sequences(_config(root, columns={"report_path": "rep"}), progress=False)
    assert summary.rejects_by_reason.get("undecodable_report") == 1
    studies = pl.read_parquet(root / "out" / "studies.parquet")
    assert sorted(set(studies["text"].str.replace(" caf$", "").to_list())) == [CLEAN]
    report = json.loads((root / "out" / "build_report.json").read_text())
    assert report["reports_with_fallback_encoding"] == 1
    assert report["report_encodings"]["binary"] == 1
    assert "read with the declared fallback cp1252: 1" in (root / "out" / "build_report.md").read_text()


@pytest.mark.parametrize("encoding", ["utf-16", "utf-8-sig", "latin-1"])
def test_table_csv_in_common_encodings(tmp_path: Path, encoding: str) -> None:
    text = "patientid,view,notes\n17,PA,Caf\u00e9 opacity\n"
    (tmp_path / "m.csv").write_bytes(text.encode(encoding))
    df = read_table(tmp_path / "m.csv", ["patientid", "view"])
    assert df.columns[1:] == ["patientid", "view", "notes"]
    assert df["notes"].to_list() == ["Caf\u00e9 opacity"]


# -- case 5: content-free reports --------------------------------------------------------------------------------


def test_headers_only_report_is_content_free() -> None:
    p = parse_report(HEADERS_ONLY)
    assert p.section_used == CONTENT_FREE and p.text == ""
    kept = parse_report(HEADERS_ONLY.replace("___", "___ year old woman with cough."))
    assert kept.section_used == "last_paragraph" and kept.text == "___ year old woman with cough"


@pytest.mark.parametrize(
    ("compat", "reason"), [("clean", "content_free_report"), ("reference", "no_impression_or_findings")]
)
def test_content_free_report_rejected_with_its_own_reason(tmp_path: Path, compat: str, reason: str) -> None:
    rows = {
        "pid": ["A", "A"],
        "when": ["2020-01-01", "2020-01-03"],
        "file": ["a.png", "b.png"],
        "view": ["PA", "PA"],
        "txt": [HEADERS_ONLY, REPORT],
    }
    root = _archive(tmp_path, rows)
    summary = build_sequences(_config(root, columns={"report": "txt"}, compat=compat), progress=False)
    assert summary.rejects_by_reason.get(reason) == 1
    texts = pl.read_parquet(root / "out" / "studies.parquet")["text"].to_list()
    assert texts == [CLEAN]


# -- case 10: time columns and view spellings --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20200125", "2020-01-25 00:00:00"),
        ("20200125.0", "2020-01-25 00:00:00"),
        ("20200125103015", "2020-01-25 10:30:15"),
        ("20200125103015.25", "2020-01-25 10:30:15.250000"),
        ("20200125103015+0100", "2020-01-25 09:30:15"),
        ("2020-01-25", "2020-01-25 00:00:00"),
        ("2020-01-25T10:30:00Z", "2020-01-25 10:30:00"),
        ("January 25, 2020", "2020-01-25 00:00:00"),
        ("Jan 25 2020", "2020-01-25 00:00:00"),
        ("25 January 2020", "2020-01-25 00:00:00"),
        ("25-Jan-2020", "2020-01-25 00:00:00"),
        ("January 25, 2020 14:05", "2020-01-25 14:05:00"),
        ("2020", None),
        ("20201325", None),
        ("nan", None),
    ],
)
def test_time_values(value: str, expected: str | None) -> None:
    got = parse_time(value)
    assert (str(got) if got else None) == expected


@pytest.mark.parametrize(
    ("value", "view", "rank"),
    [
        ("AP_horizontal", "frontal", 1),
        ("AP horizontal", "frontal", 1),
        ("PA_horizontal", "frontal", 0),
        ("AP supine", "frontal", 1),
        ("AP-erect", "frontal", 1),
        ("pa", "frontal", 0),
        ("LARGE LATERAL", "lateral", None),
        ("LL", "lateral", None),
        ("RL", "lateral", None),
        ("latéral", "lateral", None),
        ("Lateral", "lateral", None),
        ("L", "lateral", None),
        ("LAT", "lateral", None),
        ("nan", None, None),
        ("", None, None),
        ("COSTAL", "other", None),
    ],
)
def test_view_spellings_of_public_archives(value: str, view: str | None, rank: int | None) -> None:
    assert classify_position(value) == (view, rank)


def test_table_times_and_views_build(tmp_path: Path) -> None:
    """PadChest-style DICOM dates and covid-chestxray month names build; unread times and unmapped views are
    listed by value in build_report.md; ``nan`` views are unknown, not other."""
    rows = {
        "pid": ["A", "A", "A", "B", "B", "C", "C", "D"],
        "when": [
            "20200125",
            "20200125",
            "January 27, 2020",
            "20200201103015.5",
            "2020",
            "2020-02-03",
            "2020-02-03",
            "2020-02-05",
        ],
        "file": ["a1.png", "a2.png", "a3.png", "b1.png", "b2.png", "c1.png", "c2.png", "d1.png"],
        "view": ["PA_horizontal", "LARGE LATERAL", "AP supine", "AP-erect", "PA", "COSTAL", "nan", "PA"],
        "txt": [REPORT] * 8,
    }
    root = _archive(tmp_path, rows)
    summary = build_sequences(_config(root, columns={"report": "txt"}), progress=False)
    studies = pl.read_parquet(root / "out" / "studies.parquet")
    assert studies["subject_id"].to_list() == ["A", "A", "B", "D"]
    assert studies["lateral_dicom_id"].to_list() == ["a2.png", None, None, None]
    assert summary.rejects_by_reason.get("unparsed_time") == 1
    md = (root / "out" / "build_report.md").read_text()
    assert "| `2020` | 1 |" in md
    assert "| `COSTAL` | 1 |" in md and "`nan`" not in md
    report = json.loads((root / "out" / "build_report.json").read_text())
    assert report["unmapped_views"] == {"COSTAL": 1}
    rejects = pl.read_parquet(root / "out" / "rejects.parquet")
    assert rejects.filter(pl.col("reason") == "unparsed_time")["message"].str.contains("'2020'").all()


def test_ambiguous_day_month_needs_time_format(tmp_path: Path) -> None:
    rows = {"pid": ["A", "A"], "when": ["03/04/2020", "13/04/2020"], "file": ["a.png", "b.png"], "view": ["PA"] * 2,
            "txt": [REPORT] * 2}  # fmt: skip
    root = _archive(tmp_path, rows)
    base = [str(root), "-o", str(root / "out"), "--table", "t.csv", "--image-root", str(root / "images")]
    cols = ["--columns", "patient=pid,time=when,image=file,view=view,report=txt"]
    res = _cli(*base, *cols)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "Traceback" not in res.stderr
    assert "--time-format" in res.stderr and "'03/04/2020'" in res.stderr
    res = _cli(*base, *cols, "--time-format", "%d/%m/%Y")
    assert res.returncode == 0, res.stderr
    studies = pl.read_parquet(root / "out" / "studies.parquet")
    assert studies["day_offset"].to_list() == [0.0, 10.0]


# -- case 11: builds that keep too little exit 2 with the likely cause --------------------------------------------


def _small(tmp_path: Path, n: int = 4, **change: list[str]) -> tuple[Path, list[str]]:
    rows = {
        "pid": [f"P{k}" for k in range(n)],
        "when": ["2020-01-25"] * n,
        "file": [f"{k}.png" for k in range(n)],
        "view": ["PA"] * n,
        "txt": [REPORT] * n,
    }
    rows.update(change)
    root = _archive(tmp_path, rows)
    args = [str(root), "-o", str(root / "out"), "--table", "t.csv"]
    return root, args


def _fails_with(res: subprocess.CompletedProcess[str], *words: str) -> None:
    assert res.returncode == 2, res.stdout + res.stderr
    err = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "Traceback" not in res.stderr, res.stderr
    for w in words:
        assert w in err[0], err[0]


def test_forgotten_image_root_exits_2(tmp_path: Path) -> None:
    root, args = _small(tmp_path)
    res = _cli(*args, "--columns", "patient=pid,time=when,image=file,view=view,report=txt")
    _fails_with(res, "0 of 4 images kept", "missing on disk under", "--image-root")
    assert (root / "out" / "build_report.md").is_file()  # still written for inspection
    assert "Too little kept" in (root / "out" / "build_report.md").read_text()


def test_unparsed_times_exit_2(tmp_path: Path) -> None:
    root, args = _small(tmp_path, when=["2020"] * 4)
    res = _cli(*args, "--image-root", str(root / "images"), "--columns",
               "patient=pid,time=when,image=file,view=view,report=txt")  # fmt: skip
    _fails_with(res, "0 of 4 images kept", "unparsed time", "'2020'", "--time-format")


def test_no_view_column_exits_2(tmp_path: Path) -> None:
    root, args = _small(tmp_path)
    res = _cli(*args, "--image-root", str(root / "images"), "--columns",
               "patient=pid,time=when,image=file,report=txt")  # fmt: skip
    _fails_with(res, "0 of 4 images kept", "without a frontal image", "unknown 4", "--columns view=")


def test_min_kept_share(tmp_path: Path) -> None:
    """1 of 4 images kept: below --min-kept 0.5 fails naming the reason; the default 0.1 passes."""
    root, args = _small(tmp_path, view=["PA", "LAO", "LAO", "LAO"])
    common = [*args, "--image-root", str(root / "images"), "--columns",
              "patient=pid,time=when,image=file,view=view,report=txt"]  # fmt: skip
    _fails_with(_cli(*common, "--min-kept", "0.5"), "only 1 of 4 images kept", "25.0%", "without a frontal")
    ok = _cli(*common)
    assert ok.returncode == 0, ok.stderr
    assert "1 studies" in ok.stdout


def test_covid_chestxray_dates(realdata: Path, tmp_path: Path) -> None:
    """The real latin-1 covid-chestxray metadata with its ``date`` column: month names are read, year-only
    values are listed and make the build exit 2 with the hint; ``--time-format %Y`` accepts them."""
    root = realdata / "longitudinal" / "covid-chestxray"
    args = [str(root), "-o", str(tmp_path / "o"), "--table", "metadata.csv", "--image-root", str(root / "images"),
            "--columns", "patient=patientid,time=date,view=view,image=filename,report=clinical_notes"]  # fmt: skip
    _fails_with(_cli(*args), "only 10 of 134 images kept", "unparsed time", "'2020'", "--time-format")
    report = json.loads((tmp_path / "o" / "build_report.json").read_text())
    assert report["unparsed_values"]["time"]["2020"] == 66
    ok = _cli(*args, "--time-format", "%Y")
    assert ok.returncode == 0, ok.stderr
    report = json.loads((tmp_path / "o" / "build_report.json").read_text())
    assert "unparsed_time" not in report["rejects_by_reason"] and report["counts"]["studies"] == 24
