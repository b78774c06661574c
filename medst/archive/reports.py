"""MIMIC-CXR report sectioning and the training-text cleaning of SPEC section 1.

MIMIC-CXR reports are semi-structured: section headers are upper-case words followed by a colon at the start of
a line (after a newline and usually one space), e.g. `` FINDINGS:`` / `` IMPRESSION:``. Radiologists edit the
template freely, so headers come with variants and misspellings (``IMPRESSIONS``, ``FINDNGS``, ``FINDINGS AND
IMPRESSION``, ``CONCLUSION``). Addenda sit at the top, separated from the original report by a line of
underscores. Reports without any impression or findings fall back to their last paragraph (the convention of the
dataset publishers' own sectioning script).

Everything here is pure string work on one report; `parse_reports` maps it over many (optionally in a process
pool) and returns a polars frame.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

# A header: at the start of a line (after optional spaces), 2-40 upper-case letters / spaces / a few punctuation
# marks, then a colon. Lower-case words never start a header, which keeps "Note: ..." inside its section.
_HEADER = re.compile(r"(?m)^[ \t]*([A-Z][A-Z /&,()\-]{1,40}?)[ \t]*:")
# The same headers led by the newline before them, for `_split_sections` (which searches "\n" + body): a pattern
# that starts with a literal lets the regex engine jump from newline to newline, where the ``(?m)^`` form tries
# every character (it was the largest single cost of a MIMIC-size build). The name is greedy here, so it may
# end in spaces that the lazy form leaves out; the match ends at the same colon, and `canonical_section` strips.
_HEADER_AFTER_NEWLINE = re.compile(r"\n[ \t]*([A-Z][A-Z /&,()\-]{1,40})[ \t]*:")
# A line made only of underscores (at least 8): the addendum separator. De-identification placeholders are
# exactly three underscores inside text, so they never match.
_ADDENDUM_SEP = re.compile(r"(?m)^[ \t]*_{8,}[ \t]*$")
_ADDENDUM_MARK = "_" * 8  # a separator needs this substring; most reports lack it and skip the regex
_PARAGRAPH_SEP = re.compile(r"\n[ \t]*\n")
_NUMBERED = re.compile(r"[0-9]+\.")
_WORD = re.compile(r"\w+")
_SPACES = re.compile(r"\s+")

# Canonical names for the header spellings we know; anything else is matched fuzzily against the two
# sections that matter for training (impression, findings) and otherwise kept under its own lower-case name.
_KNOWN: dict[str, str] = {
    "IMPRESSION": "impression",
    "IMPRESSIONS": "impression",
    "CONCLUSION": "impression",
    "CONCLUSIONS": "impression",
    "SUMMARY": "impression",
    "OPINION": "impression",
    "FINDINGS AND IMPRESSION": "impression",
    "FINDINGS AND IMPRESSIONS": "impression",
    "FINDINGS/IMPRESSION": "impression",
    "FINDINGS / IMPRESSION": "impression",
    "IMPRESSION AND FINDINGS": "impression",
    "IMPRESSION/FINDINGS": "impression",
    "FINDINGS": "findings",
    "FINDING": "findings",
    "REPORT": "findings",
    "INDICATION": "indication",
    "INDICATIONS": "indication",
    "CLINICAL INDICATION": "indication",
    "REASON FOR EXAMINATION": "indication",
    "REASON FOR EXAM": "indication",
    "CLINICAL INFORMATION": "indication",
    "HISTORY": "history",
    "CLINICAL HISTORY": "history",
    "COMPARISON": "comparison",
    "COMPARISONS": "comparison",
    "TECHNIQUE": "technique",
    "EXAMINATION": "examination",
    "EXAM": "examination",
    "WET READ": "wet_read",
    "FINAL REPORT": "final_report",
    "NOTIFICATION": "notification",
    "RECOMMENDATION": "recommendation",
    "RECOMMENDATIONS": "recommendation",
    "RECOMMENDATION(S)": "recommendation",
}

SECTION_USED = ("impression+findings", "impression", "findings", "last_paragraph")
"""Values of `section_used` (None when the report gave no usable text)."""

CONTENT_FREE = "content_free"
"""``section_used`` of a report with neither impression nor findings whose last paragraph holds only section
headers, de-identification blanks (``___``, ``XXXX``) and exam-title words (`_TITLE_WORDS`): e.g. ``FINAL REPORT /
EXAMINATION: CHEST (PA AND LAT) / INDICATION: ___``, which the fallback used to turn into the training text
``final report chest pa and lat``. Its text is ''; the build rejects it as ``content_free_report`` (clean mode) or,
with ``--compat reference``, as ``no_impression_or_findings`` like every report without those sections."""

# Words of exam titles, template headers and placeholders: a text made only of these says nothing about the image.
# fmt: off
_TITLE_WORDS = frozenset(
    (
        "final", "report", "reports", "preliminary", "addendum", "wet", "read", "examination", "exam", "exams",
        "study", "chest", "thorax", "thoracic", "cxr", "radiograph", "radiographs", "radiography", "xray", "x",
        "ray", "rays", "film", "films", "pa", "ap", "lat", "lateral", "laterals", "frontal", "view", "views",
        "and", "of", "the", "with", "single", "one", "two", "three", "portable", "upright", "supine", "erect",
        "semi", "semierect", "sitting", "standing", "left", "right", "indication", "indications", "history",
        "comparison", "comparisons", "technique", "findings", "finding", "impression", "impressions",
        "clinical", "information", "reason", "for", "none", "na", "n", "a", "cr", "dx", "am", "pm",
    )
)
# fmt: on
_DEID = re.compile(r"^(?:_+|x{2,})$")


def is_content_free(text: str) -> bool:
    """True when every word of `text` is a `_TITLE_WORDS` word, a de-identification blank or a number."""
    for word in _WORD.findall(text.lower()):
        if word in _TITLE_WORDS or _DEID.match(word) or word.isdigit():
            continue
        return False
    return True


def _edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


@lru_cache(maxsize=4096)
def canonical_section(header: str) -> str:
    """Map a raw header (e.g. ``'FINDNGS'``) to its canonical lower-case section name (``'findings'``)."""
    name = _SPACES.sub(" ", header.strip().upper())
    if name in _KNOWN:
        return _KNOWN[name]
    squeezed = name.replace(" ", "")
    if "FINDING" in squeezed and "IMPRESSION" in squeezed:
        return "impression"
    # Misspellings: at most two edits from a training section name (FINDNGS, FIDNINGS, IMPRESION, IMPRRESSION).
    if _edit_distance(squeezed, "IMPRESSION") <= 2 or _edit_distance(squeezed, "IMPRESSIONS") <= 2:
        return "impression"
    if _edit_distance(squeezed, "FINDINGS") <= 2:
        return "findings"
    return name.lower().replace(" ", "_")


@dataclass(frozen=True)
class ParsedReport:
    """One report, sectioned. `text` is the SPEC section 1 training text ('' when the report is dropped)."""

    sections: dict[str, str] = field(default_factory=dict)
    section_used: str | None = None
    text: str = ""
    n_tokens: int = 0
    is_empty: bool = False
    has_addendum: bool = False


def _split_sections(body: str) -> tuple[dict[str, str], str]:
    """Sections of one report body, and the text before the first header (the preamble)."""
    sections: dict[str, str] = {}
    # In "\n" + body a match starts at the newline, whose index there is the header's line start in `body`;
    # its end is one past the colon's index in `body`. Same matches as `_HEADER.finditer(body)`.
    matches = list(_HEADER_AFTER_NEWLINE.finditer("\n" + body))
    preamble = body[: matches[0].start()] if matches else body
    for k, m in enumerate(matches):
        end = matches[k + 1].start() if k + 1 < len(matches) else len(body)
        name = canonical_section(m.group(1))
        content = body[m.end() - 1 : end].strip()
        if sections.get(name):
            # Repeated headers (e.g. two IMPRESSION blocks) are concatenated in reading order.
            if content:
                sections[name] = sections[name] + "\n" + content
        else:
            sections[name] = content
    return sections, preamble


def _last_paragraph(body: str) -> str:
    paragraphs = [p.strip() for p in _PARAGRAPH_SEP.split(body) if p.strip()]
    for p in reversed(paragraphs):
        # A paragraph that is only a header ("FINAL REPORT") carries no text.
        stripped = _HEADER.sub("", p).strip()
        if stripped and any(c.isalpha() for c in stripped):
            return p
    return ""


def clean_text(text: str) -> tuple[str, int]:
    """SPEC section 1 cleaning: sentences on numbered markers and '.', lower case, ASCII ``\\w+`` tokens, drop
    one-token sentences, join with single spaces. Returns (text, number of tokens)."""
    if text.isascii():  # the common case: tokens need no ASCII filtering, and lower-casing is byte-wise
        return _clean_ascii(text.encode("ascii"))
    out: list[str] = []
    n = 0
    text = text.replace("\n", " ").lower()
    if text.isascii():  # lower-casing can make text ASCII (the Kelvin sign becomes "k")
        return _clean_ascii(text.encode("ascii"))
    for point in _NUMBERED.split(text):
        for sentence in point.split("."):
            tokens = _WORD.findall(sentence)
            if len(tokens) <= 1:
                continue
            tokens = [t for t in (tok.encode("ascii", "ignore").decode("ascii") for tok in tokens) if t]
            if not tokens:
                continue
            out.append(" ".join(tokens))
            n += len(tokens)
    return " ".join(out), n


# For ASCII text ``\w`` is [0-9A-Za-z_]: with every other byte but '.' made a space, ``bytes.split()`` gives the
# ``\w+`` tokens of a sentence at half the cost of a regex per sentence (most reports are ASCII). The same
# table lower-cases (for ASCII, what ``str.lower`` does) and blanks newlines, in one pass over the bytes.
_WORD_BYTES = frozenset(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_.")
_ASCII_TOKENS = bytes((c + 32 if 65 <= c <= 90 else c) if c in _WORD_BYTES else 32 for c in range(256))
_NUMBERED_BYTES = re.compile(rb"[0-9]+\.")


def _clean_ascii(data: bytes) -> tuple[str, int]:
    """`clean_text` of ASCII text, as bytes."""
    out: list[bytes] = []
    n = 0
    words = data.translate(_ASCII_TOKENS)
    # A numbered marker ends a sentence like a full stop does, so both become one split on '.'; without any
    # '.' there is neither.
    sentences = _NUMBERED_BYTES.sub(b".", words).split(b".") if b"." in words else [words]
    for sentence in sentences:
        tokens = sentence.split()
        if len(tokens) > 1:
            out.append(b" ".join(tokens))
            n += len(tokens)
    return b" ".join(out).decode("ascii"), n


def parse_report(raw: str | None, min_tokens: int = 3) -> ParsedReport:
    """Section one report and build its training text.

    The training text is IMPRESSION then FINDINGS (either may be missing); with neither, the last paragraph,
    unless that is content-free (`CONTENT_FREE`). A result with fewer than `min_tokens` tokens, or a content-free
    one, gives ``text == ''`` (the caller drops the study).
    """
    used, text, n, is_empty, has_addendum, sections = parse_report_fields(raw, min_tokens)
    return ParsedReport(
        sections=sections,
        section_used=used,
        text=text,
        n_tokens=n,
        is_empty=is_empty,
        has_addendum=has_addendum,
    )


ReportFields = tuple[str | None, str, int, bool, bool, dict[str, str]]
"""`ParsedReport`'s fields as a tuple: (section_used, text, n_tokens, is_empty, has_addendum, sections)."""


def parse_report_fields(raw: str | None, min_tokens: int = 3) -> ReportFields:
    """`parse_report` as a plain tuple (`ReportFields`): what the workers of a MIMIC-size build call 228k times,
    where building the frozen dataclass cost as much as a tenth of the parse."""
    if raw is None or not raw.strip():
        return None, "", 0, True, False, {}
    body = raw.replace("\r\n", "\n").replace("\r", "\n")
    parts = _ADDENDUM_SEP.split(body) if _ADDENDUM_MARK in body else [body]
    has_addendum = len(parts) > 1
    # Addenda come first; the original report is the last block. Its sections win; an addendum fills only
    # what the original lacks.
    sections: dict[str, str] = {}
    main_sections, _ = _split_sections(parts[-1])
    sections.update(main_sections)
    if has_addendum:
        addendum = "\n".join(p.strip() for p in parts[:-1] if p.strip())
        if addendum:
            sections["addendum"] = addendum
        for part in parts[:-1]:
            add_sections, _ = _split_sections(part)
            for name in ("impression", "findings"):
                if not sections.get(name) and add_sections.get(name):
                    sections[name] = add_sections[name]
    impression = sections.get("impression", "")
    findings = sections.get("findings", "")
    if impression and findings:
        used: str | None = "impression+findings"
        source = impression + " " + findings
    elif impression:
        used, source = "impression", impression
    elif findings:
        used, source = "findings", findings
    else:
        last = _last_paragraph(parts[-1]) or _last_paragraph(body)
        if last:
            sections["last_paragraph"] = last
            used, source = "last_paragraph", _HEADER.sub(" ", last)
            if is_content_free(source):
                used = CONTENT_FREE
        else:
            used, source = None, ""
    text, n = clean_text(source)
    if n < min_tokens or used == CONTENT_FREE:
        text = ""
    return used, text, n, False, has_addendum, sections


def _parse_chunk(args: tuple[list[str | None], int]) -> list[tuple[str | None, str, int, bool, bool]]:
    texts, min_tokens = args
    out = []
    for raw in texts:
        out.append(parse_report_fields(raw, min_tokens)[:5])
    return out


def parse_reports(texts: list[str | None], min_tokens: int = 3, workers: int = 1, progress: bool = False):  # type: ignore[no-untyped-def]
    """Parse many reports; returns a polars frame with one row per input, in input order, with columns
    ``section_used, text, n_tokens, is_empty, has_addendum``. Uses a process pool when ``workers > 1`` and the
    input is large enough to pay for it."""
    import polars as pl

    from medst.archive.parallel import map_chunks

    chunk = 5000
    pieces = [(texts[i : i + chunk], min_tokens) for i in range(0, len(texts), chunk)]
    # A pool pays for its start-up only on a large input.
    rows = map_chunks(
        _parse_chunk,
        pieces,
        workers if len(texts) > 4 * chunk else 1,
        total=len(texts),
        progress=progress,
        desc="reports",
        unit="report",
    )
    return pl.DataFrame(
        rows,
        schema={
            "section_used": pl.String,
            "text": pl.String,
            "n_tokens": pl.Int64,
            "is_empty": pl.Boolean,
            "has_addendum": pl.Boolean,
        },
        orient="row",
    )
