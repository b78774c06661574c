"""Reading the ``time`` column of a ``--table`` archive: the forms public archives write, and nothing guessed.

Understood without options (the first that matches wins):
- DICOM DA ``YYYYMMDD`` and DT ``YYYYMMDDHH[MM[SS[.F{1,6}]]]`` with an optional ``+HHMM``/``-HHMM`` offset
  (PadChest's ``StudyDate_DICOM``), also as a number written with a trailing ``.0``;
- ISO 8601 (``2020-01-25``, ``2020-01-25 10:30``, ``2020-01-25T10:30:00.5Z``);
- English month names: ``January 25, 2020``, ``Jan 25 2020``, ``25 January 2020``, ``25-Jan-2020``
  (covid-chestxray's ``date``), optionally followed by ``HH:MM[:SS]``.
Times with an offset are converted to UTC and stored without it (only the order inside a patient matters).

Numeric dates with slashes or dots (``03/04/2020``) are day-first in Europe and month-first in the USA, and
nothing in the value says which: a column holding one is refused with a `UserInputError` asking for
``--time-format`` (``%d/%m/%Y`` or ``%m/%d/%Y``). A year alone (``2020``) is too coarse to order studies and is
not a time. ``--time-format`` (a ``strptime`` pattern) is tried before every rule above.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

import polars as pl

from medst.errors import UserInputError

_DICOM = re.compile(r"^(\d{8})(\d{2})?(\d{2})?(\d{2})?(\.\d{1,6})?([+-]\d{4})?$")
_AMBIGUOUS = re.compile(r"^\d{1,2}[/.]\d{1,2}[/.]\d{2,4}\b")
_CLOCK = re.compile(r"^(.*?)[ T,]+(\d{1,2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)$")
_MONTH_FORMATS = (
    "%B %d %Y",
    "%b %d %Y",
    "%d %B %Y",
    "%d %b %Y",
    "%Y %B %d",
    "%Y %b %d",
)


def _naive_utc(value: datetime) -> datetime:
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


def _dicom(text: str) -> datetime | None:
    m = _DICOM.match(text.removesuffix(".0") if len(text) == 10 else text)
    if not m:
        return None
    date, hh, mm, ss, frac, offset = m.groups()
    if frac and not ss:
        return None
    stamp = date + (hh or "00") + (mm or "00") + (ss or "00") + (frac or ".0") + (offset or "+0000")
    try:
        return _naive_utc(datetime.strptime(stamp, "%Y%m%d%H%M%S.%f%z"))
    except ValueError:
        return None


def _month_name(text: str) -> datetime | None:
    clock = ""
    m = _CLOCK.match(text)
    if m:
        text, clock = m.group(1), m.group(2)
    words = re.sub(r"[,\-/]", " ", text).replace(".", " ").split()
    if not words or not any(w.isalpha() for w in words):
        return None
    # "Sept" is common in hand-written tables; strptime knows only "Sep".
    joined = " ".join("Sep" if w.lower() == "sept" else w for w in words)
    for fmt in _MONTH_FORMATS:
        try:
            day = datetime.strptime(joined, fmt)
        except ValueError:
            continue
        if not clock:
            return day
        parts = [float(p) for p in clock.split(":")]
        h, mi, s = [*parts, 0.0, 0.0][:3]
        if h >= 24 or mi >= 60 or s >= 60:
            return None
        return day.replace(hour=int(h), minute=int(mi), second=int(s), microsecond=round((s % 1) * 1e6))
    return None


def parse_time(value: str | None, time_format: str | None = None) -> datetime | None:
    """One table value as a naive datetime, or None when it is empty or not understood (see the module)."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if time_format:
        try:
            return _naive_utc(datetime.strptime(text, time_format))
        except ValueError:
            pass
    if text[:1].isdigit():
        found = _dicom(text)
        if found is not None:
            return found
        if re.match(r"^\d{4}-\d{2}", text):
            try:
                return _naive_utc(datetime.fromisoformat(text.replace("Z", "+00:00")))
            except ValueError:
                pass
    return _month_name(text)


def parse_time_column(
    values: pl.Series, time_format: str | None = None, column: str = "time"
) -> pl.Series:
    """`parse_time` over a string series (once per distinct value), as a ``Datetime("us")`` series of the same
    length; null where a value is empty or not understood.

    Raises `UserInputError` when, without `time_format`, a value is a numeric date whose day/month order is
    ambiguous (``03/04/2020``): guessing would silently reorder studies."""
    distinct = values.drop_nulls().unique().to_list()
    if time_format is None:
        ambiguous = sorted(v for v in distinct if _AMBIGUOUS.match(v.strip()))
        if ambiguous:
            raise UserInputError(
                f"time column '{column}' holds numeric dates like {ambiguous[0]!r} whose day/month order is "
                "ambiguous; give --time-format '%d/%m/%Y' (day first) or '%m/%d/%Y' (month first)"
            )
    table = pl.DataFrame(
        {"_v": distinct, "_t": [parse_time(v, time_format) for v in distinct]},
        schema={"_v": pl.String, "_t": pl.Datetime("us")},
    )
    frame = pl.DataFrame({"_v": values.cast(pl.String)})
    return frame.join(table, on="_v", how="left", maintain_order="left").get_column("_t")
