"""Did a build keep enough to be what the user meant? One line that says what was lost and the likely cause.

A build that keeps no study, or fewer than ``config.min_kept`` of its input images, is almost always a wrong
option (a forgotten ``--image-root``, a time column in an unread format, no usable view column, reports not
found), not a bad archive. `low_yield` names the cause from the reject counts: the reason that removed the most
images, with an example value and the option to look at.
"""

from __future__ import annotations

import polars as pl

from medst.archive.source import SourceData
from medst.schemas.build import BuildConfig

_LOST_IMAGES = ("image", "row")


def _example(rejects: pl.DataFrame, reason: str) -> str:
    first = rejects.filter(pl.col("reason") == reason).sort("item").head(1)
    return first.get_column("message").item() if first.height else ""


def _hint(reason: str, n: int, src: SourceData, rejects: pl.DataFrame, images: pl.DataFrame) -> str:
    if reason == "missing_file":
        return (
            f"{n} images missing on disk under {src.image_root} ({_example(rejects, reason)}) "
            "— check --image-root"
        )
    if reason == "unparsed_time":
        values = list(src.unparsed_values.get("time", {}))[:3]
        shown = ", ".join(repr(v) for v in values)
        return f"{n} rows rejected for unparsed time (e.g. {shown}) — try --time-format"
    if reason in ("missing_time", "missing_study_date"):
        return f"{n} images have no time — check the time column (--columns time=... or day_offset=...)"
    if reason == "study_without_frontal":
        views = images.get_column("view").value_counts().sort("view").iter_rows() if images.height else []
        seen = ", ".join(f"{v} {c}" for v, c in views)
        return (
            f"{n} images are in studies without a frontal image (views found: {seen or 'none'}) — give the "
            "view column with --columns view=... (unmapped values are listed in build_report.md)"
        )
    if reason == "study_without_report":
        return f"{n} images are in studies without a report — check --reports or the report column"
    if reason == "study_report_dropped":
        by = rejects.filter(pl.col("item_kind") == "report").get_column("reason").value_counts(sort=True)
        top = ", ".join(f"{r} {c}" for r, c in by.head(3).iter_rows())
        return f"{n} images are in studies whose report has no usable text ({top}) — see rejects.parquet"
    if reason == "non_chest":
        return f"{n} images are not chest images — --keep-non-chest keeps them"
    return f"most images were rejected as '{reason}' ({n}) — see build_report.md"


def low_yield(
    config: BuildConfig,
    src: SourceData,
    images_kept: int,
    studies_kept: int,
    rejects: pl.DataFrame,
    images: pl.DataFrame,
) -> str | None:
    """None when the build kept at least one study and at least ``config.min_kept`` of its input images;
    otherwise one line: what was kept and the likely cause. `images` is the images frame after view
    normalisation (for the view counts of the hint)."""
    inputs = src.image_inputs
    share = images_kept / inputs if inputs else 0.0
    if studies_kept > 0 and share >= config.min_kept:
        return None
    if inputs == 0:
        return "the archive lists no image — check ARCHIVE and --table"
    lost = rejects.filter(pl.col("item_kind").is_in(_LOST_IMAGES))
    head = (
        f"{images_kept} of {inputs} images kept ({studies_kept} studies)"
        if studies_kept == 0
        else f"only {images_kept} of {inputs} images kept ({share:.1%} < --min-kept {config.min_kept:g}, "
        f"{studies_kept} studies)"
    )
    if lost.height == 0:
        return f"{head} — see build_report.md"
    counts = lost.group_by("reason").len().sort(["len", "reason"], descending=[True, False])
    reason, n = counts.row(0)
    return f"{head}: {_hint(str(reason), int(n), src, rejects, images)}"
