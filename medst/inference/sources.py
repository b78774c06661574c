"""What `medst embed` reads: every image of a folder, a glob, a build-sequences manifest or a shard folder.

Each source yields `ImageJob`s lazily (shards are streamed, never held in memory). A job names its frontal image
(a file, an object under an image root URL, or the stored bytes of a shard member) and optionally its lateral
image. A manifest built from an archive in object storage (``build-sequences s3://...``) records that URL as its
``image_root``; its images are then fetched one by one when embedded (`medst.inference.embed_batches`).
"""

from __future__ import annotations

import glob
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from medst.errors import ImageDecodeError, UserInputError
from medst.storage import Location, RemotePath, to_location

if TYPE_CHECKING:
    from medst.shards.format import StoredSample

IMAGE_SUFFIXES = frozenset({".dcm", ".dicom", ".dic", ".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ""})
"""Files a folder scan takes (DICOM files often have no suffix); anything else is counted as skipped."""


@dataclass(frozen=True)
class ImageJob:
    """One row of output: ``frontal`` is a file path, an object URL or stored shard bytes (already
    intensity-processed)."""

    id: str
    path: str
    frontal: Path | RemotePath | bytes
    lateral: Path | RemotePath | bytes | None = None
    lateral_path: str | None = None
    error: ImageDecodeError | None = None
    view: str | None = None  # of the ``frontal`` image: frontal | lateral | other | unknown
    warning: str | None = None  # `medst.inference.views.WARNING_TEXT` codes, joined with ","


@dataclass
class ImageSource:
    """Jobs to run, how many (None when unknown up front), what kind of input, and files passed over."""

    kind: str
    jobs: Iterator[ImageJob]
    total: int | None
    skipped: list[str] = field(default_factory=list)


def _scan(paths: list[Path], root: Path | None, frontal_only: bool = False) -> ImageSource:
    from medst.inference.views import pair_views, read_view

    files = sorted(p for p in paths if p.is_file() and not p.name.startswith("."))
    keep = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    skipped = [str(p) for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
    # Views from the DICOM headers: laterals join the frontal of their study, the rest is flagged.
    jobs = [
        ImageJob(
            id=(r.path.relative_to(root).as_posix() if root is not None else str(r.path)),
            path=str(r.path),
            frontal=r.path,
            lateral=r.lateral,
            lateral_path=None if r.lateral is None else str(r.lateral),
            view=r.view,
            warning=r.warning,
        )
        for r in pair_views([read_view(p) for p in keep], frontal_only)
    ]
    return ImageSource("folder" if root is not None else "glob", iter(jobs), len(jobs), skipped)


_VIEW_WARNINGS = {"lateral": "lateral_alone", "other": "view_other", "unknown": "view_unknown"}


def _image_root(manifest: Path, override: Path | None) -> Path | RemotePath:
    """The folder (or, for an archive in object storage, the URL) the manifest's image paths are relative to."""
    if override is not None:
        root = override
    else:
        report = manifest.parent / "build_report.json"
        if not report.is_file():
            raise UserInputError(f"{report} not found beside {manifest.name}; pass --image-root")
        value = json.loads(report.read_text()).get("image_root")
        if not value:
            raise UserInputError(f"{report} has no 'image_root'; pass --image-root")
        recorded = to_location(value)
        if isinstance(recorded, RemotePath):
            # Not checked up front (an object store has no folders to ask about): each missing object is an
            # error row, as a missing local file is.
            return recorded
        root = recorded if recorded.is_absolute() else manifest.parent / recorded
    if not root.is_dir():
        raise UserInputError(f"image root {root} is not a folder; pass --image-root")
    return root


def _manifest(path: Path, image_root: Path | None, frontal_only: bool, split: str | None) -> ImageSource:
    import polars as pl

    df = pl.read_parquet(path)
    if split is not None:
        if "split" not in df.columns:
            raise UserInputError(f"{path} has no 'split' column; drop --split")
        df = df.filter(pl.col("split") == split)
    root = _image_root(path, image_root)
    jobs: list[ImageJob] = []
    if "frontal_path" in df.columns:
        id_col = "study_id" if "study_id" in df.columns else "frontal_path"
        has_lat = "lateral_path" in df.columns and not frontal_only
        for row in df.iter_rows(named=True):
            lat = row.get("lateral_path") if has_lat else None
            jobs.append(
                ImageJob(
                    id=str(row[id_col]),
                    path=str(row["frontal_path"]),
                    frontal=root / row["frontal_path"],
                    lateral=root / lat if lat else None,
                    lateral_path=str(lat) if lat else None,
                    view="frontal",
                )
            )
        return ImageSource("studies", iter(jobs), len(jobs))
    if "path" in df.columns:
        id_col = "dicom_id" if "dicom_id" in df.columns else "path"
        for row in df.iter_rows(named=True):
            view = row.get("view")  # images.parquet records each image's view as build-sequences decided it
            jobs.append(
                ImageJob(
                    id=str(row[id_col]),
                    path=str(row["path"]),
                    frontal=root / row["path"],
                    view=view,
                    warning=None if view is None else _VIEW_WARNINGS.get(str(view)),
                )
            )
        return ImageSource("images", iter(jobs), len(jobs))
    raise UserInputError(
        f"{path}: not a build-sequences manifest (needs a frontal_path column like studies.parquet, or a path "
        "column like images.parquet)"
    )


def _shard_jobs(folder: Location, shards: list[tuple[str, int]], frontal_only: bool) -> Iterator[ImageJob]:
    """Every study of the complete shards ``(tar name, studies in its index entry)``, in index order; a shard that
    cannot be read to its end yields one error row after the studies read before the damage."""
    from medst.shards.format import iter_samples
    from medst.shards.members import ShardReadError

    for name, expected in shards:
        done = 0
        problem = ""
        try:
            with (folder / name).open("rb") as fh:
                # The checked member reader: unsafe members refuse the shard, members are size-capped.
                for sample in iter_samples(fh, folder / name):
                    for job in _sample_jobs(name, sample, frontal_only):
                        done += 1
                        yield job
        except ShardReadError as err:
            problem = err.problem if err.member.startswith("(") else f"{err.member}: {err.problem}"
        except (OSError, KeyError, ValueError) as err:
            problem = f"{type(err).__name__}: {err}"
        if problem or done < expected:
            yield _shard_error(folder, name, "unreadable_shard",
                               f"{name}: read {done} of {expected} studies ({problem or 'the tar ends early'})")  # fmt: skip


def _shard_error(folder: Location, name: str, reason: str, message: str) -> ImageJob:
    return ImageJob(id=name, path=str(folder / name), frontal=b"", error=ImageDecodeError(reason, message))


def _sample_jobs(name: str, sample: StoredSample, frontal_only: bool) -> Iterator[ImageJob]:
    for study in sample.timeline()["studies"]:
        idx = int(study["index"])
        front = sample.image_suffix(idx, "frontal")
        lat = None if frontal_only else sample.image_suffix(idx, "lateral")
        if front is None:
            continue  # the writer never stores a study without its frontal image
        yield ImageJob(
            id=f"{sample.key}/{study.get('study_key', idx)}",
            path=f"{name}:{sample.member(front)}",
            frontal=sample.members[front],
            lateral=sample.members[lat] if lat else None,
            lateral_path=f"{name}:{sample.member(lat)}" if lat else None,
            view="frontal",
        )


def _shards(folder: Location, frontal_only: bool, split: str | None) -> ImageSource:
    from itertools import chain

    from medst.shards.index import list_entries, missing_shards

    # The folder's plan says which shards make the dataset; a tar it does not name is never read.
    entries = list_entries(folder, split)
    # Shards of the plan that are missing, damaged or from another build: reported as error rows.
    broken = missing_shards(folder, split)
    if not entries and not broken:
        raise UserInputError(f"{folder}: no complete shards" + (f" of split {split!r}" if split else ""))
    errors = (
        _shard_error(
            folder,
            f"{b}.tar",
            "incomplete_shard",
            f"{b}.tar is missing, not the size its index records, or of another build of this folder",
        )
        for b in broken
    )
    jobs = chain(_shard_jobs(folder, [(e.shard, e.studies) for e in entries], frontal_only), errors)
    return ImageSource("shards", jobs, sum(e.studies for e in entries) + len(broken), [])


def shard_options(folder: Location) -> dict[str, object]:
    """The options a shard folder was written with (``summary.json``), or {}."""
    summary = folder / "summary.json"
    return dict(json.loads(summary.read_text()).get("options", {})) if summary.is_file() else {}


def image_source(
    spec: str, image_root: Path | None = None, frontal_only: bool = False, split: str | None = None
) -> ImageSource:
    """Decide what ``spec`` is and list its images.

    A ``.parquet`` file is a build-sequences manifest (studies.parquet: one job per study with its lateral;
    images.parquet: one job per image); a folder with ``index/`` is a shard folder; a folder with
    ``studies.parquet`` is a build-sequences output; any other folder is scanned recursively for DICOM/JPG/PNG
    files; a string with ``*``, ``?`` or ``[`` is a glob; a URL (``s3://``, ``https://``) is a shard folder
    (``file://`` URLs are local paths). Raises `UserInputError` when it matches nothing.
    """
    location = to_location(spec)
    if isinstance(location, RemotePath):
        # A URL is read as a shard folder only: its plan names the tars, so nothing needs listing.
        return _shards(location, frontal_only, split)
    p = location.expanduser()
    if p.is_file() and p.suffix == ".parquet":
        return _manifest(p, image_root, frontal_only, split)
    if p.is_dir():
        if (p / "index").is_dir():
            return _shards(p, frontal_only, split)
        if (p / "studies.parquet").is_file() and (p / "build_report.json").is_file():
            return _manifest(p / "studies.parquet", image_root, frontal_only, split)
        return _scan(list(p.rglob("*")), p, frontal_only)
    if p.is_file():
        return _scan([p], None, frontal_only)
    if any(c in spec for c in "*?["):
        matches = [Path(m) for m in glob.glob(str(p), recursive=True)]
        if not matches:
            raise UserInputError(f"{spec}: the glob matches no file")
        return _scan(matches, None, frontal_only)
    raise UserInputError(
        f"{spec}: no such file or folder (give a folder, a glob, a manifest or a shard folder)"
    )
