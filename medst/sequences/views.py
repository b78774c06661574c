"""Normalising the view of each image: frontal / lateral / other / unknown, and what decided it.

Decision order (the first that gives an answer wins, recorded in ``view_source``):
1. ``tag``: the DICOM ViewPosition (or the MIMIC metadata column of the same name).
2. ``code_sequence``: the ViewCodeSequence code meaning (``postero-anterior``, ``antero-posterior``, ``lateral``,
   ``left lateral``, ...).
3. ``description``: PerformedProcedureStepDescription, then SeriesDescription, but only when it names a single
   kind of view (``CHEST (PORTABLE AP)`` -> frontal; ``CHEST (PA AND LAT)`` names both, so it decides nothing).
4. ``none``: view ``unknown``.
Generic tables use ``table`` (the user's view column, mapped with the same vocabulary).

Vocabulary choices (documented because MIMIC has rare values):
- frontal: PA, AP and their qualified forms (``AP SUPINE``, ``AP ERECT``, ``PA ERECT``, ``APS``, ``AP PORTABLE``).
- lateral: LATERAL, LL, RL, L, LAT, ``XTABLE LATERAL``, ``LEFT LATERAL``, ``RIGHT LATERAL``.
- other: obliques (LAO, RAO, LPO, RPO), SWIMMERS, decubitus (``AP LLD``, ``PA RLD``, ...), ``AP AXIAL``
  (an angled lordotic projection, not a standard frontal), and any other non-empty value (those are listed by
  value in the build report: `is_unmapped_view`).
- spelling (`normalise_view_value`): public archives write ``AP_horizontal``, ``AP horizontal``, ``AP-erect``,
  ``LARGE LATERAL``, ``latéral``; case, accents, underscores and hyphens between words do not matter, and
  ``nan`` / ``None`` / ``UNK`` / empty mean no value (the view is then ``unknown``, or decided by the next source).
The ``frontal_rank`` column (0 = PA, 1 = AP, 2 = frontal of unstated kind) orders frontal candidates.
All functions are vectorised: the mapping runs once per distinct value, then is joined back.
"""

from __future__ import annotations

import re

import polars as pl

_FRONTAL_EXACT = {
    "PA",
    "AP",
    "APS",
    "PAS",
    "FRONTAL",
    "POSTERO-ANTERIOR",
    "ANTERO-POSTERIOR",
    "POSTEROANTERIOR",
    "ANTEROPOSTERIOR",
    "POSTERO ANTERIOR",
    "ANTERO POSTERIOR",
}
_FRONTAL_QUALIFIERS = {
    "SUPINE",
    "ERECT",
    "UPRIGHT",
    "PORTABLE",
    "SEMI",
    "SEMI-ERECT",
    "SEMIERECT",
    "SITTING",
    "STANDING",
    "VIEW",
    "CHEST",
    "HORIZONTAL",
    "VERTICAL",
}
_LATERAL = {
    "LATERAL",
    "LL",
    "RL",
    "L",
    "LAT",
    "XTABLE LATERAL",
    "X-TABLE LATERAL",
    "LEFT LATERAL",
    "RIGHT LATERAL",
    "LATERAL LEFT",
    "LATERAL RIGHT",
    "LLAT",
    "RLAT",
    "LARGE LATERAL",
    "X TABLE LATERAL",
    "CROSS TABLE LATERAL",
    "LATERAL VIEW",
}
_OTHER_HINTS = ("LAO", "RAO", "LPO", "RPO", "OBLIQUE", "SWIMMER", "LLD", "RLD", "DECUB", "AXIAL", "LORDOTIC")


_EMPTY_VALUES = {"", "NAN", "NONE", "NULL", "NA", "N/A", "UNK", "UNKNOWN", "-", "?"}
"""Placeholders a table writes for "no view" (pandas writes ``nan``): the view is unknown, not ``other``."""


def normalise_view_value(value: str | None) -> str | None:
    """A view value as the vocabulary spells it: accents dropped (``latéral`` -> ``LATERAL``), upper case,
    underscores and hyphens between words as spaces (``AP_horizontal``, ``AP-erect``), spaces collapsed; None for
    empty values and `_EMPTY_VALUES`."""
    if value is None:
        return None
    import unicodedata

    v = unicodedata.normalize("NFKD", value)
    v = "".join(c for c in v if not unicodedata.combining(c)).upper()
    v = re.sub(r"[\s_]+", " ", v).strip()
    if v in _EMPTY_VALUES:
        return None
    return re.sub(r"(?<=[A-Z])-(?=[A-Z])", " ", v) if v not in _FRONTAL_EXACT else v


def _frontal_kind(value: str) -> int | None:
    """0 for PA, 1 for AP, 2 for frontal of unstated kind, None when not a frontal value."""
    v = re.sub(r"\s+", " ", value.strip().upper())
    if any(h in v for h in _OTHER_HINTS):
        return None
    if v in _FRONTAL_EXACT:
        return 0 if v.startswith(("PA", "POSTERO")) else 1 if v.startswith(("AP", "ANTERO")) else 2
    words = v.replace("(", " ").replace(")", " ").split(" ")
    words = [w for w in words if w]
    if words and words[0] in {"PA", "AP"} and all(w in _FRONTAL_QUALIFIERS for w in words[1:]):
        return 0 if words[0] == "PA" else 1
    return None


def classify_position(value: str | None) -> tuple[str | None, int | None]:
    """Map a ViewPosition-like value to (view, frontal_rank); (None, None) when empty."""
    v = normalise_view_value(value)
    if v is None:
        return None, None
    rank = _frontal_kind(v)
    if rank is not None:
        return "frontal", rank
    if v in _LATERAL:
        return "lateral", None
    return "other", None


def is_unmapped_view(value: str | None) -> bool:
    """True for a non-empty view value that the vocabulary does not know (it maps to ``other`` by default, not
    because it names an oblique or decubitus view): the build report lists these by value."""
    v = normalise_view_value(value)
    if v is None or classify_position(value)[0] != "other":
        return False
    return not any(h in v for h in _OTHER_HINTS)


def classify_code_meaning(value: str | None) -> tuple[str | None, int | None]:
    """Map a ViewCodeSequence code meaning (e.g. ``postero-anterior``, ``left lateral``) to (view, rank)."""
    if value is None or not value.strip():
        return None, None
    v = value.strip().lower()
    if "oblique" in v or "decubitus" in v or "axial" in v:
        return "other", None
    if "lateral" in v:
        return "lateral", None
    if "postero-anterior" in v or "posteroanterior" in v or "postero anterior" in v:
        return "frontal", 0
    if "antero-posterior" in v or "anteroposterior" in v or "antero posterior" in v:
        return "frontal", 1
    return "other", None


_DESC_FRONTAL = re.compile(r"\b(PA|AP|FRONTAL|APS)\b")
_DESC_LATERAL = re.compile(r"\b(LAT|LATERAL|LL)\b")


def classify_description(value: str | None) -> tuple[str | None, int | None]:
    """Map a procedure/series description to (view, rank) only when it names exactly one kind of view."""
    if value is None or not value.strip():
        return None, None
    v = value.upper()
    f = _DESC_FRONTAL.findall(v)
    lat = _DESC_LATERAL.search(v) is not None
    if f and not lat:
        kinds = set(f)
        rank = 0 if kinds == {"PA"} else 1 if kinds <= {"AP", "APS"} else 2
        return "frontal", rank
    if lat and not f:
        return "lateral", None
    return None, None


def _mapped(df: pl.DataFrame, column: str, fn, prefix: str) -> pl.DataFrame:  # type: ignore[no-untyped-def]
    """Join columns `{prefix}_view`, `{prefix}_rank` computed by `fn` once per distinct value of `column`."""
    values = df.get_column(column).unique().to_list()
    table = pl.DataFrame(
        {
            column: values,
            f"{prefix}_view": [fn(v)[0] for v in values],
            f"{prefix}_rank": [fn(v)[1] for v in values],
        },
        schema={column: pl.String, f"{prefix}_view": pl.String, f"{prefix}_rank": pl.Int8},
    )
    return df.join(table, on=column, how="left", nulls_equal=True, maintain_order="left")


def add_views(df: pl.DataFrame, table_source: bool = False) -> pl.DataFrame:
    """Add ``view``, ``view_source`` and ``frontal_rank`` to an images frame.

    Reads the optional string columns ``view_position``, ``view_code_meaning``, ``procedure_description`` and
    ``series_description`` (missing columns count as empty). With ``table_source`` the first source is called
    ``table`` (a user's view column) instead of ``tag``.
    """
    cols = ("view_position", "view_code_meaning", "procedure_description", "series_description")
    work = df.with_columns([pl.lit(None, pl.String).alias(c) for c in cols if c not in df.columns])
    work = _mapped(work, "view_position", classify_position, "_t")
    work = _mapped(work, "view_code_meaning", classify_code_meaning, "_c")
    work = _mapped(work, "procedure_description", classify_description, "_p")
    work = _mapped(work, "series_description", classify_description, "_s")
    first = "table" if table_source else "tag"
    view = pl.coalesce("_t_view", "_c_view", "_p_view", "_s_view", pl.lit("unknown"))
    source = (
        pl.when(pl.col("_t_view").is_not_null())
        .then(pl.lit(first))
        .when(pl.col("_c_view").is_not_null())
        .then(pl.lit("code_sequence"))
        .when(pl.col("_p_view").is_not_null() | pl.col("_s_view").is_not_null())
        .then(pl.lit("description"))
        .otherwise(pl.lit("none"))
    )
    rank = (
        pl.when(pl.col("_t_view").is_not_null())
        .then(pl.col("_t_rank"))
        .when(pl.col("_c_view").is_not_null())
        .then(pl.col("_c_rank"))
        .when(pl.col("_p_view").is_not_null())
        .then(pl.col("_p_rank"))
        .otherwise(pl.col("_s_rank"))
    )
    work = work.with_columns(
        view.alias("view"), source.alias("view_source"), rank.fill_null(2).alias("frontal_rank")
    )
    drop = [c for c in work.columns if c.startswith(("_t_", "_c_", "_p_", "_s_"))]
    drop += [c for c in cols if c not in df.columns]
    return work.drop(drop)


def is_chest(body_part: str | None) -> bool:
    """True when BodyPartExamined is empty or names the chest (CHEST, THORAX, LUNG, ...)."""
    if body_part is None or not body_part.strip():
        return True
    v = body_part.strip().upper()
    return any(k in v for k in ("CHEST", "THORAX", "LUNG", "TORSO", "THORACIC", "CXR", "PORT CHEST"))


def non_chest_mask(df: pl.DataFrame) -> pl.Series:
    """Boolean series: True where the ``body_part`` column is present and not chest."""
    if "body_part" not in df.columns:
        return pl.Series([False] * df.height)
    values = df.get_column("body_part").unique().to_list()
    bad = [v for v in values if not is_chest(v)]
    return df.get_column("body_part").is_in(bad).fill_null(False)


#: ``--compat reference``: the authors' preprocessing keeps exactly these ViewPosition values (``isin`` on the
#: metadata column), nothing from the code sequence or the descriptions.
REFERENCE_FRONTAL = {"PA": 0, "AP": 1}
REFERENCE_LATERAL = ("LATERAL", "LL")


def add_reference_views(df: pl.DataFrame, table_source: bool = False) -> pl.DataFrame:
    """``add_views`` as the authors' code decides views: from ViewPosition alone (SPEC §6).

    An image is frontal only when ViewPosition is exactly ``PA`` or ``AP`` and lateral only when it is exactly
    ``LATERAL`` or ``LL``; any other value is ``other``, and a blank ViewPosition is ``unknown`` with
    ``view_source`` ``none`` even where the code sequence or a description names the view. A user's view column
    (``table_source``) is still read with the full vocabulary, since it is their own spelling of the view; it just
    gets no fallback either.
    """
    work = (
        df
        if "view_position" in df.columns
        else df.with_columns(pl.lit(None, pl.String).alias("view_position"))
    )
    if table_source:
        work = _mapped(work, "view_position", classify_position, "_t")
    else:
        value = pl.col("view_position").str.strip_chars()
        work = work.with_columns(
            pl.when(value.is_in(list(REFERENCE_FRONTAL)))
            .then(pl.lit("frontal"))
            .when(value.is_in(list(REFERENCE_LATERAL)))
            .then(pl.lit("lateral"))
            .when(value.fill_null("") != "")
            .then(pl.lit("other"))
            .alias("_t_view"),
            value.replace_strict(REFERENCE_FRONTAL, default=None, return_dtype=pl.Int8).alias("_t_rank"),
        )
    work = work.with_columns(
        pl.col("_t_view").fill_null("unknown").alias("view"),
        pl.when(pl.col("_t_view").is_not_null())
        .then(pl.lit("table" if table_source else "tag"))
        .otherwise(pl.lit("none"))
        .alias("view_source"),
        pl.col("_t_rank").fill_null(2).alias("frontal_rank"),
    )
    drop = [c for c in work.columns if c.startswith("_t_")]
    if "view_position" not in df.columns:
        drop.append("view_position")
    return work.drop(drop)
