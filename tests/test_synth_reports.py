"""Synthetic reports: MIMIC layout and variants, and agreement of text, CheXpert labels and the truth table."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import polars as pl

from medst.synth.reports import HEADER
from medst.synth.trajectories import UNCERTAIN_BELOW

KEYWORDS = {
    "Pleural Effusion": ("pleural_effusion", "pleural effusion"),
    "Consolidation": ("consolidation", "consolidation"),
    "Edema": ("edema", "edema"),
    "Pneumothorax": ("pneumothorax", "pneumothorax"),
    "Cardiomegaly": ("cardiomegaly", "cardiomegaly"),
    "Pneumonia": ("pneumonia", "pneumonia"),
}
CHANGE_WORDS = {
    "new": ("new", "development"),
    "increased": ("increase", "worsening"),
    "decreased": ("decrease", "improv"),
    "unchanged": ("unchanged", "stable", "no significant change"),
    "resolved": ("resolv", "resolution"),
}


def _studies(root: Path) -> pl.DataFrame:
    truth = pl.read_parquet(root / "synth_truth.parquet")
    return truth.unique("study_id", keep="first").sort("study_id")


def _report(root: Path, row: dict) -> str:
    sub = str(row["subject_id"])
    return (root / "files" / f"p{sub[:2]}" / f"p{sub}" / f"s{row['study_id']}.txt").read_text()


def test_layout_follows_the_mimic_text_format(synth_archive: Path) -> None:
    studies = _studies(synth_archive)
    variants = set()
    for row in studies.iter_rows(named=True):
        text = _report(synth_archive, row)
        variants.add(row["report_variant"])
        if row["report_variant"] == "empty":
            assert text == ""
            continue
        lines = text.splitlines()
        assert lines[0] == HEADER
        assert lines[1].startswith(" EXAMINATION:  ")
        assert all(len(line) <= 79 for line in lines), text
        assert all(line.startswith(" ") for line in lines)
        assert "___" in text or " INDICATION:  Dyspnea" in text or "COMPARISON:  None." in text
        heads = {line.strip() for line in lines if line.strip().endswith(":")}
        v = row["report_variant"]
        if v in ("standard", "numbered", "addendum"):
            assert {"FINDINGS:", "IMPRESSION:"} <= heads
        if v == "impression_only":
            assert "IMPRESSION:" in heads and "FINDINGS:" not in heads
        if v == "findings_only":
            assert "FINDINGS:" in heads and "IMPRESSION:" not in heads
        if v == "last_paragraph":
            assert not heads & {"FINDINGS:", "IMPRESSION:"}
        if v == "misspelled":
            assert heads & {"IMPRESSIONS:", "FINDINGS/IMPRESSION:", "FINDNGS:"}
        if v == "numbered":
            assert " 1. " in text and " 2. " in text
        if v == "addendum":
            assert " " + "_" * 78 in lines and "ADDENDUM:" in text
    assert variants == {
        "standard",
        "impression_only",
        "findings_only",
        "last_paragraph",
        "misspelled",
        "numbered",
        "addendum",
        "empty",
    }


def test_reports_and_labels_agree_with_the_truth(synth_archive: Path) -> None:
    chex = pl.read_csv(
        io.BytesIO(gzip.decompress((synth_archive / "mimic-cxr-2.0.0-chexpert.csv.gz").read_bytes()))
    )
    labels = {r["study_id"]: r for r in chex.iter_rows(named=True)}
    studies = _studies(synth_archive)
    checked_changes = 0
    for row in studies.iter_rows(named=True):
        if row["report_variant"] == "empty":
            assert row["study_id"] not in labels
            continue
        text = " ".join(_report(synth_archive, row).split()).lower()  # undo the line wrapping
        lab = labels[row["study_id"]]
        for column, (finding, word) in KEYWORDS.items():
            sev = row[f"sev_{finding}"]
            if sev > 0:
                expected: float | None = 1.0 if sev >= UNCERTAIN_BELOW else -1.0
                if finding == "pneumonia" and not row["pneumonia_flag"]:
                    expected = None
                assert lab[column] == expected, (column, sev, text)
                if expected is not None:
                    assert word in text
                if finding == "pleural_effusion":
                    assert row["effusion_side"] in text
                if finding == "consolidation":
                    assert row["consolidation_lobe"] in text
            else:
                assert lab[column] in (0.0, None), (column, text)
            change = row[f"chg_{finding}"]
            strong = change in CHANGE_WORDS and sev >= UNCERTAIN_BELOW
            if finding != "pneumonia" and (strong or change == "resolved"):
                assert any(w in text for w in CHANGE_WORDS[change]), (finding, change, text)
                checked_changes += 1
        healthy = all(row[f"sev_{f}"] == 0 for f, _ in KEYWORDS.values())
        assert (lab["No Finding"] == 1.0) == healthy
    assert checked_changes > 20


def test_trajectories_evolve(synth_archive: Path) -> None:
    studies = _studies(synth_archive)
    changes = set(studies.select(pl.col("^chg_.*$")).unpivot()["value"])
    assert changes == {"absent", "baseline", "new", "increased", "decreased", "unchanged", "resolved"}
    per_patient = studies.group_by("subject_id").len()
    counts = per_patient["len"].to_numpy()
    assert counts.max() >= 4 and counts.min() >= 1
    # severities stay in [0, 1]; a present finding is at least 0.2
    sev = studies.select(pl.col("^sev_.*$")).unpivot()["value"].to_numpy()
    assert sev.min() >= 0 and sev.max() <= 1 and sev[sev > 0].min() >= 0.2
    ordered = studies.sort("subject_id", "study_index")
    for _, grp in ordered.group_by("subject_id", maintain_order=True):
        times = grp["study_datetime"].to_list()
        assert times == sorted(times) and len(set(times)) == len(times)
