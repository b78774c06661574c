"""The shard codec (`medst.shards.format`): timelines encoded into tar members and read back through the checked
reader, the layout its docstring promises, and the one definition of a complete shard."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from medst.schemas.records import TimelineSample, TimelineStudy
from medst.schemas.shards import ShardIndexEntry, ShardPlan
from medst.shards.format import (
    META,
    View,
    add_members,
    encode_sample,
    ends_early,
    is_complete,
    iter_samples,
    matches_plan,
)
from medst.shards.members import ShardReadError, UnsafeShardError
from medst.shards.samples import encode_image


def _timeline(key: str) -> TimelineSample:
    studies = [
        TimelineStudy(index=0, study_key="s-a", day_offset=0.0, text="left effusion", has_lateral=True),
        TimelineStudy(index=1, study_key="s-b", day_offset=12.5, text="effusion smaller", has_lateral=False),
    ]
    return TimelineSample(key=key, split="train", studies=studies, medst_version="0.1.0")


def _images(seed: int) -> list[tuple[int, View, bytes]]:
    rng = np.random.default_rng(seed)
    grey = [rng.integers(0, 256, (24, 20), dtype=np.uint8) for _ in range(3)]
    return [
        (0, "frontal", encode_image(grey[0], "jpg")),
        (0, "lateral", encode_image(grey[1], "jpg")),
        (1, "frontal", encode_image(grey[2], "jpg")),
    ]


def _tar(samples: list[list[tuple[str, bytes]]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for members in samples:
            add_members(tar, members)
    return buf.getvalue()


def test_timelines_round_trip_in_the_documented_layout() -> None:
    first, second = _timeline("p1"), _timeline("p2")
    images = _images(0)
    members = encode_sample(first, images, "jpg")
    assert [name for name, _ in members] == [
        "p1.json",
        "p1.s00.frontal.jpg",
        "p1.s00.lateral.jpg",
        "p1.s01.frontal.jpg",
    ]
    data = _tar([members, encode_sample(second, _images(1), "jpg")])
    # Same timelines, same bytes; headers carry nothing of this machine.
    assert data == _tar([members, encode_sample(second, _images(1), "jpg")])
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        infos = tar.getmembers()
    assert {(i.mtime, i.mode, i.uid, i.gid, i.uname, i.gname) for i in infos} == {(0, 0o644, 0, 0, "", "")}

    read = list(iter_samples(io.BytesIO(data), Path("shard.tar")))
    assert [s.key for s in read] == ["p1", "p2"]
    sample = read[0]
    assert sample.timeline() == json.loads(first.model_dump_json())
    assert sample.image(0, "frontal") == images[0][2] and sample.image(0, "lateral") == images[1][2]
    assert sample.image(1, "frontal") == images[2][2] and sample.image(1, "lateral") is None
    assert sample.image_suffix(0, "lateral") == "s00.lateral.jpg"
    assert sorted(sample.images()) == ["s00.frontal.jpg", "s00.lateral.jpg", "s01.frontal.jpg"]
    assert ends_early(Path("shard.tar"), len(read), 2) is None


def test_a_sample_without_a_timeline_names_its_member() -> None:
    members = encode_sample(_timeline("p1"), _images(0), "png")
    no_json = [(n, d) for n, d in members if not n.endswith(f".{META}")]
    not_timeline = [("p2.json", b'{"key": "p2"}'), *[(n.replace("p1", "p2"), d) for n, d in no_json]]
    missing, wrong = iter_samples(io.BytesIO(_tar([no_json, not_timeline])), Path("x.tar"))
    with pytest.raises(ShardReadError, match=r"x\.tar: member 'p1\.json': missing"):
        missing.timeline()
    with pytest.raises(ShardReadError, match=r"member 'p2\.json': not a timeline"):
        wrong.timeline()


def test_iteration_goes_through_the_member_safety_check() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        add_members(tar, encode_sample(_timeline("p1"), _images(0), "jpg"))
        link = tarfile.TarInfo("p2.json")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    samples = iter_samples(io.BytesIO(buf.getvalue()), Path("evil.tar"))
    with pytest.raises(UnsafeShardError, match="link"):
        list(samples)


def test_complete_means_the_entry_and_a_tar_of_its_recorded_size() -> None:
    data = _tar([encode_sample(_timeline("p1"), _images(0), "jpg")])
    plan = ShardPlan(
        medst_version="0.1.0", input_fingerprint="f1", options={"image_size": 64}, shards=["train-000000"]
    )
    entry = ShardIndexEntry(
        shard="train-000000.tar", split="train", index=0, samples=1, studies=2, images=3, frontal=2, lateral=1,
        bytes=len(data), sha256=hashlib.sha256(data).hexdigest(), timeline_lengths=[2], medst_version="0.1.0",
        options={"image_size": 64}, input_fingerprint="f1",
    )  # fmt: skip
    assert is_complete(entry, len(data), plan) and matches_plan(entry, plan)
    assert not is_complete(entry, len(data) - 512)  # truncated or still being copied
    assert not is_complete(entry, None)  # no tar
    other = plan.model_copy(update={"options": {"image_size": 96}})
    assert not matches_plan(entry, other) and not is_complete(entry, len(data), other)
    short = ends_early(Path("train-000000.tar"), 0, entry.samples)
    assert short is not None and "ends early (0 of 1 samples)" in str(short)
