"""Tar members a shard may hold: regular files with plain relative names, nothing else.

`medst shard` writes exactly that. A tar with an absolute or ``..`` name, a link or a device is not one of ours
(a hand-made or tampered shard); readers refuse it as a whole rather than skip the member, so nothing from it
reaches training and nothing is ever written outside the shard folder.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any

from medst.errors import UserInputError


class UnsafeShardError(UserInputError):
    """A shard tar holding a member that `medst shard` never writes (escaping name, link, device)."""


def check_member(member: tarfile.TarInfo, shard: Path) -> None:
    """Raise `UnsafeShardError` unless `member` is a regular file with a relative name without ``..``."""
    name = member.name
    parts = PurePosixPath(name).parts
    if not member.isreg():
        kind = "link" if member.issym() or member.islnk() else "device or special file"
        raise UnsafeShardError(f"{shard}: member {name!r} is a {kind}; refusing a shard medst did not write")
    if name.startswith(("/", "\\")) or ".." in parts or not parts or ":" in parts[0]:
        raise UnsafeShardError(f"{shard}: member name {name!r} leaves the shard; refusing it")


def check_members(members: Iterable[tarfile.TarInfo], shard: Path) -> None:
    for member in members:
        check_member(member, shard)


def safe_tar_files(fileobj: IO[bytes], shard: Path) -> Iterator[dict[str, Any]]:
    """Stream ``{"fname", "data", "__url__"}`` dicts (webdataset's layout) of a tar, checking every member first."""
    with tarfile.open(fileobj=fileobj, mode="r|*") as stream:
        for member in stream:
            check_member(member, shard)
            handle = stream.extractfile(member)
            data = handle.read() if handle is not None else b""
            yield {"fname": member.name, "data": data, "__url__": str(shard)}
            stream.members = []  # type: ignore[attr-defined]  # a stream keeps every TarInfo otherwise
