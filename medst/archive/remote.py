"""An archive in object storage (``s3://bucket/mimic-cxr``, any fsspec URL that can list), mirrored for reading.

`stage_archive` lists the archive once (fsspec ``find``) and builds a local mirror of it that the readers read
exactly as they read a local archive (their code path, and its speed, stay those of a local folder):

- tables, reports and every other non-image file are fetched whole, many at a time (``cat`` of a list of paths
  runs concurrently on async filesystems such as s3fs);
- an image is a sparse file of its real size, so the tree, the reconciliation of tables with files, and the size
  checks of the header scan see what is in the bucket, while no pixel byte is transferred or stored;
- a DICOM whose header the MIMIC reader will read (no metadata row for it, or ``--read-headers always``) gets
  its first `HEADER_BYTES` by a ranged read (the whole object when its header is longer).

The images' paths stay relative to the archive root; the build records the archive URL once, as its
``image_root``, and `medst shard` reads each image's bytes from there. Transient failures are retried as
`medst.storage` retries them; a missing bucket or archive is one `UserInputError` line. Tested against S3 (a
moto server); ``gs://`` goes through gcsfs when it is installed (not a dependency) and is untested.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from medst.errors import UserInputError
from medst.storage import RemotePath, retrying

IMAGE_SUFFIXES = (".dcm", ".jpg", ".jpeg", ".png")
"""Objects that are mirrored as sparse placeholders (or header prefixes), never fetched whole."""
HEADER_BYTES = 64 * 1024
"""First ranged read of a DICOM whose header is needed; MIMIC headers are a few KiB."""
BATCH = 256
"""Objects per concurrent fetch (bounds the bytes held in memory at once)."""
_PIXEL_DATA_TAG = (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10")  # (7FE0,0010), little and big endian


def _listing(url: RemotePath, fs: Any, root: str) -> dict[str, int]:
    """Path relative to the archive root -> size in bytes, for every object under it."""
    found = retrying(url.url, lambda: fs.find(root, detail=True))
    prefix = root.rstrip("/") + "/"
    out: dict[str, int] = {}
    for path, info in found.items():
        if info.get("type", "file") != "file" or not path.startswith(prefix):
            continue
        out[path[len(prefix) :]] = int(info.get("size") or 0)
    if not out:
        raise UserInputError(f"{url}: no such archive (no objects under it; check ARCHIVE)")
    return out


def _needs_header(rels: list[str], local: Path, read_headers: str) -> list[str]:
    """The DICOMs under ``files/`` whose headers the MIMIC reader reads (see `medst.archive.mimic`)."""
    from medst.archive.mimic import METADATA
    from medst.archive.tables import find_table, read_table

    dicoms = [r for r in rels if r.startswith("files/") and r.endswith(".dcm")]
    if read_headers == "never" or not dicoms:
        return []
    meta = find_table(local, METADATA)
    if read_headers == "always" or meta is None:
        return dicoms
    described = set(
        read_table(meta, ["dicom_id"], "metadata CSV").get_column("dicom_id").drop_nulls().to_list()
    )
    return [r for r in dicoms if r.rsplit("/", 1)[-1][: -len(".dcm")] not in described]


def _fetch_whole(url: RemotePath, fs: Any, root: str, rels: list[str], local: Path) -> None:
    for start in range(0, len(rels), BATCH):
        part = rels[start : start + BATCH]
        paths = [f"{root}/{r}" for r in part]
        data: dict[str, bytes] = retrying(url.url, partial(fs.cat, paths, on_error="raise"))
        for rel, path in zip(part, paths, strict=True):
            target = local / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(bytes(data[path]))


def _fetch_headers(
    url: RemotePath, fs: Any, root: str, rels: list[str], sizes: dict[str, int], local: Path
) -> None:
    """Each DICOM's leading bytes (through its Pixel Data tag), written over its sparse placeholder."""
    whole: list[str] = []
    for start in range(0, len(rels), BATCH):
        part = rels[start : start + BATCH]
        paths = [f"{root}/{r}" for r in part]
        ends = [min(HEADER_BYTES, sizes[r]) for r in part]
        heads: list[Any] = retrying(url.url, partial(fs.cat_ranges, paths, [0] * len(paths), ends))
        for rel, head in zip(part, heads, strict=True):
            if isinstance(head, BaseException):
                raise UserInputError(f"{url}/{rel}: cannot read: {type(head).__name__}: {head}")
            if len(head) < sizes[rel] and not any(tag in head for tag in _PIXEL_DATA_TAG):
                whole.append(rel)  # a header longer than the first read: fetch the object
                continue
            with open(local / rel, "r+b") as fh:
                fh.write(bytes(head))
    _fetch_whole(url, fs, root, whole, local)


def stage_archive(
    url: RemotePath, local: Path, read_headers: str = "auto", check_files: str = "auto"
) -> Path:
    """Mirror the archive at ``url`` into the empty folder ``local`` (see the module docstring); returns ``local``."""
    fs, root = url._fs()
    root = root.rstrip("/")
    local.mkdir(parents=True, exist_ok=True)
    sizes = _listing(url, fs, root)
    rels = sorted(sizes)
    images = [r for r in rels if r.lower().endswith(IMAGE_SUFFIXES)]
    image_set = set(images)
    _fetch_whole(url, fs, root, [r for r in rels if r not in image_set], local)
    for rel in images:
        target = local / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as fh:
            fh.truncate(sizes[rel])  # sparse: the real size, no bytes on disk
    if check_files != "never":
        _fetch_headers(url, fs, root, _needs_header(images, local, read_headers), sizes, local)
    return local


@contextmanager
def staged_archive(url: RemotePath, read_headers: str = "auto", check_files: str = "auto") -> Iterator[Path]:
    """`stage_archive` into a temporary folder that is removed afterwards."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="medst-archive-") as tmp:
        yield stage_archive(url, Path(tmp) / "archive", read_headers, check_files)
