"""Reader for the MIMIC-CXR releases: the DICOM release (``cxr-record-list``, ``files/.../*.dcm`` and the
``sNNN.txt`` reports beside them) and the JPG release (``mimic-cxr-2.0.0-metadata``, ``files/.../*.jpg``, reports
from ``--reports``).

Tables are the first source of truth; DICOM headers are read (in parallel) for images no metadata row
describes, or for all with ``read_headers='always'``. When the image tree exists, tables and disk are
reconciled: a listed file that is missing and a file no table lists both become rejects.
Image paths in the output are relative to the archive root (``files/p10/p10000032/s5.../<dicom_id>.dcm``).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from medst.archive.headers import scan_headers
from medst.archive.report_files import ReportParsing, read_reports, walk_tree
from medst.archive.source import SourceData, conform, reject_frame
from medst.archive.study_time import study_datetime
from medst.archive.tables import ROW_INDEX, blank_to_null, find_table, int_id, read_table
from medst.errors import UserInputError
from medst.schemas.build import BuildConfig
from medst.schemas.records import FINDINGS

RECORD_LIST = "cxr-record-list.csv"
STUDY_LIST = "cxr-study-list.csv"
METADATA = "mimic-cxr-2.0.0-metadata.csv"
SPLIT = "mimic-cxr-2.0.0-split.csv"
CHEXPERT = "mimic-cxr-2.0.0-chexpert.csv"
_PATH_IDS = r"p(\d+)/s(\d+)/([^/]+)\.(?:dcm|jpg)$"


def is_mimic_archive(root: Path) -> bool:
    """True when `root` looks like a MIMIC-CXR release (its tables or its ``files/`` tree)."""
    return (
        find_table(root, RECORD_LIST) is not None
        or find_table(root, METADATA) is not None
        or (root / "files").is_dir()
    )


def _first_lines(path: Path, n: int = 2) -> str:
    """The first `n` lines of a (possibly gzipped) text table, '' when unreadable."""
    import gzip

    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8", errors="replace") as fh:  # type: ignore[operator]
            return "".join(fh.readline() for _ in range(n))
    except OSError:
        return ""


def _valid_ids(df: pl.DataFrame, table: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split a table with dicom_id/subject_id/study_id into (good rows, reject rows for malformed ids and
    duplicate dicom_ids)."""
    df = blank_to_null(df, ["dicom_id"]).with_columns(int_id("subject_id"), int_id("study_id"))
    bad = pl.col("dicom_id").is_null() | pl.col("subject_id").is_null() | pl.col("study_id").is_null()
    rejects = [
        reject_frame(
            df.filter(bad),
            pl.lit(f"{table.name} row ") + pl.col(ROW_INDEX).cast(pl.String),
            "row",
            "malformed_row",
            pl.lit(f"{table.name}: missing or non-numeric dicom_id/subject_id/study_id"),
        )
    ]
    good = df.filter(~bad)
    # Every occurrence of a dicom_id after its first (a window over 377k groups took a second; this is linear).
    dup = good.select(~pl.col("dicom_id").is_first_distinct()).to_series()
    rejects.append(
        reject_frame(
            good.filter(dup),
            pl.lit(f"{table.name} row ") + pl.col(ROW_INDEX).cast(pl.String),
            "row",
            "duplicate_row",
            pl.lit(f"{table.name}: dicom_id listed twice; the first row is kept: ") + pl.col("dicom_id"),
        )
    )
    return good.filter(~dup), pl.concat(rejects)


def read_mimic(config: BuildConfig, progress: bool = True) -> SourceData:
    """Read a MIMIC-CXR DICOM or JPG release rooted at ``config.archive``."""
    root = config.archive
    files_dir = root / "files"
    record_p = find_table(root, RECORD_LIST)
    meta_p = find_table(root, METADATA)
    rejects: list[pl.DataFrame] = []
    warnings: list[str] = []

    report_rel: list[str] = []
    disk_images: list[str] = []
    if files_dir.is_dir() and config.check_files != "never":
        report_rel, others = walk_tree(files_dir)
        disk_images = ["files/" + p for p in others if p.endswith((".dcm", ".jpg"))]
    n_dcm = sum(1 for p in disk_images if p.endswith(".dcm"))
    if disk_images:
        jpg = n_dcm == 0
    elif record_p is not None:
        # Metadata-only: the record list's paths say which release this is.
        jpg = _first_lines(record_p).rstrip().endswith(".jpg")
    else:
        jpg = config.reports is not None
    ext = ".jpg" if jpg else ".dcm"
    disk_images = [p for p in disk_images if p.endswith(ext)]
    checked = config.check_files == "always" or (config.check_files == "auto" and len(disk_images) > 0)
    if config.check_files == "always" and not files_dir.is_dir():
        raise UserInputError(f"{files_dir} not found: --check-files always needs the image tree")

    # Report files are read and parsed in worker processes while this process reads the tables below; when
    # DICOM headers may be read (step 3, in workers of its own) the parse starts after them instead.
    report_files: tuple[Path, list[str], str] | None = None
    if config.reports is not None and config.reports.is_dir():
        report_files = (config.reports, walk_tree(config.reports)[0], "")
    elif config.reports is None:
        report_files = (files_dir, report_rel, "files/")
    headers_may_be_read = checked and not jpg and config.read_headers != "never"
    parsing: ReportParsing | None = None
    if report_files is not None and report_files[1] and not headers_may_be_read:
        parsing = ReportParsing(report_files[0], report_files[1], config.min_tokens, config.workers, progress)

    # 1. What the tables list.
    listed_parts = []
    if record_p is not None:
        rec = read_table(record_p, ["subject_id", "study_id", "dicom_id"], "record list")
        rec, rej = _valid_ids(rec, record_p)
        rejects.append(rej)
        cols = [pl.col("subject_id"), pl.col("study_id"), pl.col("dicom_id")]
        if "path" in rec.columns:
            cols.append(pl.col("path").str.strip_chars().alias("path_listed"))
        listed_parts.append(rec.select(*cols, pl.col(ROW_INDEX).alias("input_order")))
    meta = None
    if meta_p is not None:
        meta = read_table(meta_p, ["dicom_id", "subject_id", "study_id"], "metadata CSV")
        meta, rej = _valid_ids(meta, meta_p)
        rejects.append(rej)
        renames = {
            "ViewPosition": "view_position",
            "ViewCodeSequence_CodeMeaning": "view_code_meaning",
            "PerformedProcedureStepDescription": "procedure_description",
            "Rows": "rows",
            "Columns": "columns",
            "StudyDate": "study_date",
            "StudyTime": "study_time",
        }
        meta = meta.rename({k: v for k, v in renames.items() if k in meta.columns})
        meta = blank_to_null(meta, [v for v in renames.values() if v in meta.columns])
        meta = meta.with_columns(pl.lit(True).alias("has_meta"))
        listed_parts.append(
            meta.select("subject_id", "study_id", "dicom_id", pl.col(ROW_INDEX).alias("input_order"))
        )
    if not listed_parts and not disk_images:
        raise UserInputError(
            f"{root} has neither {RECORD_LIST}(.gz), {METADATA}(.gz) nor image files under files/; "
            "point ARCHIVE at a MIMIC-CXR release, or describe your archive with --table"
        )

    unrecognised = 0
    if listed_parts:
        # First row per dicom_id, in order (what unique(keep="first", maintain_order=True) gives, at a fraction
        # of its cost on 750k rows).
        listed = pl.concat(listed_parts, how="diagonal").filter(pl.col("dicom_id").is_first_distinct())
        derived = (
            pl.lit("files/p")
            + pl.col("subject_id").str.slice(0, 2)
            + pl.lit("/p")
            + pl.col("subject_id")
            + pl.lit("/s")
            + pl.col("study_id")
            + pl.lit("/")
            + pl.col("dicom_id")
            + pl.lit(ext)
        )
        if "path_listed" in listed.columns:
            p = pl.col("path_listed")
            if jpg:
                p = p.str.replace(r"\.dcm$", ".jpg")
            path = pl.coalesce(p, derived)
        else:
            path = derived
        listed = listed.with_columns(path.alias("path")).select(
            "subject_id", "study_id", "dicom_id", "path", "input_order"
        )
        if meta is not None:
            meta_cols = [c for c in meta.columns if c not in ("subject_id", "study_id", ROW_INDEX)]
            listed = listed.join(
                meta.select(*meta_cols, pl.col(ROW_INDEX).alias("_meta_order")),
                on="dicom_id",
                how="left",
                maintain_order="left",
            )
            # "Table order" (used by --compat reference) is the metadata CSV's row order, as the authors read it.
            listed = listed.with_columns(
                pl.coalesce(
                    pl.col("_meta_order").cast(pl.Int64), pl.col("input_order").cast(pl.Int64) + 10**9
                ).alias("input_order")
            ).drop("_meta_order")
    else:
        # No tables: the tree itself lists the images; ids come from the path.
        listed = pl.DataFrame({"path": disk_images}).with_columns(
            pl.col("path").str.extract(_PATH_IDS, 1).alias("subject_id"),
            pl.col("path").str.extract(_PATH_IDS, 2).alias("study_id"),
            pl.col("path").str.extract(_PATH_IDS, 3).alias("dicom_id"),
            pl.int_range(1, pl.len() + 1).alias("input_order"),
        )
        odd = listed.filter(pl.col("dicom_id").is_null())
        unrecognised = odd.height
        odd_paths = set(odd.get_column("path").to_list())
        disk_images = [p for p in disk_images if p not in odd_paths]  # already rejected, not "unlisted" too
        rejects.append(
            reject_frame(
                odd,
                pl.col("path"),
                "image",
                "unrecognised_path",
                pl.lit("not at files/pXX/pNNNNNNNN/sNNNNNNNN/<dicom_id>") + pl.lit(ext),
            )
        )
        listed = listed.filter(pl.col("dicom_id").is_not_null())
        warnings.append("no record list or metadata CSV: images found on disk, ids taken from their paths")
    if "has_meta" not in listed.columns:
        listed = listed.with_columns(pl.lit(None, pl.Boolean).alias("has_meta"))
    image_inputs = listed.height + unrecognised

    # 2. Reconcile with disk.
    if checked:
        on_disk = pl.DataFrame({"path": disk_images}, schema={"path": pl.String})
        missing = listed.join(on_disk, on="path", how="anti")
        rejects.append(
            reject_frame(
                missing,
                pl.col("dicom_id"),
                "image",
                "missing_file",
                pl.lit("listed in the tables but not on disk: ") + pl.col("path"),
            )
        )
        unlisted = on_disk.join(listed.select("path"), on="path", how="anti")
        rejects.append(
            reject_frame(
                unlisted,
                pl.col("path"),
                "image",
                "unlisted_file",
                pl.lit("image file on disk that no table lists"),
            )
        )
        image_inputs += unlisted.height
        listed = listed.join(missing.select("dicom_id"), on="dicom_id", how="anti")
    elif listed.height:
        warnings.append("image files not checked (no image tree under files/): a metadata-only build")

    # 3. Headers where tables leave gaps (or everywhere).
    if checked and not jpg and config.read_headers != "never":  # JPG files have no header to read
        need = listed if config.read_headers == "always" else listed.filter(pl.col("has_meta").is_null())
        if need.height:
            heads = scan_headers(
                [str(root / p) for p in need.get_column("path").to_list()],
                workers=config.workers,
                progress=progress,
            )
            heads = heads.with_columns(pl.Series("path", need.get_column("path")))
            bad = heads.filter(pl.col("error").is_not_null()).join(need.select("path", "dicom_id"), on="path")
            rejects.append(
                reject_frame(bad, pl.col("dicom_id"), "image", "", pl.col("error_message")).with_columns(
                    bad.get_column("error").alias("reason")
                )
            )
            heads = heads.filter(pl.col("error").is_null()).drop(
                "file", "error", "error_message", "patient_id", "study_uid", "sop_uid"
            )
            listed = listed.join(bad.select("dicom_id"), on="dicom_id", how="anti")
            listed = listed.join(heads, on="path", how="left", suffix="_h", maintain_order="left")
            for c in [c for c in heads.columns if c != "path"]:
                if c + "_h" in listed.columns:
                    listed = listed.with_columns(
                        pl.coalesce(pl.col(c).cast(heads.schema[c], strict=False), pl.col(c + "_h")).alias(c)
                    ).drop(c + "_h")
    for c in ("study_date", "study_time"):
        if c not in listed.columns:
            listed = listed.with_columns(pl.lit(None, pl.String).alias(c))
    listed = listed.with_columns(study_datetime("study_date", "study_time").alias("study_datetime"))

    # 4. Reports, labels, official split.
    if report_files is not None and report_files[1] and parsing is None:
        parsing = ReportParsing(report_files[0], report_files[1], config.min_tokens, config.workers, progress)
    reports: pl.DataFrame | None = None
    if config.reports is not None and report_files is None:
        reports = read_reports(config.reports)
    missing_reports = 0
    study_p = find_table(root, STUDY_LIST)
    if report_files is not None and report_files[2] == "files/" and report_rel and study_p is not None:
        # The study list names every report; one it names that is not on disk is a report input, rejected.
        listed_reports = read_table(study_p, ["path"], "study list").select(pl.col("path").str.strip_chars())
        on_disk = pl.DataFrame({"path": ["files/" + r for r in report_rel]}, schema={"path": pl.String})
        gone = listed_reports.filter(pl.col("path").str.ends_with(".txt")).join(
            on_disk, on="path", how="anti"
        )
        rejects.append(
            reject_frame(
                gone,
                pl.col("path"),
                "report",
                "missing_file",
                pl.lit("listed in the study list but not on disk"),
            )
        )
        missing_reports = gone.height
    labels = None
    chex_p = find_table(root, CHEXPERT)
    if chex_p is not None:
        chex = read_table(chex_p, ["study_id"], "chexpert labels")
        present = [f for f in FINDINGS if f in chex.columns]
        labels = (
            chex.with_columns(int_id("study_id"))
            .filter(pl.col("study_id").is_not_null())
            .select("study_id", *[pl.col(f).cast(pl.Float64, strict=False) for f in present])
            .filter(pl.col("study_id").is_first_distinct())
        )
    splits = None
    split_p = find_table(root, SPLIT)
    if split_p is not None:
        splits = read_table(split_p, ["dicom_id", "split"], "official split").select(
            pl.col("dicom_id").str.strip_chars(), pl.col("split").str.strip_chars().str.to_lowercase()
        )
    return SourceData(
        kind="mimic-cxr-jpg" if jpg else "mimic-cxr",
        image_root=root.resolve(),
        images=conform(listed),
        rejects=rejects,
        reports=reports,
        report_files=report_files,
        report_parsing=parsing,
        labels=labels,
        splits=splits,
        image_inputs=image_inputs,
        report_inputs=missing_reports
        + (reports.height if reports is not None else len(report_files[1]) if report_files else 0),
        warnings=warnings,
        checked_files=checked,
        files_found={"images": len(disk_images), "reports": len(report_rel)},
    )
