"""Writing a build: the four manifests, build_report.json and build_report.md (+ PNG plots), atomically.

Manifests (Parquet, zstd, rows in a fixed order so a re-run gives identical bytes):
- ``images.parquet``: `ImageRecord` columns, the accepted images (those of kept studies).
- ``studies.parquet``: `StudyRecord` columns, one row per time step in (subject_id, time) order. ``labels`` is a
  struct of the 14 CheXpert findings (1.0 / 0.0 / -1.0 / null; all null when the archive has no labels). In
  ``--compat reference`` mode a row is one frontal image and its ``study_id`` is ``<study_id>#<k>``.
- ``sequences.parquet``: `SequenceRecord` columns; ``sequence_id`` is ``<subject_id>-<window:04d>``.
- ``rejects.parquet``: `RejectRecord` columns, sorted.
``build_report.json`` holds ``image_root`` (the absolute folder that ``frontal_path``/``lateral_path`` and
``images.parquet`` paths are relative to), ``medst_version``, ``options``, counts and the accounting.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import polars as pl
from pydantic import BaseModel

from medst._version import __version__
from medst.archive.manifests import check_archive, detect_manifest, load_manifest
from medst.archive.source import SourceData
from medst.schemas.build import Accounting, BuildConfig, BuildSummary
from medst.schemas.records import ImageRecord, RejectRecord, SequenceRecord, StudyRecord

COMMAND = "build-sequences"
# What a build of an older medst (before output markers) left in its folder.
LEGACY_MARKERS = ("build_report.json",)
_STUDY_COLUMNS = list(StudyRecord.model_fields)
_IMAGE_COLUMNS = list(ImageRecord.model_fields)


def build_paths(config: BuildConfig) -> tuple[list[Path | None], list[Path | None]]:
    """(inputs, roots) of a build for `medst.outputs`: OUT may be none of them and hold none of them, and may
    not lie inside an input. Roots are folders files are only looked up in: the image root (``--image-root /``
    is fine) and, for a generic table, the archive folder (``medst build-sequences . --table t.csv -o seq``)."""
    archive = config.archive if isinstance(config.archive, Path) else None  # a URL cannot overlap OUT
    table = config.table
    if table is not None and not table.is_absolute() and not table.exists() and archive is not None:
        table = archive / table  # as the generic reader finds it
    inputs = [config.reports, table, config.split_file]
    roots = [config.image_root]
    (roots if config.table is not None else inputs).append(archive)
    return inputs, roots


def _counts(df: pl.DataFrame, column: str) -> dict[str, int]:
    if df.height == 0:
        return {}
    rows = df.group_by(column).len().sort(column).iter_rows()
    return {str(k): int(n) for k, n in rows}


def _options(config: BuildConfig) -> dict[str, Any]:
    return json.loads(config.model_dump_json())


def _literal_values(annotation: Any) -> list[str] | None:
    args = get_args(annotation)
    if get_origin(annotation) is Literal:
        return [str(a) for a in args]
    for a in args:  # Optional[Literal[...]]
        if get_origin(a) is Literal:
            return [str(x) for x in get_args(a)]
    return None


def validate_frame(df: pl.DataFrame, model: type[BaseModel], sample: int = 200) -> None:
    """Check that every row of `df` satisfies `model`: exactly its columns, no null in a required field, every
    value of a Literal field in its allowed set (all vectorised over every row), and full Pydantic validation of
    an evenly spaced sample of rows (all rows of small tables). Raises AssertionError on a violation: a bug, not
    a user error."""
    fields = model.model_fields
    assert list(df.columns) == list(fields), (model.__name__, df.columns)
    for name, info in fields.items():
        col = df.get_column(name)
        nullable = info.default is None or type(None) in get_args(info.annotation)
        if not nullable and info.is_required():
            assert col.null_count() == 0, f"{model.__name__}.{name} has nulls"
        allowed = _literal_values(info.annotation)
        if allowed is not None:
            bad = col.drop_nulls().cast(pl.String).is_in(allowed).not_().sum()
            assert bad == 0, f"{model.__name__}.{name} has values outside {allowed}"
    if df.height:
        step = max(1, df.height // sample)
        for row in df.gather_every(step).iter_rows(named=True):
            model(**row)


def write_outputs(
    config: BuildConfig,
    src: SourceData,
    images: pl.DataFrame,
    steps: pl.DataFrame,
    seqs: pl.DataFrame,
    rejects: pl.DataFrame,
    warnings: list[str],
    lateral_only: int = 0,
    extra: dict[str, Any] | None = None,
    archive: Path | None = None,
) -> BuildSummary:
    """Write everything into a staging folder inside ``config.out`` (claimed for build-sequences, see
    `medst.outputs`), then swap the files into place; a failure leaves the previous outputs untouched and nothing
    outside ``config.out`` is ever moved or deleted. `extra` goes into build_report.json as is (report encodings,
    values not understood, the low-yield verdict). ``archive``: the local folder the archive was read from, when
    ``config.archive`` is its URL (checked against the data manifest there)."""
    from medst.outputs import claim_output_dir

    out = config.out.resolve()
    inputs, roots = build_paths(config)
    claimed = claim_output_dir(out, COMMAND, inputs=inputs, roots=roots, legacy_markers=LEGACY_MARKERS)
    with claimed.replacing() as tmp:
        summary = _write_into(
            tmp, config, src, images, steps, seqs, rejects, warnings, lateral_only, extra, archive
        )
    return summary.model_copy(update={"out": out})


def _write_into(
    tmp: Path,
    config: BuildConfig,
    src: SourceData,
    images: pl.DataFrame,
    steps: pl.DataFrame,
    seqs: pl.DataFrame,
    rejects: pl.DataFrame,
    warnings: list[str],
    lateral_only: int,
    extra: dict[str, Any] | None = None,
    archive: Path | None = None,
) -> BuildSummary:
    from medst.sequences.report import write_markdown

    images_out = images.sort(["subject_id", "study_id", "dicom_id"]).select(_IMAGE_COLUMNS)
    studies_out = steps.sort(["subject_id", "order"]).select(_STUDY_COLUMNS)
    seq_out = seqs.sort(["subject_id", "window"]).select(
        (pl.col("subject_id") + pl.lit("-") + pl.col("window").cast(pl.String).str.zfill(4)).alias(
            "sequence_id"
        ),
        "subject_id",
        "split",
        "study_ids",
        "day_offsets",
    )
    rejects_out = rejects.unique(maintain_order=True).sort(["item_kind", "reason", "item", "message"])
    for df, model in (
        (images_out, ImageRecord),
        (studies_out, StudyRecord),
        (seq_out, SequenceRecord),
        (rejects_out, RejectRecord),
    ):
        validate_frame(df, model)
    report, summary = _report(
        config, src, images_out, studies_out, seq_out, rejects_out, steps, warnings, lateral_only, extra, archive
    )
    # The manifests are written on a thread of their own while this one draws the report: polars lets go of the
    # GIL while it encodes and compresses (on one core), and matplotlib is pure Python, so the two overlap on two
    # cores. All counting is done before, so that this thread needs no polars worker while the writer runs.
    # Each file's bytes are the same whatever runs beside it.
    manifests = _ManifestWriter(
        tmp,
        (("images", images_out), ("studies", studies_out), ("sequences", seq_out), ("rejects", rejects_out)),
    )
    try:
        (tmp / "build_report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        write_markdown(tmp, report)
    finally:
        manifests.join()
    return summary


class _ManifestWriter:
    """The manifests being written as ``NAME.parquet`` into a folder on a thread; `join` waits and re-raises
    what the writing raised."""

    def __init__(self, folder: Path, frames: tuple[tuple[str, pl.DataFrame], ...]) -> None:
        import threading

        self._error: BaseException | None = None

        def run() -> None:
            try:
                for name, df in frames:
                    df.write_parquet(folder / f"{name}.parquet", compression="zstd", statistics=False)
            except BaseException as err:  # re-raised by `join`, in the caller's thread
                self._error = err

        self._thread = threading.Thread(target=run, name="medst-manifests", daemon=True)
        self._thread.start()

    def join(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error


def _report(
    config: BuildConfig,
    src: SourceData,
    images_out: pl.DataFrame,
    studies_out: pl.DataFrame,
    seq_out: pl.DataFrame,
    rejects_out: pl.DataFrame,
    steps: pl.DataFrame,
    warnings: list[str],
    lateral_only: int,
    extra: dict[str, Any] | None,
    archive: Path | None = None,
) -> tuple[dict[str, Any], BuildSummary]:
    """build_report.json's dict (counts, the check against the data manifest) and the summary. ``archive``: the
    local mirror of a URL archive (see `write_outputs`)."""
    root = archive if archive is not None else config.archive
    assert isinstance(root, Path), "a URL archive is read from its local mirror"
    out = config.out.resolve()
    rej_images = rejects_out.filter(pl.col("item_kind") == "image").height
    rej_reports = rejects_out.filter(pl.col("item_kind") == "report").height
    reports_used = steps.select("base_study_id").n_unique() if steps.height else 0
    image_acc = Accounting(inputs=src.image_inputs, accepted=images_out.height, rejected=rej_images)
    report_acc = Accounting(inputs=src.report_inputs, accepted=reports_used, rejected=rej_reports)
    for what, acc in (("images", image_acc), ("reports", report_acc)):
        if acc.inputs != acc.accepted + acc.rejected:
            warnings.append(
                f"accounting_mismatch: {what} inputs {acc.inputs} != accepted {acc.accepted} "
                f"+ rejected {acc.rejected}"
            )

    found = {
        "images": src.image_inputs,
        "studies": src.images.select("study_id").n_unique(),
        "patients": src.images.select("subject_id").n_unique(),
        "reports": src.report_inputs,
    }
    manifest_name = config.manifest or detect_manifest(root, src.kind)
    manifest_diffs: list[str] = []
    if manifest_name is not None:
        try:
            manifest_diffs = check_archive(root, load_manifest(manifest_name), src.images, found)
        except KeyError as err:
            warnings.append(str(err))
    lateral = pl.col("lateral_dicom_id").is_not_null()
    view_availability = {
        "frontal+lateral": studies_out.filter(lateral).height,
        "frontal only": studies_out.filter(~lateral).height,
        # Studies dropped because they had only laterals (no frontal): the third bar of the plot.
        "lateral only (dropped)": lateral_only,
    }
    report: dict[str, Any] = {
        "medst_version": __version__,
        "image_root": str(src.image_root),
        "source": src.kind,
        "options": _options(config),
        "files_checked": src.checked_files,
        "counts": {
            "patients": studies_out.select("subject_id").n_unique(),
            "studies": studies_out.height,
            "sequences": seq_out.height,
            "images": images_out.height,
            "full_length_sequences": seq_out.filter(pl.col("study_ids").list.len() == config.seq_len).height,
        },
        "accounting": {
            "images": image_acc.model_dump(),
            "reports": report_acc.model_dump(),
            "table_rows_rejected": rejects_out.filter(pl.col("item_kind") == "row").height,
        },
        "rejects_by_reason": _counts(rejects_out, "reason"),
        "rejects_by_kind": _counts(
            rejects_out.with_columns((pl.col("item_kind") + pl.lit(" / ") + pl.col("reason")).alias("k")), "k"
        ),
        "section_used": _counts(studies_out, "section_used"),
        "view_availability": view_availability,
        "view_source": _counts(images_out, "view_source"),
        "splits_patients": _counts(studies_out.unique("subject_id"), "split"),
        "splits_studies": _counts(studies_out, "split"),
        "studies_per_patient": _counts(studies_out.group_by("subject_id").len().rename({"len": "n"}), "n"),
        "sequence_lengths": _counts(seq_out.with_columns(pl.col("study_ids").list.len().alias("n")), "n"),
        "manifest": manifest_name,
        "manifest_differences": manifest_diffs,
        "warnings": warnings,
        **(extra or {}),
    }
    return report, BuildSummary(
        out=out,
        source=src.kind,
        images=image_acc,
        reports=report_acc,
        patients=report["counts"]["patients"],
        studies=studies_out.height,
        sequences=seq_out.height,
        rejects_by_reason=report["rejects_by_reason"],
        warnings=warnings,
        manifest=manifest_name,
        manifest_differences=manifest_diffs,
    )
