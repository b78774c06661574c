"""Views, body part, header reading on real DICOMs, time parsing and windowing (units of build-sequences)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from medst.archive.headers import scan_headers
from medst.archive.study_time import study_datetime
from medst.sequences.timeline import order_studies, windows
from medst.sequences.views import (
    add_reference_views,
    add_views,
    classify_code_meaning,
    classify_description,
    classify_position,
    non_chest_mask,
)


@pytest.mark.parametrize(
    ("value", "view", "rank"),
    [
        ("PA", "frontal", 0),
        ("AP", "frontal", 1),
        ("ap supine", "frontal", 1),
        ("AP ERECT", "frontal", 1),
        ("LATERAL", "lateral", None),
        ("LL", "lateral", None),
        ("L", "lateral", None),
        ("XTABLE LATERAL", "lateral", None),
        ("LAO", "other", None),
        ("SWIMMERS", "other", None),
        ("AP AXIAL", "other", None),
        ("PA LLD", "other", None),
        ("", None, None),
        (None, None, None),
    ],
)
def test_view_position_vocabulary(value: str | None, view: str | None, rank: int | None) -> None:
    assert classify_position(value) == (view, rank)


def test_fallbacks_code_sequence_then_description() -> None:
    assert classify_code_meaning("postero-anterior") == ("frontal", 0)
    assert classify_code_meaning("antero-posterior") == ("frontal", 1)
    assert classify_code_meaning("left lateral") == ("lateral", None)
    assert classify_description("CHEST (PORTABLE AP)") == ("frontal", 1)
    assert classify_description("CHEST (PA AND LAT)") == (None, None)  # names both: decides nothing
    df = pl.DataFrame(
        {
            "view_position": ["PA", None, None, None, None],
            "view_code_meaning": [None, "lateral", None, None, None],
            "procedure_description": [None, None, "CHEST (PORTABLE AP)", "CHEST (PA AND LAT)", None],
            "series_description": [None, None, None, "view: PA", None],
        }
    )
    out = add_views(df)
    assert out.get_column("view").to_list() == ["frontal", "lateral", "frontal", "frontal", "unknown"]
    assert out.get_column("view_source").to_list() == [
        "tag",
        "code_sequence",
        "description",
        "description",
        "none",
    ]
    assert out.get_column("frontal_rank").to_list()[:4] == [0, 2, 1, 0]


def test_reference_views_take_view_position_alone() -> None:
    """Rows with blank views and spellings MIMIC holds: reference keeps only ViewPosition PA/AP as frontal and
    LATERAL/LL as lateral (the authors' exact ``isin``), clean falls back to the code sequence and description."""
    df = pl.DataFrame(
        {
            "view_position": ["PA", "AP", "LL", None, "", None, "XTABLE LATERAL", "AP AXIAL", "AP SUPINE"],
            "view_code_meaning": [None, None, None, "postero-anterior", "lateral", None, None, None, None],
            "procedure_description": [None, None, None, None, None, "CHEST (PORTABLE AP)", None, None, None],
        }
    )
    ref = add_reference_views(df)
    assert ref.columns == add_views(df).columns
    assert ref["view"].to_list() == [
        "frontal", "frontal", "lateral", "unknown", "unknown", "unknown", "other", "other", "other"
    ]
    assert ref["view_source"].to_list() == ["tag"] * 3 + ["none"] * 3 + ["tag"] * 3
    assert ref["frontal_rank"].to_list()[:2] == [0, 1]
    clean = add_views(df)["view"].to_list()
    assert clean[3:7] == ["frontal", "lateral", "frontal", "lateral"]
    # A user's view column keeps its vocabulary, without fallbacks.
    table = add_reference_views(df, table_source=True)
    assert table["view"].to_list()[-1] == "frontal" and table["view"].to_list()[3] == "unknown"


def test_real_dicom_headers_classified(realdata: Path) -> None:
    d = realdata / "dicom"
    files = {
        "chest/RG1_J2KI.dcm": ("frontal", 0, False),
        "chest/siim_sample_pa.dcm": ("frontal", 0, False),
        "chest/rsna_sample_ap.dcm": ("frontal", 1, False),
        "negative/RG2_JPLL.dcm": ("unknown", None, True),  # hip, no ViewPosition
        "negative/RG2_JPLY_fixed.dcm": ("unknown", None, True),
        "grouping/77654033/CR1/6154": ("lateral", None, True),  # LL, C-spine
        "grouping/77654033/CR2/6247": ("frontal", 1, True),  # AP, C-spine
    }
    paths = [str(d / f) for f in files]
    for workers in (1, 2):
        heads = scan_headers(paths, workers=workers, progress=False, chunk=2)
        assert heads.get_column("error").null_count() == len(files)
        views = add_views(heads)
        non_chest = non_chest_mask(views).to_list()
        for i, (view, rank, nc) in enumerate(files.values()):
            assert views["view"][i] == view, paths[i]
            if rank is not None:
                assert views["frontal_rank"][i] == rank
            assert non_chest[i] is nc, paths[i]
    # No PHI leaves the scan: only the listed columns exist.
    assert "PatientName" not in heads.columns and "patient_name" not in heads.columns
    assert heads["rows"][0] == 1955 and heads["transfer_syntax"][0] == "1.2.840.10008.1.2.4.91"


def test_unreadable_header_is_a_reason_not_a_crash(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.dcm"
    bad.write_bytes(b"not a dicom file at all")
    heads = scan_headers([str(bad), str(tmp_path / "absent.dcm")], progress=False)
    assert heads.get_column("error").to_list() == ["not_dicom", "not_dicom"]


def test_float_study_times_and_ordering() -> None:
    df = pl.DataFrame(
        {
            "subject_id": ["1", "1", "1", "1"],
            "study_id": ["59", "51", "55", "50"],
            "d": ["21800506", "21800506", "21800506", "21800507"],
            "t": ["80556.875", "556.0", "235959", "0.5"],
            "tb": ["a", "b", "c", "d"],
        }
    ).with_columns(study_datetime("d", "t").alias("dt"))
    assert df["dt"][0] == datetime(2180, 5, 6, 8, 5, 56, 875000)
    assert df["dt"][1] == datetime(2180, 5, 6, 0, 5, 56)
    ordered = order_studies(df, "dt", "tb")
    # Time order, not study-id order.
    assert ordered["study_id"].to_list() == ["51", "59", "55", "50"]
    assert ordered["day_offset"][0] == 0.0
    assert ordered["day_offset"][3] == pytest.approx((24 * 3600 - 356 + 0.5) / 86400)


def test_windows_chunks_and_remainder() -> None:
    n = 10
    df = pl.DataFrame(
        {
            "subject_id": ["p"] * n,
            "study_id": [f"s{i}" for i in range(n)],
            "order": list(range(n)),
            "day_offset": [float(i) for i in range(n)],
        }
    )
    w = windows(df, 4, 4, 1)
    assert [len(x) for x in w["study_ids"].to_list()] == [4, 4, 2]
    assert windows(df, 4, 4, 3).height == 2  # remainder of 2 < min_len
    w2 = windows(df, 4, 2, 1)
    assert [x[0] for x in w2["study_ids"].to_list()] == [
        "s0",
        "s2",
        "s4",
        "s6",
    ]  # stops once the end is reached


def test_same_instant_ties_use_the_frontal_id_not_the_study_id() -> None:
    df = pl.DataFrame(
        {
            "subject_id": ["1", "1"],
            "study_id": ["50000001", "59999999"],
            "dt": [datetime(2180, 1, 1, 8), datetime(2180, 1, 1, 8)],
            "frontal_dicom_id": ["ffff", "0000"],
        }
    )
    ordered = order_studies(df, "dt", "frontal_dicom_id")
    assert ordered["study_id"].to_list() == ["59999999", "50000001"]
    assert ordered["order"].to_list() == [0, 1]


def test_reference_rows_take_their_frontal_images_own_time() -> None:
    """The authors sort each frontal row by its own StudyDate/StudyTime; clean steps use the study's earliest image.
    Study A's lateral was taken at 09:00 and its frontal at 10:00; study B's frontal at 09:30."""
    from medst.sequences.studies import choose_views

    t = [datetime(2150, 1, 1, h, m) for h, m in ((9, 0), (10, 0), (9, 30))]
    images = pl.DataFrame(
        {
            "subject_id": ["1", "1", "1"],
            "study_id": ["A", "A", "B"],
            "dicom_id": ["a-lat", "a-front", "b-front"],
            "path": ["x", "y", "z"],
            "view": ["lateral", "frontal", "frontal"],
            "frontal_rank": [2, 0, 0],
            "rows": [10, 10, 10],
            "columns": [10, 10, 10],
            "study_datetime": t,
            "day_offset_in": [None, None, None],
            "input_order": [0, 1, 2],
        },
        schema_overrides={"day_offset_in": pl.Float64},
    )
    order = {}
    for compat in ("reference", "clean"):
        steps = order_studies(choose_views(images, compat), "study_datetime", ["tiebreak_order", "frontal_dicom_id"])
        order[compat] = steps["frontal_dicom_id"].to_list()
    assert order == {"reference": ["b-front", "a-front"], "clean": ["a-front", "b-front"]}
