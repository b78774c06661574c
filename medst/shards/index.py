"""The shard index: the dataset plan (`plan.json`), one JSON per complete shard (`index/{name}.json`), a dataset
summary and its plot.

`plan.json` names every shard of the dataset (all parts), the fingerprint of the input it was planned from and the
options. An index entry is written (atomically) only after its tar has been renamed into place, so "the plan names
it, the entry exists, records the plan's input and options, and its tar has the recorded size" is the definition
of a complete shard (`medst.shards.format.is_complete`), for the writer's resume and for every reader. Readers never glob tars: a shard folder is what
its plan and index say. That is also what lets readers take a URL (`medst.storage.Location`): an object store or
a plain HTTP server needs no listing, only the plan's names.
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path
from typing import overload

from medst.errors import UserInputError
from medst.schemas.shards import PLAN_FILE, ShardIndexEntry, ShardPlan, ShardSummary
from medst.storage import Location, RemotePath

from .format import is_complete, matches_plan

INDEX_DIR = "index"
SHARD_NAME = re.compile(r"^[A-Za-z0-9_]+-[0-9]{6}$")
"""The names `medst shard` gives its shards (`{split}-{index:06d}`); only files so named are ever deleted."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary sibling, fsync, rename: readers see all or nothing."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@overload
def entry_path(out: Path, name: str) -> Path: ...
@overload
def entry_path(out: RemotePath, name: str) -> RemotePath: ...
@overload
def entry_path(out: Location, name: str) -> Location: ...
def entry_path(out: Location, name: str) -> Location:
    """Where shard `name`'s index entry lives (a local path, or a URL for a folder in a store)."""
    return out / INDEX_DIR / f"{name}.json"


def write_entry(out: Path, entry: ShardIndexEntry) -> None:
    (out / INDEX_DIR).mkdir(parents=True, exist_ok=True)
    data = json.dumps(entry.model_dump(mode="json"), indent=1, sort_keys=True).encode()
    atomic_write_bytes(entry_path(out, Path(entry.shard).stem), data)


def read_entry(out: Location, name: str, plan: ShardPlan | None = None) -> ShardIndexEntry | None:
    """The index entry of shard `name` when the shard is complete (`format.is_complete`: entry present, tar of the
    recorded size and, when `plan` is given, built from the plan's input with the plan's options)."""
    path = entry_path(out, name)
    if isinstance(path, RemotePath):
        # Over a network every request counts: one GET for the entry, one HEAD for the tar.
        data = path.read_bytes_if_exists()
    else:
        data = path.read_bytes() if path.is_file() else None
    if data is None:
        return None
    try:
        entry = ShardIndexEntry.model_validate_json(data)
    except ValueError:
        return None
    if plan is not None and not matches_plan(entry, plan):
        return None  # of another build: decided before the tar's size is asked for (a request over a network)
    return entry if is_complete(entry, tar_size(out / entry.shard)) else None


def tar_size(tar: Location) -> int | None:
    """The size in bytes of a shard tar (one HEAD request for a URL), or None when it is not there."""
    if isinstance(tar, RemotePath):
        info = tar.info()
        size = None if info is None else info.get("size")
        return None if size is None else int(size)
    return tar.stat().st_size if tar.is_file() else None


def write_plan(out: Path, plan: ShardPlan) -> None:
    # No `build` key when there is no build block: such a plan reads the same as before the block existed.
    data = json.dumps(plan.model_dump(mode="json", exclude_none=True), indent=1, sort_keys=True).encode()
    atomic_write_bytes(out / PLAN_FILE, data)


def read_plan(shards: Location) -> ShardPlan:
    """The dataset plan of a shard folder; `UserInputError` when there is none (not a `medst shard` folder, or
    one written before plans existed)."""
    path = shards / PLAN_FILE
    if not path.is_file():
        if isinstance(shards, RemotePath):
            raise UserInputError(
                f"{shards} is not a shard folder (no {PLAN_FILE} at {path}); check the URL, or run `medst shard`"
            )
        if (shards / INDEX_DIR).is_dir():
            raise UserInputError(
                f"{shards} has no {PLAN_FILE} (written by an older medst, or not by `medst shard`); "
                f"re-run `medst shard SEQ -o {shards} --force`"
            )
        raise UserInputError(
            f"{shards} is not a shard folder (no {PLAN_FILE} inside); run `medst shard` first"
        )
    try:
        return ShardPlan.model_validate_json(path.read_bytes())
    except ValueError as err:
        raise UserInputError(
            f"{path} is damaged ({type(err).__name__}); re-run `medst shard` with --force"
        ) from err


def list_entries(shards: Location, split: str | None = None) -> list[ShardIndexEntry]:
    """Every complete shard of the folder's plan (optionally of one split), in plan order."""
    plan = read_plan(shards)
    entries = []
    for name in plan.shards:
        if split is not None and not name.startswith(f"{split}-"):
            continue
        entry = read_entry(shards, name, plan)
        if entry is not None:
            entries.append(entry)
    return entries


def missing_shards(shards: Location, split: str | None = None) -> list[str]:
    """Shards the plan names (optionally of one split) that are not complete: parts not built (yet), or
    damaged."""
    plan = read_plan(shards)
    return [
        name
        for name in plan.shards
        if (split is None or name.startswith(f"{split}-")) and read_entry(shards, name, plan) is None
    ]


def summarise(
    out: Path,
    plan: ShardPlan,
    options: dict[str, object],
    medst_version: str,
    expected: list[str],
    built_now: int,
    skipped_now: int,
    rejects: int,
) -> ShardSummary:
    """Totals over every complete shard in `out`; `expected` is the full plan (all parts)."""
    entries = [e for e in (read_entry(out, name, plan) for name in expected) if e is not None]
    splits: dict[str, dict[str, int]] = {}
    with_lateral = frontal_only = fallbacks = 0
    for e in entries:
        s = splits.setdefault(
            e.split,
            {"shards": 0, "samples": 0, "studies": 0, "images": 0, "frontal": 0, "lateral": 0, "bytes": 0},
        )
        s["shards"] += 1
        for k in ("samples", "studies", "images", "frontal", "lateral", "bytes"):
            s[k] += getattr(e, k)
        with_lateral += e.lateral
        frontal_only += e.studies - e.lateral
        fallbacks += e.intensity_fallbacks
    return ShardSummary(
        medst_version=medst_version,
        options=options,
        expected_shards=len(expected),
        complete_shards=len(entries),
        complete=len(entries) == len(expected),
        built_now=built_now,
        skipped_now=skipped_now,
        rejects=rejects,
        splits=splits,
        studies_with_lateral=with_lateral,
        studies_frontal_only=frontal_only,
        intensity_fallbacks=fallbacks,
    )


def write_summary(out: Path, summary: ShardSummary) -> None:
    data = json.dumps(summary.model_dump(mode="json"), indent=1, sort_keys=True).encode()
    atomic_write_bytes(out / "summary.json", data)


def plot_summary(out: Path, entries: list[ShardIndexEntry], path: Path) -> None:
    """PNG: shard sizes (MB) per shard, and studies with / without a lateral image per split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    names = [Path(e.shard).stem for e in entries]
    ax1.bar(range(len(entries)), [e.bytes / 1e6 for e in entries], color="tab:blue")
    ax1.set_xlabel("shard (in name order)")
    ax1.set_ylabel("size (MB)")
    total = sum(e.bytes for e in entries)
    size = f"{total / 1e9:.2f} GB" if total >= 1e9 else f"{total / 1e6:.1f} MB"
    ax1.set_title(f"Shard sizes: {len(entries)} shards, {size} in all")
    if len(names) <= 12:
        ax1.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
    splits = sorted({e.split for e in entries})
    both = [sum(e.lateral for e in entries if e.split == s) for s in splits]
    only = [sum(e.studies - e.lateral for e in entries if e.split == s) for s in splits]
    ax2.bar(splits, both, label="frontal + lateral", color="tab:green")
    ax2.bar(splits, only, bottom=both, label="frontal only", color="tab:orange")
    ax2.set_xlabel("split")
    ax2.set_ylabel("studies")
    ax2.set_title("Studies with and without a lateral image, per split")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
