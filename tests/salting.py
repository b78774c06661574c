"""Bad-input generator: copy a `medst synth` archive (DICOM release) and salt it with every bad case of issue 8.

`salt_archive(src, dst)` copies the DICOM tree and the MIMIC-CXR tables of `src` into `dst` and damages chosen,
distinct items in place. It returns one `Salt` per case naming the item it touched (a dicom_id, a report path or a
metadata row id), so a test can look that item up among the rejects and check every other item was still built.
Targets are chosen from the sorted record list, so the same source always gives the same salted archive.
"""

from __future__ import annotations

import gzip
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import ExplicitVRLittleEndian


@dataclass(frozen=True)
class Salt:
    """One bad input: `case` names the damage, `item` the damaged item as the build names it in rejects.

    `item_kind` is "image" (item = dicom_id), "report" (item = the report's path relative to the archive root) or
    "row" (item = "FILE row N", as the build names a table row). `study_id`/`subject_id` say where the item lived.
    """

    case: str
    item_kind: str
    item: str
    study_id: str
    subject_id: str
    other_study_id: str | None = None


_TABLES = (
    "cxr-record-list.csv.gz",
    "cxr-study-list.csv.gz",
    "mimic-cxr-2.0.0-metadata.csv.gz",
    "mimic-cxr-2.0.0-split.csv.gz",
    "mimic-cxr-2.0.0-chexpert.csv.gz",
)


def _read_gz_lines(path: Path) -> list[str]:
    return gzip.decompress(path.read_bytes()).decode().splitlines()


def _write_gz_lines(path: Path, lines: list[str]) -> None:
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0))


def _native_copy(ds: pydicom.Dataset, pixels: np.ndarray, path: Path, **tags: object) -> None:
    """Rewrite `ds` uncompressed (Explicit VR Little Endian) with `pixels` and extra tags, to `path`."""
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds["PixelData"].VR = "OW" if pixels.dtype.itemsize == 2 else "OB"
    ds.save_as(path, enforce_file_format=True)


def copy_dicom_release(src: Path, dst: Path) -> Path:
    """Copy the DICOM tree and the MIMIC-CXR tables of a synth archive (no JPG release, no benchmarks)."""
    shutil.copytree(src / "files", dst / "files")
    for name in _TABLES:
        if (src / name).is_file():
            shutil.copy(src / name, dst / name)
    return dst


def salt_archive(src: Path, dst: Path, seed: int = 0) -> list[Salt]:
    """Copy the DICOM release of `src` into `dst` and damage one distinct item per case; returns the cases."""
    copy_dicom_release(src, dst)
    records = _read_gz_lines(dst / "cxr-record-list.csv.gz")
    rows = sorted(records[1:], key=lambda r: r.split(",")[2])
    random.Random(seed).shuffle(rows)
    # Image cases go to the only frontal image of a study (the one `shard` must decode); every case gets its own
    # study, so each damaged item is its study's only salt and the other studies stay good.
    meta_rows = [line.split(",") for line in _read_gz_lines(dst / "mimic-cxr-2.0.0-metadata.csv.gz")[1:]]
    frontals: dict[str, list[str]] = {}
    for cells in meta_rows:
        if cells[4] in ("PA", "AP"):
            frontals.setdefault(cells[2], []).append(cells[0])
    single = {ids[0] for ids in frontals.values() if len(ids) == 1}
    seen_studies: set[str] = set()
    firsts, others = [], []
    for row in rows:
        subject, study, dicom_id, rel = row.split(",")
        if study not in seen_studies:
            seen_studies.add(study)
            (firsts if dicom_id in single else others).append([subject, study, dicom_id, rel])
    for row in rows:  # studies whose first row was not their single frontal: use that frontal instead
        subject, study, dicom_id, rel = row.split(",")
        if dicom_id in single and all(p[1] != study for p in firsts):
            others = [p for p in others if p[1] != study]
            firsts.append([subject, study, dicom_id, rel])
    picked = firsts + others
    it = iter(picked)
    salts: list[Salt] = []

    def image(case: str) -> tuple[Path, str, str, str]:
        subject, study, dicom_id, rel = next(it)
        salts.append(Salt(case, "image", dicom_id, study, subject))
        return dst / rel, dicom_id, study, subject

    # -- DICOM files --------------------------------------------------------------------------------------
    path, *_ = image("zero_length_dicom")
    path.write_bytes(b"")
    path, *_ = image("garbage_bytes_dcm")
    path.write_bytes(bytes(random.Random(seed + 1).randrange(256) for _ in range(4096)))
    path, *_ = image("truncated_in_header")
    path.write_bytes(path.read_bytes()[:300])
    path, *_ = image("truncated_in_pixels")
    ds = pydicom.dcmread(path)
    _native_copy(ds, ds.pixel_array, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    path, *_ = image("no_pixel_data")
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    del ds.PixelData
    ds.save_as(path, enforce_file_format=True)
    path, *_ = image("unknown_transfer_syntax")
    ds = pydicom.dcmread(path)
    _native_copy(ds, ds.pixel_array, path)
    raw = path.read_bytes()
    # Same length as Explicit VR Little Endian's UID (19 chars + pad): the file stays well-formed.
    path.write_bytes(raw.replace(b"1.2.840.10008.1.2.1\x00", b"1.2.999.99.999.1.2\x00\x00", 1))
    path, *_ = image("pixel_data_shorter_than_rows_x_columns")
    ds = pydicom.dcmread(path)
    px = ds.pixel_array
    _native_copy(ds, px.reshape(-1)[: px.size // 2], path)  # well-formed element, half the pixels
    path, *_ = image("rgb_image")
    ds = pydicom.dcmread(path)
    grey = ds.pixel_array.astype(np.float64)
    rgb = np.repeat((255 * (grey - grey.min()) / max(np.ptp(grey), 1)).astype(np.uint8)[..., None], 3, axis=2)
    _native_copy(
        ds, rgb, path, PhotometricInterpretation="RGB", SamplesPerPixel=3, PlanarConfiguration=0,
        BitsAllocated=8, BitsStored=8, HighBit=7, PixelRepresentation=0,
    )  # fmt: skip
    for key in ("WindowCenter", "WindowWidth", "VOILUTSequence", "RescaleIntercept", "RescaleSlope"):
        if key in ds:
            delattr(ds, key)
    ds.save_as(path, enforce_file_format=True)
    path, *_ = image("signed_pixels")
    ds = pydicom.dcmread(path)
    signed = (ds.pixel_array.astype(np.int32) - 2048).clip(-32768, 32767).astype(np.int16)
    _native_copy(ds, signed, path, PixelRepresentation=1, BitsAllocated=16, BitsStored=16, HighBit=15)
    path, *_ = image("multi_frame")
    ds = pydicom.dcmread(path)
    px = ds.pixel_array
    _native_copy(ds, np.stack([px, px]), path, NumberOfFrames=2)

    # -- reports ------------------------------------------------------------------------------------------
    def report(case: str) -> Path:
        subject, study, _dicom_id, rel = next(it)
        rep = Path(rel).parent.with_suffix(".txt")
        salts.append(Salt(case, "report", rep.as_posix(), study, subject))
        return dst / rep

    rep = report("non_utf8_report")
    rep.write_bytes(rep.read_bytes().replace(b"IMPRESSION", b"IMPRESSION \xff\xfe\xe9 caf\xe9", 1))
    rep = report("binary_report")
    rep.write_bytes(bytes(random.Random(seed + 2).randrange(256) for _ in range(2048)))
    report("empty_report").write_bytes(b"")

    # -- table rows ---------------------------------------------------------------------------------------
    meta_path = dst / "mimic-cxr-2.0.0-metadata.csv.gz"
    meta = _read_gz_lines(meta_path)
    by_id = {line.split(",", 1)[0]: i for i, line in enumerate(meta)}

    def row(case: str, appended: bool = False) -> tuple[int, list[str]]:
        # The build names a bad row "FILE row N", N counting data rows from 1 (the header is line 0).
        subject, study, dicom_id, _rel = next(it)
        i = by_id[dicom_id]
        n = len(meta) if appended else i
        salts.append(Salt(case, "row", f"{meta_path.name} row {n}", study, subject))
        return i, meta[i].split(",")

    i, cells = row("metadata_missing_fields")
    cells[1] = cells[2] = ""  # no subject_id, no study_id
    meta[i] = ",".join(cells)
    i, cells = row("metadata_malformed_fields")
    cells[2] = "s-not-a-number"
    cells[7] = "not-a-date"
    meta[i] = ",".join(cells)
    i, cells = row("duplicate_dicom_id", appended=True)
    meta.append(meta[i])  # the same row twice
    i, cells = row("image_listed_in_two_patients", appended=True)
    other = next(it)  # a different patient's study
    cells[1], cells[2] = other[0], other[1]
    meta.append(",".join(cells))  # the same dicom_id again, under another patient and study
    salts[-1] = Salt(
        salts[-1].case, "row", salts[-1].item, salts[-1].study_id, salts[-1].subject_id, other[1]
    )
    _write_gz_lines(meta_path, meta)
    # A record-list line for a new id pointing at a file that does not exist.
    extra_id = "00000000-deadbeef-00000000-00000000-00000000"
    subject, study, _d, rel = next(it)
    missing_rel = (Path(rel).parent / f"{extra_id}.dcm").as_posix()
    lines = _read_gz_lines(dst / "cxr-record-list.csv.gz")
    _write_gz_lines(dst / "cxr-record-list.csv.gz", [*lines, f"{subject},{study},{extra_id},{missing_rel}"])
    salts.append(Salt("listed_but_missing_file", "image", extra_id, study, subject))
    return salts
