"""The shard sample format: the contract between `medst shard` and every reader of its tars, in one place.

A shard is an uncompressed POSIX (ustar) tar of samples, one per patient timeline, in the order of its index entry's
``timeline_lengths``. A sample is the run of consecutive members whose names share the part before the first dot,
the sample key (WebDataset's ``__key__``, here the pseudonymous patient key):

    {key}.json                the timeline: `TimelineSample` as compact JSON with sorted keys (UTF-8); its
                              ``studies`` are in time order, each with its ``index``, ``has_lateral`` and text
    {key}.sNN.frontal.{ext}   the frontal image of study NN (the study's ``index``, two digits), ext jpg or png
    {key}.sNN.lateral.{ext}   its lateral image, present only when the study's ``has_lateral`` is true

Members come in that order: the json, then per study its frontal and (if any) its lateral. A study is never stored
without its frontal image, and a patient with no stored study has no sample. Every member is a regular file with
mtime 0, mode 0o644, uid/gid 0 and empty owner names, so the same timelines always give byte-identical tars.

Writing: `encode_sample` (timeline + encoded images -> member names and bytes), `add_members` (into a tar).
Reading: `iter_samples` groups a tar's members into `StoredSample`s, always through the checked member reader
(`members.read_members`: links, devices and escaping names refuse the shard; members are size-capped);
`StoredSample.timeline` parses and checks the json, `StoredSample.image` finds a study's view.

A complete shard (`is_complete`): its index entry (``index/{name}.json``, written only after the tar was renamed
into place) exists and parses, records the plan's input fingerprint and options, and the tar has exactly the byte
size the entry records. The entry also records the tar's sha256 (to check a copy) and its sample and study counts:
a complete tar read to its end yields ``samples`` samples (`ends_early` says when it did not).
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any, Literal

from medst.schemas.records import TimelineSample
from medst.schemas.shards import ShardIndexEntry, ShardPlan
from medst.storage import Location

from .members import ShardReadError, read_members

META = "json"
"""Suffix of the timeline member (``{key}.json``)."""
View = Literal["frontal", "lateral"]
VIEWS: tuple[View, View] = ("frontal", "lateral")


def image_suffix(index: int, view: View, ext: str) -> str:
    """Suffix (after ``{key}.``) of study `index`'s `view` image stored as `ext`: ``s03.lateral.jpg``."""
    return f"s{index:02d}.{view}.{ext}"


def encode_sample(
    sample: TimelineSample, images: Sequence[tuple[int, View, bytes]], ext: str
) -> list[tuple[str, bytes]]:
    """The tar members (full names, bytes) of one timeline, in the order they are written.

    `images` are ``(study index, view, encoded bytes)`` in study order, frontal before lateral.
    """
    meta = json.dumps(sample.model_dump(mode="json"), sort_keys=True, separators=(",", ":")).encode()
    members = [(f"{sample.key}.{META}", meta)]
    members.extend((f"{sample.key}.{image_suffix(i, view, ext)}", data) for i, view, data in images)
    return members


def add_members(tar: tarfile.TarFile, members: Sequence[tuple[str, bytes]]) -> None:
    """Append members with the normalised header of the format (no time, owner or mode of this machine)."""
    for name, data in members:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = 0
        info.mode = 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.type = tarfile.REGTYPE
        tar.addfile(info, io.BytesIO(data))


@dataclass(frozen=True)
class StoredSample:
    """One sample as read from a shard: its key, the shard it came from, its members by suffix (undecoded)."""

    key: str
    shard: str
    members: dict[str, bytes]

    def member(self, suffix: str) -> str:
        """The full member name, for messages: ``{key}.{suffix}``."""
        return f"{self.key}.{suffix}"

    def timeline(self) -> dict[str, Any]:
        """The ``json`` member parsed; `ShardReadError` when it is missing or holds no ``studies`` list."""
        name = self.member(META)
        if META not in self.members:
            raise ShardReadError(self.shard, name, "missing")
        try:
            meta = json.loads(self.members[META])
            if not isinstance(meta, dict) or not isinstance(meta.get("studies"), list):
                raise ValueError("no studies list")
        except (ValueError, UnicodeDecodeError) as err:
            raise ShardReadError(self.shard, name, f"not a timeline ({err})") from None
        return meta

    def image_suffix(self, index: int, view: View) -> str | None:
        """The suffix of study `index`'s `view` image in this sample (whatever its extension), or None."""
        prefix = f"s{index:02d}.{view}."
        return next((s for s in self.members if s.startswith(prefix)), None)

    def image(self, index: int, view: View) -> bytes | None:
        """The stored (encoded) bytes of study `index`'s `view` image, or None when the sample has none."""
        suffix = self.image_suffix(index, view)
        return None if suffix is None else self.members[suffix]

    def images(self) -> dict[str, bytes]:
        """Every image member, suffix -> stored bytes."""
        return {s: data for s, data in self.members.items() if s != META}


def _webdataset_files(fileobj: IO[bytes], shard: Location) -> Iterator[dict[str, Any]]:
    for name, data in read_members(fileobj, shard):
        yield {"fname": name, "data": data, "__url__": str(shard)}


def iter_samples(fileobj: IO[bytes], shard: Location) -> Iterator[StoredSample]:
    """Stream the samples of a shard tar in tar order through the checked member reader (`read_members`).

    A damaged tar or unsafe member raises `ShardReadError` / `UnsafeShardError` when the stream reaches it; the
    samples before it have been yielded.
    """
    from webdataset.tariterators import group_by_keys

    for grouped in group_by_keys(_webdataset_files(fileobj, shard)):
        members = {k: v for k, v in grouped.items() if not k.startswith("__")}
        yield StoredSample(key=str(grouped["__key__"]), shard=str(shard), members=members)


def matches_plan(entry: ShardIndexEntry, plan: ShardPlan) -> bool:
    """Whether the entry records the plan's input fingerprint and options (a shard of this build)."""
    return entry.input_fingerprint == plan.input_fingerprint and entry.options == plan.options


def is_complete(entry: ShardIndexEntry, tar_size: int | None, plan: ShardPlan | None = None) -> bool:
    """Whether the shard of `entry` is complete: its tar is there with the recorded size (`tar_size` None: no
    tar) and, when `plan` is given, the entry is of the plan's build (`matches_plan`)."""
    return (plan is None or matches_plan(entry, plan)) and tar_size is not None and tar_size == entry.bytes


def ends_early(shard: Location, samples_read: int, samples: int) -> ShardReadError | None:
    """The error for a tar that yielded `samples_read` samples where its index records (at least) `samples`."""
    if samples_read >= samples:
        return None
    return ShardReadError(
        shard, f"sample {samples_read}", f"the tar ends early ({samples_read} of {samples} samples)"
    )
