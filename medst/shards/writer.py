"""`medst shard`: patient timelines -> deterministic WebDataset tars, in parallel, resumable, atomic.

Per shard: samples built (decode, resize, encode) into a temporary tar `.{name}.tar.tmp-PID`, fsync, rename to
`{name}.tar`, then reject file and index entry. A shard counts as complete only once its index entry exists
(`medst.shards.format.is_complete`), so a killed run leaves at worst a temporary file (deleted on the next run) or a tar without an entry (rebuilt).
Samples are written as `medst.shards.format` lays them out (fixed member order, normalised headers): the same
inputs and options always give byte-identical tars.

Provenance: `plan.json` records the fingerprint of the input rows, the options, and the options of the build the
rows came from (``build``: T, stride, min_len, compat; `pretrain` takes its default T from there); a folder planned
from another input is refused (or, with ``force``, replaced), and shard files of the folder that the plan does not
name (leftovers of a larger earlier build) are deleted. A worker killed from outside has its shard built again once
(`medst.executors.run_jobs`), and a second death ends the run with an error naming the shard.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import tarfile
from collections import Counter
from pathlib import Path
from typing import Any

from medst._version import __version__
from medst.errors import UserInputError
from medst.executors import EngineChoice, run_jobs
from medst.outputs import claim_output_dir
from medst.schemas.records import RejectRecord
from medst.schemas.shards import BuildOptions, ShardConfig, ShardIndexEntry, ShardPlan, ShardSummary
from medst.storage import RemotePath, to_location

from . import index as shard_index
from .assign import PatientWork, ShardJob, assign_shards, pseudonym, select_part
from .format import add_members
from .samples import SampleOptions, build_sample

REQUIRED_COLUMNS = (
    "subject_id",
    "study_id",
    "day_offset",
    "split",
    "frontal_dicom_id",
    "frontal_path",
    "text",
)
REJECT_DIR = "rejects"


def _load_studies(config: ShardConfig) -> tuple[list[dict[str, Any]], Path | RemotePath]:
    """Rows of SEQ/studies.parquet and the image root (a folder, or the URL of an archive in object storage);
    UserInputError naming what to fix."""
    import polars as pl

    seq = config.seq
    studies_path = seq / "studies.parquet"
    if not studies_path.is_file():
        raise UserInputError(
            f"{studies_path} not found: point SEQ at a `medst build-sequences` output folder"
        )
    image_root: Path | RemotePath | None = config.image_root
    if image_root is None:
        report_path = seq / "build_report.json"
        if not report_path.is_file():
            raise UserInputError(f"{report_path} not found and no --image-root given")
        root = json.loads(report_path.read_text()).get("image_root")
        if not root:
            raise UserInputError(f"{report_path} has no 'image_root'; pass --image-root")
        image_root = to_location(root)
        if isinstance(image_root, Path) and not image_root.is_absolute():
            image_root = seq / root
    if isinstance(image_root, RemotePath):
        if image_root.info() is None:  # one request; a missing bucket or prefix is a UserInputError already
            raise UserInputError(f"image root {image_root}: no such archive; pass --image-root")
    elif not image_root.is_dir():
        raise UserInputError(f"image root {image_root} is not a folder; pass --image-root")
    df = pl.read_parquet(studies_path)
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise UserInputError(f"{studies_path} lacks column(s) {', '.join(missing)}")
    return df.to_dicts(), image_root


def build_options(seq: Path) -> BuildOptions | None:
    """The options of the `medst build-sequences` run that wrote `seq` (T, stride, min_len, compat, version), from
    its build_report.json; None when the folder has no readable report with them (a hand-made studies table)."""
    try:
        report = json.loads((seq / "build_report.json").read_text())
        options = report["options"]
        return BuildOptions(
            seq_len=options["seq_len"],
            stride=options["stride"],
            min_len=options["min_len"],
            compat=options["compat"],
            medst_version=report["medst_version"],
        )
    except (OSError, ValueError, KeyError, TypeError):  # pydantic's ValidationError is a ValueError
        return None


def plan_jobs(
    rows: list[dict[str, Any]], config: ShardConfig
) -> tuple[list[ShardJob], dict[str, list[dict[str, Any]]]]:
    """All shard jobs of the dataset (every part) and each patient key's study rows."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((str(row["split"]), str(row["subject_id"])), []).append(row)
    splits_of: dict[str, int] = {}
    for _split, subject in groups:
        splits_of[subject] = splits_of.get(subject, 0) + 1
    patients: list[PatientWork] = []
    by_key: dict[str, list[dict[str, Any]]] = {}
    for (split, subject), study_rows in groups.items():
        raw = subject if splits_of[subject] == 1 else f"{subject}\x1f{split}"
        key = pseudonym(config.key_salt, "patient", raw)
        images = sum(1 + bool(r.get("lateral_path")) for r in study_rows)
        patients.append(PatientWork(key, subject, split, images))
        by_key[key] = study_rows
    return assign_shards(patients, config.samples_per_shard), by_key


def _init_worker() -> None:
    """One thread per worker process: the parallelism is the processes. OpenCV would otherwise start a thread
    per core in every worker (its resize is multi-threaded), and N workers x N threads fight over N cores."""
    import cv2

    cv2.setNumThreads(1)


def input_fingerprint(rows: list[dict[str, Any]]) -> str:
    """sha256 of the input rows (every column of studies.parquet, in file order): a different manifest, or the
    same one after reports or paths changed, gives another fingerprint; the same rows written again give the same
    one. The image files themselves are not read."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row, sort_keys=True, default=str).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def _write_one(
    args: tuple[ShardJob, dict[str, list[dict[str, Any]]], SampleOptions, Path, dict[str, object], str],
) -> tuple[ShardIndexEntry, int]:
    """Build and write one shard (tar, rejects, index entry, in that order). Runs in a worker process."""
    job, rows_by_key, opts, out, options, fingerprint = args
    name = job.name
    tmp = out / f".{name}.tar.tmp-{os.getpid()}"
    lengths: list[int] = []
    rejects: list[RejectRecord] = []
    studies = frontal = lateral = fallbacks = 0
    with open(tmp, "wb") as fh:
        with tarfile.open(fileobj=fh, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for patient in job.patients:
                sample = build_sample(patient.key, job.split, rows_by_key[patient.key], opts)
                # Every per-image reason is kept, so that the user can find the bad files of a dropped patient.
                rejects.extend(sample.rejects)
                if not sample.studies:
                    rejects.append(
                        RejectRecord(
                            item=patient.key,
                            item_kind="patient",
                            stage="shard",
                            reason="no_decodable_study",
                            message="no study of this patient had a decodable frontal image",
                        )
                    )
                    continue
                add_members(tar, sample.members)
                lengths.append(sample.studies)
                studies += sample.studies
                frontal += sample.frontal
                lateral += sample.lateral
                fallbacks += sample.intensity_fallbacks
        fh.flush()
        os.fsync(fh.fileno())
    digest = hashlib.sha256()
    with open(tmp, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    size = tmp.stat().st_size
    os.replace(tmp, out / f"{name}.tar")
    _write_rejects(out / REJECT_DIR / f"{name}.parquet", rejects)
    entry = ShardIndexEntry(
        shard=f"{name}.tar",
        split=job.split,
        index=job.index,
        samples=len(lengths),
        studies=studies,
        images=frontal + lateral,
        frontal=frontal,
        lateral=lateral,
        bytes=size,
        sha256=digest.hexdigest(),
        timeline_lengths=lengths,
        medst_version=opts.medst_version,
        options=options,
        intensity_fallbacks=fallbacks,
        input_fingerprint=fingerprint,
    )
    shard_index.write_entry(out, entry)
    return entry, len(rejects)


def _reject_frame(rejects: list[RejectRecord]):  # type: ignore[no-untyped-def]
    import polars as pl

    cols = list(RejectRecord.model_fields)
    return pl.DataFrame([r.model_dump() for r in rejects], schema=dict.fromkeys(cols, pl.String))


def _write_rejects(path: Path, rejects: list[RejectRecord]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    _reject_frame(rejects).write_parquet(buf)
    shard_index.atomic_write_bytes(path, buf.getvalue())


def _merge_rejects(out: Path, names: list[str]) -> int:
    import polars as pl

    frames = [pl.read_parquet(p) for n in names if (p := out / REJECT_DIR / f"{n}.parquet").is_file()]
    merged = pl.concat(frames) if frames else _reject_frame([])
    buf = io.BytesIO()
    merged.write_parquet(buf)
    shard_index.atomic_write_bytes(out / "rejects.parquet", buf.getvalue())
    return merged.height


def _discard_partial(out: Path, name: str) -> None:
    """Delete temporary files of shard `name` left by a killed run, and a tar without an index entry."""
    for pattern in (
        f".{name}.tar.tmp-*",
        f"{shard_index.INDEX_DIR}/.{name}.json.tmp-*",
        f"{REJECT_DIR}/.{name}.parquet.tmp-*",
    ):
        for tmp in out.glob(pattern):
            tmp.unlink(missing_ok=True)
    (out / f"{name}.tar").unlink(missing_ok=True)


def _discard_stale_shared(out: Path) -> None:
    """Delete temporary summary/rejects files of killed runs (their writer pid is gone on this machine)."""
    for tmp in [*out.glob(".summary.*.tmp-*"), *out.glob(".rejects.parquet.tmp-*")]:
        try:
            os.kill(int(tmp.name.rsplit("-", 1)[1]), 0)
        except (ValueError, ProcessLookupError):
            tmp.unlink(missing_ok=True)
        except PermissionError:
            pass  # a live process of another user


def _check_provenance(out: Path, plan: ShardPlan, force: bool) -> None:
    """Refuse (unless `force`) a folder whose shards were planned from another input; then delete the shard files
    the plan does not name and those recorded from another input. Only files named like medst's shards are
    touched, and only inside `out`."""
    old: ShardPlan | None = None
    plan_path = out / shard_index.PLAN_FILE
    if plan_path.is_file():
        try:
            old = ShardPlan.model_validate_json(plan_path.read_bytes())
        except ValueError:
            old = None
    names = [p.stem for p in (out / shard_index.INDEX_DIR).glob("*.json")]
    has_shards = any(shard_index.SHARD_NAME.match(n) for n in names)
    if not force and old is not None and old.input_fingerprint != plan.input_fingerprint:
        raise UserInputError(
            f"{out} holds shards of another input (planned from different studies.parquet rows); "
            "pass --force to replace them, or choose another -o"
        )
    if not force and old is None and has_shards:
        raise UserInputError(
            f"{out} holds shards without a readable {shard_index.PLAN_FILE} (another tool or an older medst); "
            "pass --force to replace them, or choose another -o"
        )
    wanted = set(plan.shards)
    for folder, suffix in (
        (out, ".tar"),
        (out / shard_index.INDEX_DIR, ".json"),
        (out / REJECT_DIR, ".parquet"),
    ):
        for path in folder.glob(f"*{suffix}"):
            name = path.name[: -len(suffix)]
            if shard_index.SHARD_NAME.match(name) and name not in wanted:
                path.unlink(missing_ok=True)
    for name in plan.shards:
        path = shard_index.entry_path(out, name)
        if not path.is_file():
            continue
        try:
            recorded = ShardIndexEntry.model_validate_json(path.read_bytes()).input_fingerprint
        except ValueError:
            recorded = ""
        if recorded != plan.input_fingerprint:
            path.unlink(missing_ok=True)
            (out / f"{name}.tar").unlink(missing_ok=True)
            (out / REJECT_DIR / f"{name}.parquet").unlink(missing_ok=True)


def _yield_problem(
    out: Path, mine: list[ShardJob], rows_by_key: dict[str, list[dict[str, Any]]], plan: ShardPlan,
    image_root: Path | RemotePath, min_kept: float,
) -> str | None:  # fmt: skip
    """A one-line hint when this part kept less than `min_kept` of its input studies, else None."""
    import polars as pl

    given = sum(len(rows_by_key[p.key]) for job in mine for p in job.patients)
    entries = [shard_index.read_entry(out, job.name, plan) for job in mine]
    kept = sum(e.studies for e in entries if e is not None)
    if not given or kept >= min_kept * given:
        return None
    reasons: Counter[str] = Counter()
    for job in mine:
        path = out / REJECT_DIR / f"{job.name}.parquet"
        if path.is_file():
            reasons.update(r for r in pl.read_parquet(path)["reason"].to_list() if r != "no_decodable_study")
    hint = "see rejects.parquet"
    if reasons:
        reason, count = reasons.most_common(1)[0]
        hint = f"most rejects are {reason} ({count} of {sum(reasons.values())})"
        if reason.endswith("missing_file"):
            hint += f": the images are not under {image_root}; is --image-root right?"
        else:
            hint += "; see rejects.parquet for the files"
    return f"kept {kept} of {given} studies ({kept / given:.0%}, below the --min-kept share {min_kept:.0%}); {hint}"


def write_shards(config: ShardConfig, progress: bool = True) -> ShardSummary:
    """Write the shards of part `config.part` of the dataset in `config.seq` into `config.out`.

    Complete shards built from the same input with the same options are kept (unless `force`); partial ones are
    discarded and rebuilt; a folder planned from another input is refused unless `force`. Writes `plan.json`,
    `index/`, `rejects/`, `rejects.parquet`, `summary.json` and `summary.png`; returns the summary. Raises
    `UserInputError` (after writing everything) when the part kept less than `config.min_kept` of its studies.
    """
    from medst.progress import progress as show_progress

    if isinstance(config.out, RemotePath):
        from .publish import write_shards_to_url

        return write_shards_to_url(config, functools.partial(write_shards, progress=progress))
    rows, image_root = _load_studies(config)
    if not rows:
        raise UserInputError(f"{config.seq / 'studies.parquet'} holds no study; nothing to shard")
    out = config.out
    # Checked once the input is known good; a folder of an older medst's shards (index/, no marker) stays usable.
    claim_output_dir(
        out,
        "shard",
        inputs=[config.seq],
        roots=[config.image_root if isinstance(config.image_root, Path) else None],
        legacy_markers=(shard_index.INDEX_DIR,),
    )
    (out / shard_index.INDEX_DIR).mkdir(exist_ok=True)
    _discard_stale_shared(out)
    options = config.options()
    jobs, rows_by_key = plan_jobs(rows, config)
    names = [j.name for j in jobs]
    plan = ShardPlan(
        medst_version=__version__,
        input_fingerprint=input_fingerprint(rows),
        options=options,
        shards=names,
        build=build_options(config.seq),
    )
    _check_provenance(out, plan, config.force)
    shard_index.write_plan(out, plan)
    mine = select_part(jobs, config.part)
    todo: list[ShardJob] = []
    for job in mine:
        entry = None if config.force else shard_index.read_entry(out, job.name, plan)
        if entry is not None:
            continue
        shard_index.entry_path(out, job.name).unlink(missing_ok=True)
        _discard_partial(out, job.name)
        todo.append(job)
    opts = SampleOptions(
        image_root=image_root,
        image_size=config.image_size,
        preset=config.preset,
        fmt=config.format,
        jpeg_quality=config.jpeg_quality,
        key_salt=config.key_salt,
        medst_version=__version__,
    )
    # Biggest shards first so the last worker is not left alone with a big one.
    todo.sort(key=lambda j: (-j.images, j.split, j.index))
    tasks = [
        (job, {p.key: rows_by_key[p.key] for p in job.patients}, opts, out, options, plan.input_fingerprint)
        for job in todo
    ]
    bar = show_progress(total=len(tasks), desc="shards", unit="shard", enabled=progress)
    # spawn: forking a process that holds polars/OpenCV thread pools can deadlock. A worker that dies
    # (out-of-memory killer) has its shard built again once; a second death is an error naming the shard.
    run_jobs(
        _write_one,
        tasks,
        min(config.workers, len(tasks)),
        lambda _i, _result: bar.update(),
        names=[f"shard {job.name}" for job in todo],
        initializer=_init_worker,
        context="spawn",
        timeout_s=config.shard_timeout_s,
        engine=EngineChoice(config.engine, config.ray_address),
    )
    bar.close()
    n_rejects = _merge_rejects(out, names)
    summary = shard_index.summarise(
        out,
        plan,
        options,
        __version__,
        names,
        built_now=len(todo),
        skipped_now=len(mine) - len(todo),
        rejects=n_rejects,
    )
    shard_index.write_summary(out, summary)
    entries = [e for e in (shard_index.read_entry(out, n, plan) for n in names) if e is not None]
    shard_index.plot_summary(out, entries, out / "summary.png")
    problem = _yield_problem(out, mine, rows_by_key, plan, image_root, config.min_kept)
    if problem is not None:
        raise UserInputError(problem)
    return summary
