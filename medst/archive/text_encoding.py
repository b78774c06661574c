"""Turning the bytes of a report file or a table into text, without guessing silently.

Order (the first that applies wins):
1. a byte-order mark: UTF-8 (``EF BB BF``), UTF-32 LE/BE (checked before UTF-16, whose LE mark is a prefix of
   UTF-32 LE's), UTF-16 LE/BE;
2. UTF-16 without a mark, recognised by its NUL-byte pattern (text in Latin script has a NUL in every other byte);
3. UTF-8 (strict);
4. the declared fallback, `FALLBACK_ENCODING` (Windows-1252, which is Latin-1 plus curly quotes and dashes in
   ``80``-``9F``; the five bytes it leaves undefined are read as Latin-1). The build report counts how many reports
   needed it.

Text that decodes but is not text (a NUL, or more than 1% control characters: an image or a PDF saved under a
report's name) is refused: `decode_text` returns None and the build rejects the report as ``undecodable_report``
instead of training on replacement characters.
"""

from __future__ import annotations

import codecs
import re

FALLBACK_ENCODING = "cp1252"
"""The declared fallback for bytes that are neither marked Unicode, UTF-16 nor UTF-8."""

MAX_CONTROL_SHARE = 0.01
"""Share of control characters (other than tab, newline, carriage return, form feed) above which decoded text is
taken for binary data."""

_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# C0 and C1 controls except tab, newline, form feed and carriage return.
_CONTROL = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")
_PRINTABLE_ASCII = bytes([9, 10, 12, 13, *range(32, 127)])


def _bomless_utf16(data: bytes) -> str | None:
    """``utf-16-le`` / ``utf-16-be`` when the first 4 kB look like UTF-16 text without a mark, else None.

    Latin-script UTF-16 has a NUL as the high byte of almost every code unit; UTF-8 and single-byte text have no
    NUL at all. Requiring NULs in at least 40% of one byte position and almost none in the other keeps binary
    files (NULs anywhere) out."""
    head = data[:4096]
    if b"\x00" not in head:
        return None
    if len(head) < 4 or len(head) % 2:
        head = head[: len(head) - len(head) % 2]
        if len(head) < 4:
            return None
    pairs = len(head) // 2
    even = head[0::2].count(0)
    odd = head[1::2].count(0)
    if odd >= 0.4 * pairs and even <= 0.02 * pairs:
        return "utf-16-le"
    if even >= 0.4 * pairs and odd <= 0.02 * pairs:
        return "utf-16-be"
    return None


def looks_binary(text: str) -> bool:
    """True when `text` holds a NUL or more than `MAX_CONTROL_SHARE` control characters."""
    if "\x00" in text:
        return True
    if text.isascii():
        # Most reports: count control bytes with one C-level translate (a regex scan is many times slower).
        controls = len(text.encode("ascii").translate(None, _PRINTABLE_ASCII))
    else:
        controls = len(_CONTROL.findall(text))
    return controls > MAX_CONTROL_SHARE * len(text)


def decode_bytes(data: bytes) -> tuple[str, str]:
    """Decode `data` by the order of the module docstring; returns (text, encoding used). Never fails: the last
    resort maps every byte. Whether the result is text at all is `looks_binary`'s call."""
    for bom, enc in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(enc), enc
            except UnicodeDecodeError:
                break  # a mark followed by garbage: fall through to the other rules
    utf16 = _bomless_utf16(data)
    if utf16 is not None:
        try:
            return data.decode(utf16), utf16
        except UnicodeDecodeError:
            pass
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        return data.decode(FALLBACK_ENCODING), FALLBACK_ENCODING
    except UnicodeDecodeError:
        # cp1252 leaves 81, 8D, 8F, 90, 9D undefined; Latin-1 reads them as the C1 controls they are there.
        return data.decode("latin-1"), FALLBACK_ENCODING


def decode_text(data: bytes) -> tuple[str | None, str]:
    """Decode a report file: (text, encoding used), or (None, encoding) when the bytes are not text."""
    text, enc = decode_bytes(data)
    if looks_binary(text):
        return None, enc
    return text, enc


def is_fallback(encoding: str) -> bool:
    """True when `encoding` (as returned above) is the declared fallback, not a Unicode encoding."""
    return encoding == FALLBACK_ENCODING
