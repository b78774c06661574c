"""`medst synth`: write a synthetic MIMIC-CXR-shaped archive (layout, CSVs, reports, DICOM/JPG pixels, truth).

Output layout (`OUT`):

- ``release="dicom"``: ``OUT/files/pXX/pXXXXXXXX/sXXXXXXXX/<dicom_id>.dcm`` and the reports
  ``OUT/files/pXX/pXXXXXXXX/sXXXXXXXX.txt``; the five CSVs (``cxr-record-list``, ``cxr-study-list``,
  ``mimic-cxr-2.0.0-metadata``, ``-split``, ``-chexpert``, all ``.csv.gz``) at ``OUT``.
- ``release="jpg"``: the MIMIC-CXR-JPG tree ``OUT/files/.../<dicom_id>.jpg`` (no reports in it) with the same five
  CSVs at ``OUT``; the reports go to ``OUT/reports/files/.../sXXXXXXXX.txt`` (like ``mimic-cxr-reports.zip``).
- ``release="both"``: the DICOM release at ``OUT`` as above, and the JPG release at ``OUT/jpg/`` (its own CSVs).
  In a JPG release, ``cxr-study-list`` paths are relative to the folder holding the reports.
- Always: ``OUT/synth_truth.parquet`` (see `medst.synth.tables`), ``OUT/synth.json`` (options, medst version,
  counts); with pixels ``OUT/preview.png``; with ``benchmarks=True`` ``OUT/benchmarks/`` (see
  `medst.synth.benchmarks`).

Everything depends only on the options, never on the number of workers or the engine they run on
(`medst.executors`: in-process, local worker processes, or Ray): the same options give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np
import polars as pl

from medst._version import __version__
from medst.errors import UserInputError
from medst.executors import run_jobs, use_engine
from medst.outputs import OutputDir, claim_output_dir
from medst.progress import progress as show_progress
from medst.schemas.synth import SynthConfig, SynthSummary
from medst.synth import dicom_writer, tables
from medst.synth.phantom import render_row
from medst.synth.reports import compose
from medst.synth.trajectories import Plan, build_plan

_MARKER_FILE = "synth.json"
T = TypeVar("T")
R = TypeVar("R")


def _check_out(config: SynthConfig) -> OutputDir:
    """Claim OUT for synth (`medst.outputs`: never a foreign folder or a file) and refuse an archive made with
    other options (a re-run rewrites the same bytes; other options would leave stale files behind)."""
    out = Path(config.out)
    fingerprint = hashlib.sha256(json.dumps(_options(config), sort_keys=True).encode()).hexdigest()[:16]
    claimed = claim_output_dir(out, "synth", fingerprint=fingerprint, legacy_markers=(_MARKER_FILE,))
    previous_fp = (claimed.previous or {}).get("fingerprint")
    marker = out / _MARKER_FILE
    try:
        previous = json.loads(marker.read_text()).get("options") if marker.exists() else None
    except (OSError, ValueError):
        previous = None
    if (previous is not None and previous != _options(config)) or previous_fp not in (None, fingerprint):
        raise UserInputError(
            f"output folder {out} holds a synth archive made with other options ({previous}); "
            "give a new folder or delete it"
        )
    return claimed


def _options(config: SynthConfig) -> dict[str, Any]:
    """The options that decide the archive's bytes (not where it goes, not how many workers or which engine
    make it)."""
    return config.model_dump(mode="json", exclude={"out", "workers", "engine", "ray_address"})


def joined_images(plan: Plan) -> pl.DataFrame:
    """One row per image with its study and patient fields (plan order: patient, study, slot)."""
    studies = plan.studies.with_row_index("study_number", offset=1).drop("subject_id", "split")
    patients = plan.patients.with_row_index("patient_number", offset=1).drop("anatomy_seed")
    return (
        plan.images.with_row_index("image_index")
        .join(studies, on="study_id", how="left")
        .join(patients, on="subject_id", how="left")
        .sort("image_index")
    )


def jpg_bytes(img: np.ndarray, bits: int, photometric: str) -> bytes:
    """MIMIC-CXR-JPG look from the stored values: min-max to 8 bit, MONOCHROME1 inverted, histogram-equalised,
    JPEG quality 95."""
    v = dicom_writer.stored_values(img, bits, photometric).astype(np.float32)
    if photometric == "MONOCHROME1":
        v = v.max() - v
    lo, hi = float(v.min()), float(v.max())
    u8 = np.rint((v - lo) / max(hi - lo, 1e-6) * 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", cv2.equalizeHist(u8), [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return buf.tobytes()


def _pixel_task(args: tuple[list[dict[str, Any]], str, int, str | None, str | None]) -> int:
    """Render, encode and write the images of a few patients; returns the number written."""
    rows, out, seed, dicom_root, jpg_root = args
    for row in rows:
        img = render_row(row)
        rel = f"files/p{str(row['subject_id'])[:2]}/p{row['subject_id']}/s{row['study_id']}/{row['dicom_id']}"
        if dicom_root is not None:
            path = Path(out) / dicom_root / f"{rel}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(dicom_writer.encode(img, row, seed))
        if jpg_root is not None:
            path = Path(out) / jpg_root / f"{rel}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(jpg_bytes(img, int(row["bits_stored"]), str(row["photometric"])))
    return len(rows)


def _chunks(rows: Sequence[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    """Consecutive runs of about `size` images that never split a patient."""
    cur: list[dict[str, Any]] = []
    for row in rows:
        if len(cur) >= size and row["subject_id"] != cur[-1]["subject_id"]:
            yield cur
            cur = []
        cur.append(row)
    if cur:
        yield cur


def write_file(path: str, data: bytes) -> None:
    """Write `data` to `path` with the fewest system calls (a MIMIC-scale run writes ~230k reports)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _report_task(
    args: tuple[list[dict[str, Any]], dict[int, dict[str, Any]], str],
) -> tuple[list[dict[str, float | None]], list[bool]]:
    """Compose and write the reports of a few patients; their CheXpert labels and whether each is non-empty."""
    rows, patients, root = args
    labels: list[dict[str, float | None]] = []
    has_report: list[bool] = []
    made: set[str] = set()
    for st in rows:
        text, lab = compose(st, patients[st["subject_id"]])
        sub = str(st["subject_id"])
        folder = os.path.join(root, "files", f"p{sub[:2]}", f"p{sub}")
        if folder not in made:
            os.makedirs(folder, exist_ok=True)
            made.add(folder)
        write_file(os.path.join(folder, f"s{st['study_id']}.txt"), text.encode())
        labels.append(lab)
        has_report.append(bool(text))
    return labels, has_report


def _run(
    fn: Callable[[T], R], tasks: list[T], workers: int, desc: str, on_result: Callable[[R], None]
) -> list[R]:
    """`fn` over `tasks` on the engine `generate` set (`medst.executors.run_jobs`); `on_result` sees each result
    as it comes, the list returned is in task order."""
    results: dict[int, R] = {}

    def keep(i: int, result: R) -> None:
        results[i] = result
        on_result(result)

    # spawn: forking a process that holds polars/OpenCV thread pools can deadlock.
    run_jobs(
        fn, tasks, workers, keep, names=[f"{desc} chunk {i}" for i in range(len(tasks))], context="spawn"
    )
    return [results[i] for i in range(len(tasks))]


def _write_reports(
    plan: Plan, root: Path, workers: int, progress: bool
) -> tuple[list[dict[str, float | None]], list[bool]]:
    patients = {r["subject_id"]: r for r in plan.patients.iter_rows(named=True)}
    rows = plan.studies.to_dicts()
    tasks = []
    for chunk in _chunks(rows, 2000):
        mine = {r["subject_id"] for r in chunk}
        tasks.append((chunk, {k: patients[k] for k in mine}, str(root)))
    labels: list[dict[str, float | None]] = []
    has_report: list[bool] = []
    with show_progress(total=len(rows), desc="reports", unit="study", enabled=progress) as bar:
        done = _run(_report_task, tasks, workers, "reports", lambda result: bar.update(len(result[0])))
    for lab, has in done:
        labels += lab
        has_report += has
    return labels, has_report


def _du(root: Path) -> int:
    total = 0
    for folder, _dirs, files in os.walk(root):
        total += sum(os.stat(os.path.join(folder, name)).st_size for name in files)
    return total


def generate(config: SynthConfig, progress: bool = True) -> SynthSummary:
    """Write the archive described by `config` (layout in the module docstring) and say what was written."""
    t0 = time.perf_counter()
    out = Path(config.out)
    # One engine for the whole archive, connected once (Ray) and checked before OUT is touched: a wrong
    # --engine/--ray-address or a missing Ray leaves no folder behind.
    with use_engine(config.engine, config.ray_address, config.workers):
        claimed = _check_out(config)
        plan = build_plan(config.patients, config.seed, config.image_size)
        summary = _generate(config, out, plan, progress, t0)
    claimed.finish()
    return summary


def _generate(config: SynthConfig, out: Path, plan: Plan, progress: bool, t0: float) -> SynthSummary:
    dicom_root = "." if config.release in ("dicom", "both") else None
    jpg_root = {"dicom": None, "jpg": ".", "both": "jpg"}[config.release]
    report_root = out if dicom_root is not None else out / "reports"
    labels, has_report = _write_reports(plan, report_root, config.workers, progress)
    chexpert = tables.chexpert_frame(plan.studies, labels, has_report)
    images = joined_images(plan)
    rel = tables.rel_dir(pl.col("subject_id"), pl.col("study_id")) + "/" + pl.col("dicom_id")
    images = images.with_columns(
        (rel + ".dcm").alias("path") if dicom_root else pl.lit(None, pl.Utf8).alias("path"),
        ((pl.lit("jpg/") if jpg_root == "jpg" else pl.lit("")) + rel + ".jpg").alias("jpg_path")
        if jpg_root
        else pl.lit(None, pl.Utf8).alias("jpg_path"),
    )
    paths: dict[str, Path] = {"truth": out / "synth_truth.parquet", "reports": report_root / "files"}
    for root_name, ext, key in ((dicom_root, "dcm", "dicom_release"), (jpg_root, "jpg", "jpg_release")):
        if root_name is None:
            continue
        root = out / root_name
        for name, df in tables.release_tables(images, plan.studies, chexpert, ext).items():
            tables.write_csv_gz(df, root / name)
        paths[key] = out if root_name == "." else root
    tables.write_parquet(tables.truth_frame(images), out / "synth_truth.parquet")

    if not config.metadata_only:
        rows = images.to_dicts()
        tasks = [(chunk, str(out), config.seed, dicom_root, jpg_root) for chunk in _chunks(rows, 24)]
        with show_progress(total=len(rows), desc="images", unit="img", enabled=progress) as bar:
            _run(_pixel_task, tasks, config.workers, "images", bar.update)
        from medst.synth.preview import write_preview

        paths["preview"] = write_preview(images, plan.studies, report_root, out / "preview.png")
    if config.benchmarks:
        from medst.synth.benchmarks import write_benchmarks

        paths["benchmarks"] = write_benchmarks(config, plan, images, out / "benchmarks", progress)
    manifest = {
        "medst_version": __version__,
        "options": _options(config),
        "patients": plan.patients.height,
        "studies": plan.studies.height,
        "images": plan.images.height,
        "reports": int(sum(has_report)),
        "dicom_release": dicom_root is not None,
        "jpg_release": None if jpg_root is None else jpg_root,
    }
    (out / _MARKER_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return SynthSummary(
        out=out,
        patients=plan.patients.height,
        studies=plan.studies.height,
        images=plan.images.height,
        reports=int(sum(has_report)),
        bytes=_du(out),
        seconds=time.perf_counter() - t0,
        paths=paths,
    )
