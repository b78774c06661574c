"""The faster report path of build-sequences gives what the plain path gives: same sections, same decoded text,
same parsed frame whether the parsing overlaps other work or not (the byte-identity of whole builds across worker
counts is `test_build_synth.test_synth_rerun_identical_bytes`)."""

from __future__ import annotations

import codecs
import random
from pathlib import Path

import pytest

from medst.archive import reports
from medst.archive.report_files import BINARY, ReportParsing, decode_report, parse_report_files, walk_tree
from medst.archive.text_encoding import decode_text

TRICKY_BODIES = [
    "",
    "no headers at all. just text",
    "FINDINGS: a b c",  # header on the first line
    " FINDINGS : lungs clear.\n IMPRESSION:\tnone\n",  # spaces and a tab before the colon
    "X: a\nFINDINGS   : p q r\n IMPRESSION  \t: s t u",
    "   FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n\n INDICATION:  ___ with cough\n\n FINDINGS: \n\n ok.",
    "IMPRESSION: x\n\t  FINDINGS  :  y\nNote: lower case is no header\nFINDNGS: misspelled",
    "A" * 45 + ": too long for a header\nB" + " " * 50 + ":spaces then colon\nC D E F:",
    "FINDINGS AND IMPRESSION: both\n(PA) VIEW: odd\n1. NUMBERED: item",
    "\n\nFINDINGS:\n\nIMPRESSION:",
]


def _split_sections_reference(body: str) -> tuple[dict[str, str], str]:
    """`reports._split_sections` as it was, with the ``(?m)^`` header pattern."""
    sections: dict[str, str] = {}
    matches = list(reports._HEADER.finditer(body))
    preamble = body[: matches[0].start()] if matches else body
    for k, m in enumerate(matches):
        end = matches[k + 1].start() if k + 1 < len(matches) else len(body)
        name = reports.canonical_section(m.group(1))
        content = body[m.end() : end].strip()
        if sections.get(name):
            if content:
                sections[name] = sections[name] + "\n" + content
        else:
            sections[name] = content
    return sections, preamble


def _synth_report_files(root: Path) -> tuple[Path, list[str]]:
    files = root / "files"
    return files, walk_tree(files)[0]


def test_sections_match_the_multiline_header_pattern(synth_archive: Path) -> None:
    folder, rels = _synth_report_files(synth_archive)
    bodies = list(TRICKY_BODIES)
    bodies += [(folder / r).read_text(encoding="utf-8").replace("\r\n", "\n") for r in rels]
    assert len(bodies) > 50
    for body in bodies:
        assert reports._split_sections(body) == _split_sections_reference(body), body


def test_addendum_shortcut_keeps_the_addendum_rules() -> None:
    body = " ________\n IMPRESSION: old one two\n________________\nFINDINGS: new one two three"
    parsed = reports.parse_report(body)
    assert parsed.has_addendum and parsed.section_used == "impression+findings"
    # Seven underscores are no separator, with or without the shortcut.
    assert not reports.parse_report("FINDINGS: a b c\n_______\nIMPRESSION: d e f").has_addendum


def test_plain_ascii_shortcut_decodes_like_decode_text() -> None:
    rng = random.Random(0)
    alphabet = [0, 7, 9, 10, 12, 13, 27, 32, 65, 97, 127, 0x80, 0x9D, 0xA9, 0xC3, 0xE9, 0xFE, 0xFF]
    cases = [
        b"",
        b"abc",
        b"a\tb\r\n\x0c",
        b"x" * 200 + b"\x07",
        codecs.BOM_UTF8 + b"x",
        "hi".encode("utf-16"),
    ]
    cases += [bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(3000)]
    for data in cases:
        text, enc = decode_text(data)
        assert decode_report(data) == ((text, enc) if text is not None else (None, BINARY)), data


def _read_and_parse_reference(folder: Path, rels: list[str]) -> list[tuple]:
    """Each file read whole, decoded by `decode_text`, parsed: the fields parse_report_files returns."""
    rows = []
    for rel in rels:
        text, enc = decode_text((folder / rel).read_bytes())
        p = reports.parse_report(text, 3)
        rows.append((p.section_used, p.text, p.n_tokens, p.is_empty, p.has_addendum, enc))
    return rows


def test_overlapped_parsing_matches_the_plain_path(
    synth_archive: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, rels = _synth_report_files(synth_archive)
    monkeypatch.setattr(ReportParsing, "FIRST_CHUNK", 3)  # several pieces even for a small archive
    monkeypatch.setattr(ReportParsing, "CHUNK", 7)
    parsing = ReportParsing(folder, rels, 3, workers=2)  # started, then other work while the workers parse
    serial = parse_report_files(folder, rels, 3, workers=1)
    overlapped = parsing.result()
    assert overlapped.equals(serial)
    fields = ["section_used", "text", "n_tokens", "is_empty", "has_addendum", "encoding"]
    assert list(serial.select(fields).iter_rows()) == _read_and_parse_reference(folder, rels)
    assert serial.get_column("report_item").to_list() == rels
    with pytest.raises(RuntimeError):
        parsing.result()


def _clean_text_reference(text: str) -> tuple[str, int]:
    """`reports.clean_text` as it was: one ``\\w+`` regex per sentence."""
    out, n = [], 0
    text = text.replace("\n", " ").lower()
    for point in reports._NUMBERED.split(text):
        for sentence in point.split("."):
            tokens = reports._WORD.findall(sentence)
            if len(tokens) <= 1:
                continue
            tokens = [t for t in (tok.encode("ascii", "ignore").decode("ascii") for tok in tokens) if t]
            if tokens:
                out.append(" ".join(tokens))
                n += len(tokens)
    return " ".join(out), n


def test_ascii_cleaning_matches_the_regex_tokens(synth_archive: Path) -> None:
    folder, rels = _synth_report_files(synth_archive)
    texts = [
        "1. Abc 2.5 cm x_y. 3.a b. c",
        "  . . a. b c. 10.d e f\n\tg-h (i) j+k, l/m",
        "a__b c-d e+f g\r\nh\x0ci  j",
        "café au lait. b c",
        "Tokens: ONE two; THREE",
        "UPPER Case.\nNEW\nLINES 4.ZZ Top. A_B",
        "no dots at all IN THIS ONE",
        "\u212aelvin SIGN lowers to ascii. 5. x y",  # str.lower makes it ASCII: the byte path after all
        "\u0130stanbul DOT above. a b",
    ]
    texts += [(folder / r).read_text(encoding="utf-8") for r in rels]
    for text in texts:
        assert reports.clean_text(text) == _clean_text_reference(text), text
