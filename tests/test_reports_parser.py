"""Report sectioning and training-text cleaning (SPEC section 1), on written examples and on real Open-i reports."""

from __future__ import annotations

import re
import tarfile
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from medst.archive.reports import canonical_section, clean_text, parse_report

# The example report of the MIMIC-CXR documentation, verbatim (lines keep their leading/trailing spaces).
MIMIC_EXAMPLE = (
    "\n".join(
        [
            "                                 FINAL REPORT",
            " EXAMINATION:  CHEST (PA AND LAT)",
            " ",
            " INDICATION:  ___ year old woman with ?pleural effusion  // ?pleural effusion",
            " ",
            " TECHNIQUE:  Chest PA and lateral",
            " ",
            " COMPARISON:  ___",
            " ",
            " FINDINGS: ",
            " ",
            " Cardiac size cannot be evaluated.  Large left pleural effusion is new.  Small",
            " right effusion is new.  The upper lungs are clear.  Right lower lobe opacities",
            " are better seen in prior CT.  There is no pneumothorax.  There are mild",
            " degenerative changes in the thoracic spine",
            " ",
            " IMPRESSION: ",
            " ",
            " Large left pleural effusion",
        ]
    )
    + "\n"
)


def test_mimic_documented_example_sections_and_text() -> None:
    p = parse_report(MIMIC_EXAMPLE)
    assert p.section_used == "impression+findings"
    assert p.sections["impression"] == "Large left pleural effusion"
    assert p.sections["findings"].startswith("Cardiac size cannot be evaluated.")
    assert p.sections["indication"].startswith("___ year old woman")
    assert p.sections["comparison"] == "___"
    # IMPRESSION first, then FINDINGS; lower case, no punctuation, single spaces.
    assert p.text.startswith("large left pleural effusion cardiac size cannot be evaluated large left")
    assert p.text.endswith("there are mild degenerative changes in the thoracic spine")
    assert "  " not in p.text and p.text == p.text.lower()


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("IMPRESSION", "impression"),
        ("IMPRESSIONS", "impression"),
        ("IMPRESION", "impression"),
        ("CONCLUSION", "impression"),
        ("FINDINGS AND IMPRESSION", "impression"),
        ("FINDINGS/IMPRESSION", "impression"),
        ("FINDINGS", "findings"),
        ("FINDNGS", "findings"),
        ("FIDNINGS", "findings"),
        ("FINDING", "findings"),
        ("INDICATION", "indication"),
        ("WET READ", "wet_read"),
        ("PROVISIONAL FINDINGS IMPRESSION (PFI)", "impression"),
        ("CLINICAL NOTE", "clinical_note"),
    ],
)
def test_header_variants_and_misspellings(header: str, name: str) -> None:
    assert canonical_section(header) == name


def test_misspelled_headers_in_a_report() -> None:
    p = parse_report(" FINDNGS:  Lungs are clear. Heart size normal.\n \n IMPRESSIONS:  No acute process.\n")
    assert p.section_used == "impression+findings"
    assert p.text == "no acute process lungs are clear heart size normal"


def test_addendum_after_underscore_line() -> None:
    raw = (
        " ADDENDUM:  Findings discussed with Dr. ___ at 10:00.\n"
        " ______________________________________________________________________________\n"
        "                                 FINAL REPORT\n"
        " IMPRESSION:  Small left effusion.\n"
    )
    p = parse_report(raw)
    assert p.has_addendum
    assert "discussed" in p.sections["addendum"]
    assert p.section_used == "impression"
    assert p.text == "small left effusion"


def test_placeholders_are_not_addenda() -> None:
    p = parse_report(" FINDINGS:  Compared to ___ the effusion is smaller.\n")
    assert not p.has_addendum
    assert p.text == "compared to ___ the effusion is smaller"


def test_last_paragraph_fallback() -> None:
    raw = "                                 FINAL REPORT\n CHEST RADIOGRAPH\n \n Right IJ line ends in the SVC. No pneumothorax.\n"
    p = parse_report(raw)
    assert p.section_used == "last_paragraph"
    assert p.text == "right ij line ends in the svc no pneumothorax"


@pytest.mark.parametrize("raw", [None, "", "   \n \n  "])
def test_empty_reports(raw: str | None) -> None:
    p = parse_report(raw)
    assert p.is_empty and p.text == "" and p.section_used is None


def test_cleaning_rules() -> None:
    # numbered markers split sentences; one-token sentences dropped; non-ASCII letters dropped from tokens.
    text, n = clean_text("1. Cardiomegaly. 2. Mild edema, improved.  Stable.  Pneumothorax résolu")
    assert text == "mild edema improved pneumothorax rsolu"
    assert n == 5
    # fewer than 3 tokens -> dropped
    p = parse_report(" IMPRESSION:  No change.\n")
    assert p.text == "" and p.n_tokens == 2 and p.section_used == "impression"


def _openi_reports(path: Path) -> list[dict[str, str]]:
    out = []
    with tarfile.open(path, "r:gz") as tf:
        for member in tf:
            if not member.isfile() or not member.name.endswith(".xml"):
                continue
            fh = tf.extractfile(member)
            assert fh is not None
            root = ET.fromstring(fh.read())
            sections = {}
            for el in root.iter("AbstractText"):
                label = (el.get("Label") or "").upper()
                sections[label] = (el.text or "").strip()
            out.append(sections)
    return out


def _mimic_style(sections: dict[str, str]) -> str:
    """Assemble Open-i sections the way MIMIC writes reports: 79-column lines, each starting with a space."""
    lines = ["                                 FINAL REPORT", " EXAMINATION:  CHEST (PA AND LAT)", " "]
    for label in ("INDICATION", "COMPARISON", "FINDINGS", "IMPRESSION"):
        body = sections.get(label, "")
        lines.append(f" {label}: ")
        lines.append(" ")
        lines += [
            " " + w for w in textwrap.wrap(body, 78, break_on_hyphens=False, break_long_words=False)
        ] or [" "]
        lines.append(" ")
    return "\n".join(lines) + "\n"


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip()


def test_openi_round_trip(realdata: Path) -> None:
    reports = _openi_reports(realdata / "reports" / "openi_reports.tgz")
    assert len(reports) > 3900
    embedded = re.compile(r"\b[A-Z][A-Z ]{3,}:")
    exceptions = 0
    used = {"impression+findings": 0, "impression": 0, "findings": 0}
    for sections in reports:
        p = parse_report(_mimic_style(sections))
        mismatch = [
            label
            for label in ("FINDINGS", "IMPRESSION", "INDICATION", "COMPARISON")
            if _norm(p.sections.get(label.lower(), "")) != _norm(sections.get(label, ""))
        ]
        if mismatch:
            # Only sections whose own text embeds a header ("INDICATION: ...") may come back different,
            # because in MIMIC text such a line IS a header.
            assert all(embedded.search(sections.get(label, "")) for label in mismatch), (mismatch, sections)
            exceptions += 1
            continue
        imp, fin = bool(sections.get("IMPRESSION")), bool(sections.get("FINDINGS"))
        expected = (
            "impression+findings" if imp and fin else "impression" if imp else "findings" if fin else None
        )
        if expected is None:
            # Without impression/findings: the last paragraph, or nothing when that holds only the exam title,
            # headers and XXXX blanks (content-free: no training text).
            assert p.section_used in (None, "last_paragraph", "content_free")
            if p.section_used == "content_free":
                assert p.text == ""
            continue
        assert p.section_used == expected
        used[expected] += 1
        # The training text is exactly the cleaning of IMPRESSION then FINDINGS.
        source = " ".join(x for x in (sections.get("IMPRESSION", ""), sections.get("FINDINGS", "")) if x)
        text, n = clean_text(source)
        assert p.text == (text if n >= 3 else "")
    assert exceptions <= 20
    assert used["impression+findings"] > 2000 and used["impression"] > 100
