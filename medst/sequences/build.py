"""`build_sequences`: archive -> images / studies / sequences / rejects manifests and a build report.

Pipeline (all polars frame operations; per-row Python only for report parsing and header reading):
read the source -> normalise views -> drop non-chest and undated images -> parse reports -> keep studies with a
frontal image and a usable report -> choose images per study -> order in time, day offsets -> patient splits ->
windows. Every input image and report ends in exactly one of accepted (a kept study) or rejected (a reject row
with its reason); the report states that identity. Output is written to a staging folder inside OUT and
renamed into place (`medst.outputs`); the same inputs and options give byte-identical files.

``--compat reference`` differs in three places only, each as the authors' preprocessing does: views come from
ViewPosition alone (``PA``/``AP`` frontal, ``LATERAL``/``LL`` lateral; no code-sequence or description fallback,
see `views.add_reference_views`), time steps are frontal images (see `studies`), and a report without IMPRESSION
or FINDINGS is dropped (reason ``no_impression_or_findings``) instead of falling back to its last paragraph.

Report rejects of their own (both modes): ``undecodable_report`` (bytes that are not text in any encoding of
`medst.archive.text_encoding`), ``report_too_large``; in clean mode ``content_free_report`` (no impression or
findings, and a last paragraph of only headers, ``___`` blanks and exam-title words; reference mode calls it
``no_impression_or_findings``, as it calls every report without those sections). The build report counts the
reports read with the declared fallback encoding, the time values not understood and the view values not mapped.

A build that keeps no study, or fewer than ``min_kept`` of its input images, still writes its outputs, and sets
``BuildSummary.low_yield`` to one line naming the likely cause (from the reject counts); the CLI exits 2 on it.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from medst.archive.readers import pick_reader
from medst.archive.report_files import BINARY, TOO_LARGE, UNDECODABLE, ReportParsing
from medst.archive.reports import CONTENT_FREE, parse_reports
from medst.archive.source import REJECT_COLUMNS, SourceData, reject_frame
from medst.archive.text_encoding import FALLBACK_ENCODING
from medst.errors import UserInputError
from medst.outputs import check_output_dir
from medst.schemas.build import BuildConfig, BuildSummary
from medst.schemas.records import FINDINGS
from medst.sequences.build_output import COMMAND, LEGACY_MARKERS, build_paths, write_outputs
from medst.sequences.splits import patient_splits, read_split_file
from medst.sequences.studies import choose_views
from medst.sequences.timeline import order_studies, windows
from medst.sequences.views import add_reference_views, add_views, is_unmapped_view, non_chest_mask
from medst.sequences.yield_check import low_yield
from medst.storage import RemotePath


def read_source(config: BuildConfig, progress: bool = True) -> SourceData:
    """Read ``config.archive`` with the reader ``--reader`` names, else the first of
    `medst.archive.readers.READERS` that recognises it (a generic table when ``--table`` is given, else a MIMIC
    release)."""
    if not isinstance(config.archive, Path):
        raise UserInputError(f"{config.archive}: an archive URL is read by build_sequences, which mirrors it")
    if not config.archive.is_dir():
        raise UserInputError(f"archive folder {config.archive} not found (check ARCHIVE)")
    return pick_reader(config).read(config, progress)


def _exclude(
    images: pl.DataFrame,
    mask: pl.Expr | pl.Series,
    reason: str,
    message: pl.Expr | str,
    rejects: list[pl.DataFrame],
) -> pl.DataFrame:
    bad = images.filter(mask)
    rejects.append(reject_frame(bad, pl.col("dicom_id"), "image", reason, message))
    return images.filter(~mask)


def _reports_per_study(
    src: SourceData, config: BuildConfig, rejects: list[pl.DataFrame], progress: bool
) -> pl.DataFrame:
    """Parsed reports, one per study id (``study_id, report_item, text, section_used, ...``)."""
    schema = {
        "study_id": pl.String,
        "report_item": pl.String,
        "text": pl.String,
        "section_used": pl.String,
        "n_tokens": pl.Int64,
        "is_empty": pl.Boolean,
        "has_addendum": pl.Boolean,
        "encoding": pl.String,
    }
    if src.report_files is not None:
        folder, rels, prefix = src.report_files
        parsing = src.report_parsing or ReportParsing(folder, rels, config.min_tokens, config.workers, progress)
        parsed = parsing.result()
        parsed = parsed.with_columns((pl.lit(prefix) + pl.col("report_item")).alias("report_item"))
    elif src.reports is not None and src.reports.height:
        texts = src.reports.get_column("raw").to_list()
        encoding = pl.col("encoding") if "encoding" in src.reports.columns else pl.lit(None, pl.String)
        parsed = pl.concat(
            [
                src.reports.select("study_id", "report_item", encoding.alias("encoding")),
                parse_reports(texts, config.min_tokens, config.workers, progress),
            ],
            how="horizontal",
        )
        binary = pl.col("encoding") == BINARY
        parsed = parsed.with_columns(
            pl.when(binary).then(pl.lit(UNDECODABLE)).otherwise(pl.col("section_used")).alias("section_used"),
            pl.when(binary).then(pl.lit(False)).otherwise(pl.col("is_empty")).alias("is_empty"),
        )
    else:
        return pl.DataFrame(schema=schema)
    dup = parsed.select(~pl.col("study_id").is_first_distinct()).to_series()  # a window over() is far slower
    rejects.append(
        reject_frame(
            parsed.filter(dup),
            pl.col("report_item"),
            "report",
            "duplicate_report",
            pl.lit("a second report for study ") + pl.col("study_id") + pl.lit("; the first is kept"),
        )
    )
    parsed = parsed.filter(~dup).select(list(schema))
    if config.compat == "reference":
        # The authors train on IMPRESSION/FINDINGS only: a report that has neither is dropped, no fallback.
        parsed = parsed.with_columns(
            pl.when(pl.col("section_used") == "last_paragraph")
            .then(pl.lit(""))
            .otherwise(pl.col("text"))
            .alias("text")
        )
    return parsed


def _report_reason(min_tokens: int, compat: str = "clean") -> pl.Expr:
    content_free = "no_impression_or_findings" if compat == "reference" else "content_free_report"
    return (
        pl.when(pl.col("section_used") == TOO_LARGE)
        .then(pl.lit("report_too_large"))
        .when(pl.col("section_used") == UNDECODABLE)
        .then(pl.lit("undecodable_report"))
        .when(pl.col("section_used") == CONTENT_FREE)
        .then(pl.lit(content_free))
        .when(pl.col("is_empty"))
        .then(pl.lit("empty_report"))
        .when(pl.col("section_used").is_null())
        .then(pl.lit("no_report_text"))
        .when((pl.col("section_used") == "last_paragraph") & (pl.col("n_tokens") >= min_tokens))
        .then(pl.lit("no_impression_or_findings"))  # --compat reference only
        .otherwise(pl.lit("short_report"))
    )


def build_sequences(config: BuildConfig, progress: bool = True) -> BuildSummary:
    """Build the manifests of ``config.archive`` into ``config.out`` (see the module docstring).

    An archive URL is mirrored into a temporary folder first (`medst.archive.remote`: tables and reports fetched,
    images as sparse placeholders) and read from there; the manifests keep image paths relative to the archive
    and build_report.json records the URL as ``image_root``, where `medst shard` reads the images from."""
    # Before any work: an output folder that is not ours (or is the archive) is refused, not found out later.
    inputs, roots = build_paths(config)
    check_output_dir(config.out, COMMAND, inputs=inputs, roots=roots, legacy_markers=LEGACY_MARKERS)
    if isinstance(config.archive, RemotePath):
        from medst.archive.remote import staged_archive

        if config.table is not None:
            raise UserInputError(
                f"{config.archive}: a --table archive is read from a local folder; only MIMIC-shaped archives are "
                "read from a URL"
            )
        with staged_archive(config.archive, config.read_headers, config.check_files) as local:
            return _build(config.model_copy(update={"archive": local}), progress, recorded=config)
    return _build(config, progress, recorded=config)


def _build(config: BuildConfig, progress: bool, recorded: BuildConfig) -> BuildSummary:
    """The build of the local archive ``config.archive``; ``recorded`` is the config the user gave (the same, or
    the one naming the archive's URL), whose options and archive location the outputs record."""
    src = read_source(config, progress)
    if recorded.archive != config.archive:
        src.image_root = recorded.archive
    rejects: list[pl.DataFrame] = list(src.rejects)
    warnings = list(src.warnings)

    # Reference mode decides views from ViewPosition alone, as the authors do; clean mode keeps the fallbacks.
    view_rule = add_reference_views if config.compat == "reference" else add_views
    images = view_rule(src.images, table_source=src.view_from_table)
    viewed = images
    # Once per distinct value: MIMIC has 377k rows and a handful of spellings.
    distinct_views = images.get_column("view_position").drop_nulls().unique().to_list()
    unmapped_views = [v for v in distinct_views if is_unmapped_view(v)]
    unmapped = images.filter(pl.col("view_position").is_in(unmapped_views))
    if not config.keep_non_chest:
        images = _exclude(
            images,
            non_chest_mask(images),
            "non_chest",
            pl.lit("BodyPartExamined is not chest: ") + pl.col("body_part").fill_null(""),
            rejects,
        )
    # A study listed under several patients is a table error: no patient can be trusted with it.
    multi = (
        images.group_by("study_id").agg(pl.col("subject_id").n_unique().alias("_n")).filter(pl.col("_n") > 1)
    )
    images = _exclude(
        images,
        pl.col("study_id").is_in(multi.get_column("study_id").implode()),
        "study_with_several_patients",
        pl.lit("study ") + pl.col("study_id") + pl.lit(" is listed under more than one patient"),
        rejects,
    )
    if src.time_kind == "datetime":
        images = _exclude(
            images,
            pl.col("study_datetime").is_null(),
            "missing_study_date",
            "no valid StudyDate for this image",
            rejects,
        )

    # Reports: parse, then decide per study.
    reports = _reports_per_study(src, config, rejects, progress)
    encodings = reports.get_column("encoding").drop_nulls()
    study_ids = images.select("study_id").unique()
    orphan = reports.join(study_ids, on="study_id", how="anti")
    rejects.append(
        reject_frame(
            orphan,
            pl.col("report_item"),
            "report",
            "report_without_images",
            pl.lit("no usable image of study ") + pl.col("study_id") + pl.lit(" remains"),
        )
    )
    reports = reports.join(study_ids, on="study_id", how="semi")

    has_frontal = images.group_by("study_id").agg(
        (pl.col("view") == "frontal").any().alias("_has_frontal"),
        (pl.col("view") == "lateral").any().alias("_has_lateral"),
    )
    lateral_only = has_frontal.filter(~pl.col("_has_frontal") & pl.col("_has_lateral")).height
    status = has_frontal.join(reports, on="study_id", how="left")
    no_frontal = status.filter(~pl.col("_has_frontal"))
    rejects.append(
        reject_frame(
            no_frontal.filter(pl.col("report_item").is_not_null()),
            pl.col("report_item"),
            "report",
            "study_without_frontal",
            pl.lit("study ") + pl.col("study_id") + pl.lit(" has no frontal image"),
        )
    )
    images = _exclude(
        images,
        pl.col("study_id").is_in(no_frontal.get_column("study_id").implode()),
        "study_without_frontal",
        pl.lit("study ") + pl.col("study_id") + pl.lit(" has no frontal image"),
        rejects,
    )
    status = status.filter(pl.col("_has_frontal"))
    no_report = status.filter(pl.col("report_item").is_null()).get_column("study_id")
    images = _exclude(
        images,
        pl.col("study_id").is_in(no_report.implode()),
        "study_without_report",
        pl.lit("no report found for study ") + pl.col("study_id"),
        rejects,
    )
    dropped = status.filter(pl.col("report_item").is_not_null() & (pl.col("text") == ""))
    rejects.append(
        reject_frame(
            dropped,
            pl.col("report_item"),
            "report",
            "",
            pl.when(pl.col("section_used") == TOO_LARGE)
            .then(pl.lit("report file of study ") + pl.col("study_id") + pl.lit(" is over 1 MiB; not read"))
            .when(pl.col("section_used") == UNDECODABLE)
            .then(
                pl.lit("report file of study ")
                + pl.col("study_id")
                + pl.lit(" is not text (NUL bytes or control characters in every encoding tried)")
            )
            .when(pl.col("section_used") == CONTENT_FREE)
            .then(
                pl.lit("report of study ")
                + pl.col("study_id")
                + pl.lit(" has no impression or findings, only headers, blanks and exam-title words")
            )
            .otherwise(
                pl.lit("report of study ")
                + pl.col("study_id")
                + pl.lit(" gives fewer than ")
                + pl.lit(str(config.min_tokens))
                + pl.lit(" tokens of impression/findings text")
            ),
        ).with_columns(
            dropped.with_columns(_report_reason(config.min_tokens, config.compat).alias("reason")).get_column(
                "reason"
            )
        )
    )
    images = _exclude(
        images,
        pl.col("study_id").is_in(dropped.get_column("study_id").implode()),
        "study_report_dropped",
        pl.lit("the report of study ") + pl.col("study_id") + pl.lit(" has no usable text"),
        rejects,
    )
    kept_reports = status.filter(pl.col("text") != "").select(
        "study_id", "text", "section_used", "has_addendum"
    )

    # Studies -> time steps, order, splits, windows.
    steps = choose_views(images, config.compat)
    steps = steps.join(kept_reports, left_on="base_study_id", right_on="study_id", how="inner")
    time = "study_datetime" if src.time_kind == "datetime" else "study_day"
    # Ties (same instant): table order for reference rows, then the frontal's dicom_id; never the study id.
    steps = order_studies(steps, time, ["tiebreak_order", "frontal_dicom_id"])

    split_key, split_table = None, None
    if config.split_file is not None:
        split_key, split_table = read_split_file(config.split_file)
    elif src.splits is not None:
        split_key, split_table = "dicom_id", src.splits
    kept_images = images.join(
        steps.select(pl.col("base_study_id").alias("study_id")).unique(), on="study_id", how="semi"
    )
    splits, split_warnings = patient_splits(kept_images, split_key, split_table, config.split_fractions)
    warnings += split_warnings
    steps = steps.join(splits, on="subject_id", how="left")
    steps = _add_labels(steps, src.labels)
    seqs = windows(steps, config.seq_len, config.stride, config.min_len).join(
        splits, on="subject_id", how="left"
    )

    reject_df = pl.concat(
        [r.select(list(REJECT_COLUMNS)) for r in rejects if r.height] or [pl.DataFrame(schema=REJECT_COLUMNS)]
    )
    studies_kept = steps.select("base_study_id").n_unique() if steps.height else 0
    verdict = low_yield(config, src, kept_images.height, studies_kept, reject_df, viewed)
    extra = {
        "report_encodings": {str(k): int(n) for k, n in encodings.value_counts().sort("encoding").iter_rows()},
        "reports_with_fallback_encoding": int((encodings == FALLBACK_ENCODING).sum()),
        "fallback_encoding": FALLBACK_ENCODING,
        "unparsed_values": src.unparsed_values,
        "unmapped_views": {
            str(v): int(n)
            for v, n in unmapped.get_column("view_position")
            .value_counts(name="n")
            .sort(["n", "view_position"], descending=[True, False])
            .iter_rows()
        },
        "low_yield": verdict,
    }
    summary = write_outputs(
        recorded, src, kept_images, steps, seqs, reject_df, warnings, lateral_only, extra, config.archive
    )
    return summary.model_copy(update={"low_yield": verdict})


def _add_labels(steps: pl.DataFrame, labels: pl.DataFrame | None) -> pl.DataFrame:
    """``labels``: a struct of the 14 CheXpert findings (1.0 / 0.0 / -1.0 / null) joined by study."""
    if labels is not None:
        steps = steps.join(labels, left_on="base_study_id", right_on="study_id", how="left")
    fields = [
        (
            pl.col(f).cast(pl.Float64)
            if labels is not None and f in labels.columns
            else pl.lit(None, pl.Float64)
        ).alias(f)
        for f in FINDINGS
    ]
    steps = steps.with_columns(pl.struct(fields).alias("labels"))
    return steps.drop([f for f in FINDINGS if f in steps.columns])
