"""One patient timeline -> one shard sample: the `json` member and the encoded images, nothing else (the member
layout is `medst.shards.format`).

Only the fields of `TimelineSample` / `TimelineStudy` are written: pseudonymous keys, day offsets, report text,
view flags and labels. Raw subject/study/dicom ids, paths and DICOM headers never enter a sample.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from medst.archive.pixels import decode_image, resize_longest
from medst.errors import ImageDecodeError
from medst.schemas.records import RejectRecord, TimelineSample, TimelineStudy
from medst.storage import RemotePath

from .assign import pseudonym
from .format import View, encode_sample

STAGE = "shard"


def encode_image(img: np.ndarray, fmt: str, jpeg_quality: int = 95) -> bytes:
    """Encode a uint8 grey image as JPEG (fixed quality, baseline) or PNG (fixed compression): same pixels, same bytes."""
    if fmt == "jpg":
        params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality, cv2.IMWRITE_JPEG_OPTIMIZE, 0]
        ok, buf = cv2.imencode(".jpg", img, params)
    elif fmt == "png":
        ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    else:
        raise ValueError(f"unknown image format {fmt!r}")
    if not ok:
        raise ImageDecodeError("decode_error", "OpenCV could not encode the image")
    return buf.tobytes()


@dataclass
class SampleOptions:
    """What a sample's bytes depend on (besides the input files)."""

    image_root: Path | RemotePath
    """A folder, or the URL of an archive in object storage (each image fetched whole, then decoded)."""
    image_size: int
    preset: str
    fmt: str
    jpeg_quality: int
    key_salt: str
    medst_version: str


@dataclass
class BuiltSample:
    """One written sample: its tar members in order (full name, bytes; see `format.encode_sample`), counts and
    rejects."""

    key: str
    members: list[tuple[str, bytes]]
    studies: int
    frontal: int
    lateral: int
    rejects: list[RejectRecord]
    intensity_fallbacks: int = 0


def _clean_labels(raw: Any) -> dict[str, float | None]:
    """Labels as a plain dict sorted by name, whatever way the parquet stored them (struct, map, JSON text)."""
    if raw is None:
        return {}
    if isinstance(raw, str):
        raw = json.loads(raw) if raw.strip() else {}
    if isinstance(raw, list):  # a parquet map comes back as [{"key": k, "value": v}, ...] or [(k, v), ...]
        raw = dict((item["key"], item["value"]) if isinstance(item, dict) else item for item in raw)
    out: dict[str, float | None] = {}
    for name in sorted(raw):
        value = raw[name]
        out[str(name)] = (
            None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
        )
    return out


def _decode(opts: SampleOptions, rel: str) -> tuple[bytes, str | None]:
    """Encoded image bytes and the intensity fallback its display needed (None when none)."""
    if isinstance(opts.image_root, RemotePath):
        return _decode_remote(opts, opts.image_root / rel, rel)
    path = opts.image_root / rel
    if not path.is_file():
        # Its own reason: when most images are missing, the image root is wrong (the shard run says so).
        raise ImageDecodeError("missing_file", f"{rel}: no such file under the image root")
    decoded = decode_image(path, opts.preset, shrink_to=opts.image_size)  # type: ignore[arg-type]
    img = decoded.pixels
    img = resize_longest(img, opts.image_size) if max(img.shape[:2]) > opts.image_size else img
    return encode_image(np.ascontiguousarray(img), opts.fmt, opts.jpeg_quality), decoded.intensity_fallback


def _decode_remote(opts: SampleOptions, url: RemotePath, rel: str) -> tuple[bytes, str | None]:
    """`_decode` of an image in object storage: its bytes fetched once (retried as `medst.storage` retries), then
    decoded from a temporary file of the same name, by the same code as a local file."""
    import tempfile

    from medst.errors import UserInputError

    try:
        data = url.read_bytes_if_exists()
    except UserInputError as err:  # the store kept failing: this image is lost, the run goes on
        raise ImageDecodeError("unreadable_image", str(err)) from None
    if data is None:
        raise ImageDecodeError("missing_file", f"{rel}: no such object under the image root")
    with tempfile.TemporaryDirectory(prefix="medst-image-") as tmp:
        path = Path(tmp) / url.name
        path.write_bytes(data)
        decoded = decode_image(path, opts.preset, shrink_to=opts.image_size)  # type: ignore[arg-type]
    img = decoded.pixels
    img = resize_longest(img, opts.image_size) if max(img.shape[:2]) > opts.image_size else img
    return encode_image(np.ascontiguousarray(img), opts.fmt, opts.jpeg_quality), decoded.intensity_fallback


def _reject(item: str, reason: str, message: str) -> RejectRecord:
    return RejectRecord(item=item, item_kind="image", stage=STAGE, reason=reason, message=message)


def build_sample(key: str, split: str, studies: Sequence[dict[str, Any]], opts: SampleOptions) -> BuiltSample:
    """Decode and encode one patient's studies (rows of studies.parquet) into a sample, in time order.

    Studies are ordered by (day_offset, study_datetime, study_key). A study whose frontal fails to decode is dropped
    (reject ``frontal_<reason>``); a failed lateral leaves a frontal-only study (reject ``lateral_<reason>``).
    An image shown through the percentile fallback (flat preset output) is named in its study's
    ``intensity_fallback`` and counted in ``intensity_fallbacks``.
    When no study survives the sample has no members and ``studies == 0`` (its rejects say why). Reject items are dicom ids, never paths (paths can hold subject ids).
    """
    ordered = sorted(
        studies,
        key=lambda r: (
            float(r["day_offset"]),
            r["study_datetime"].isoformat() if r.get("study_datetime") is not None else "",
            pseudonym(opts.key_salt, "study", str(r["study_id"])),
        ),
    )
    rejects: list[RejectRecord] = []
    kept: list[TimelineStudy] = []
    images: list[tuple[int, View, bytes]] = []
    n_lateral = n_fallbacks = 0
    for row in ordered:
        study_key = pseudonym(opts.key_salt, "study", str(row["study_id"]))
        fallback: dict[str, str] = {}
        try:
            frontal, how = _decode(opts, row["frontal_path"])
        except ImageDecodeError as err:
            rejects.append(
                _reject(
                    str(row["frontal_dicom_id"]),
                    f"frontal_{err.reason}",
                    f"frontal image of study {row['study_id']} did not decode ({err.reason}); study dropped",
                )
            )
            continue
        if how:
            fallback["frontal"] = how
        lateral: bytes | None = None
        if row.get("lateral_path"):
            try:
                lateral, how = _decode(opts, row["lateral_path"])
                if how:
                    fallback["lateral"] = how
            except ImageDecodeError as err:
                rejects.append(
                    _reject(
                        str(row["lateral_dicom_id"]),
                        f"lateral_{err.reason}",
                        f"lateral image of study {row['study_id']} did not decode ({err.reason}); kept frontal only",
                    )
                )
        idx = len(kept)
        kept.append(
            TimelineStudy(
                index=idx,
                study_key=study_key,
                day_offset=float(row["day_offset"]),
                text=str(row["text"] or ""),
                has_frontal=True,
                has_lateral=lateral is not None,
                labels=_clean_labels(row.get("labels")),
                intensity_fallback=fallback,
            )
        )
        n_fallbacks += len(fallback)
        images.append((idx, "frontal", frontal))
        if lateral is not None:
            images.append((idx, "lateral", lateral))
            n_lateral += 1
    if not kept:
        return BuiltSample(key=key, members=[], studies=0, frontal=0, lateral=0, rejects=rejects)
    sample = TimelineSample(key=key, split=split, studies=kept, medst_version=opts.medst_version)  # type: ignore[arg-type]
    return BuiltSample(
        key=key,
        members=encode_sample(sample, images, opts.fmt),
        studies=len(kept),
        frontal=len(kept),
        lateral=n_lateral,
        rejects=rejects,
        intensity_fallbacks=n_fallbacks,
    )
