"""Patients -> shards: pseudonymous keys, a deterministic balanced assignment, and `--part i/n` selection.

The assignment depends only on the set of patients, their image counts and the options, never on row order of the
input table or on the number of workers, so every part of a multi-machine build computes the same plan.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from dataclasses import dataclass, field


def pseudonym(salt: str, kind: str, raw_id: str) -> str:
    """First 16 hex digits of sha256(salt, kind, raw id): a stable key that does not reveal the raw id."""
    digest = hashlib.sha256(f"{salt}\x1f{kind}\x1f{raw_id}".encode()).hexdigest()
    return digest[:16]


@dataclass(frozen=True)
class PatientWork:
    """One patient's timeline to write: its key, raw subject id (never written), split and image count."""

    key: str
    subject_id: str
    split: str
    images: int


@dataclass
class ShardJob:
    """One shard to write: its name and its patients in tar order (sorted by key)."""

    split: str
    index: int
    patients: list[PatientWork] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.split}-{self.index:06d}"

    @property
    def images(self) -> int:
        return sum(p.images for p in self.patients)


def assign_shards(patients: list[PatientWork], samples_per_shard: int) -> list[ShardJob]:
    """Split patients into shards per split, balanced by image count, at most `samples_per_shard` each.

    Per split: ceil(P / K) shards; patients taken by decreasing image count (ties by key) go to the shard with the
    fewest images that still has room (ties by shard index). Returns jobs sorted by (split, index).
    """
    by_split: dict[str, list[PatientWork]] = {}
    for p in patients:
        by_split.setdefault(p.split, []).append(p)
    jobs: list[ShardJob] = []
    for split in sorted(by_split):
        group = sorted(by_split[split], key=lambda p: (-p.images, p.key))
        n_shards = max(1, math.ceil(len(group) / samples_per_shard))
        split_jobs = [ShardJob(split, i) for i in range(n_shards)]
        heap = [(0, 0, i) for i in range(n_shards)]  # (images, samples, index)
        for p in group:
            images, samples, i = heapq.heappop(heap)
            split_jobs[i].patients.append(p)
            if samples + 1 < samples_per_shard:
                heapq.heappush(heap, (images + p.images, samples + 1, i))
        for job in split_jobs:
            job.patients.sort(key=lambda p: p.key)
        jobs.extend(split_jobs)
    return jobs


def select_part(jobs: list[ShardJob], part: tuple[int, int]) -> list[ShardJob]:
    """Jobs of part i of n: the j-th job overall (in (split, index) order) when j % n == i; disjoint, covering."""
    i, n = part
    return [job for j, job in enumerate(jobs) if j % n == i]


def parse_part(text: str) -> tuple[int, int]:
    """'i/n' -> (i, n), 0-based i (a Slurm array task id works as is)."""
    try:
        left, right = text.split("/")
        return int(left), int(right)
    except ValueError as err:
        raise ValueError(f"--part must look like i/n (e.g. 0/4), got {text!r}") from err
