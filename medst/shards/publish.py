"""`medst shard -o s3://...`: build in a local staging folder, then publish it to the object store.

The writer needs a real file system (atomic renames, resume, worker processes), so a URL output is built locally
first. The upload keeps the rule of `index.py` on the store: `plan.json` first, then for each shard its tar and only
then its index entry, so a reader that sees an entry finds the whole tar (an object store shows an object only once
its upload is complete). Rejects and the summary come last. A shard whose entry on the store already equals the
local one, with a tar of the recorded size (complete as `medst.shards.format.is_complete` says), is not sent again:
a re-run after an interrupted upload sends only what is missing. The staging folder is kept, so a re-run also
resumes the build itself.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from pathlib import Path

from medst.errors import UserInputError
from medst.schemas.shards import ShardConfig, ShardPlan, ShardSummary
from medst.storage import RemotePath

from .format import is_complete
from .index import PLAN_FILE, entry_path, read_entry, read_plan, tar_size

LAST = ("rejects.parquet", "summary.json", "summary.png")
"""Dataset-level files, uploaded after every shard."""


def default_staging(dest: RemotePath) -> Path:
    """A local folder named after the URL, so every run towards the same URL finds the same staging folder."""
    digest = hashlib.sha256(dest.url.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "medst-staging" / digest


def write_shards_to_url(config: ShardConfig, build: Callable[[ShardConfig], ShardSummary]) -> ShardSummary:
    """`write_shards` for a URL `config.out`: ``build`` (the local writer) into the staging folder, then
    `publish` (also when the build stops on the --min-kept check, which it does after writing everything; that
    error is raised afterwards)."""
    dest = config.out
    assert isinstance(dest, RemotePath)
    if dest.scheme in ("http", "https"):
        raise UserInputError(
            f"--out {dest}: http(s) URLs are read-only here; write to a folder or an object store (s3://...)"
        )
    staging = config.staging or default_staging(dest)
    staging.mkdir(parents=True, exist_ok=True)
    try:
        summary = build(config.model_copy(update={"out": staging}))
        failure: UserInputError | None = None
    except UserInputError as err:
        if not (staging / PLAN_FILE).is_file():
            raise
        failure = err
    plan = read_plan(staging)
    _check_provenance(dest, plan, config.force)
    publish(staging, dest, plan.shards)
    if failure is not None:
        raise failure
    return summary


def _check_provenance(dest: RemotePath, plan: ShardPlan, force: bool) -> None:
    """Refuse to mix two builds in one store folder (as the local writer does), unless ``force``."""
    remote = dest / PLAN_FILE
    if force or not remote.is_file():
        return
    try:
        other = ShardPlan.model_validate_json(remote.read_bytes())
    except ValueError:
        return  # a damaged plan is replaced
    if other.input_fingerprint != plan.input_fingerprint or other.options != plan.options:
        raise UserInputError(
            f"{dest} holds shards built from another input or with other options; pass --force to replace them"
        )


def publish(staging: Path, dest: RemotePath, names: list[str]) -> int:
    """Upload the complete shards of ``names`` (and the dataset files) from ``staging`` to ``dest`` in the
    order described in the module docstring; returns how many shards were sent."""
    (dest / PLAN_FILE).write_bytes((staging / PLAN_FILE).read_bytes())
    sent = 0
    for name in names:
        entry = read_entry(staging, name)
        if entry is None:
            continue  # another --part builds it
        data = entry_path(staging, name).read_bytes()
        remote_entry, remote_tar = entry_path(dest, name), dest / entry.shard
        if remote_entry.read_bytes_if_exists() == data and is_complete(entry, tar_size(remote_tar)):
            continue
        remote_tar.upload(staging / entry.shard)
        remote_entry.write_bytes(data)  # last: the shard is complete on the store from here on
        sent += 1
    rejects = staging / "rejects"
    for path in sorted(rejects.glob("*.parquet")) if rejects.is_dir() else []:
        (dest / "rejects" / path.name).upload(path)
    for name in LAST:
        if (staging / name).is_file():
            (dest / name).upload(staging / name)
    return sent
