"""The one shard member reader of every stage (loader, inspect, embed, the trainer's text pass); samples are
grouped from its members, and their layout read, by `medst.shards.format`.

Tar members a shard may hold: regular files with plain relative names, nothing else. `medst shard` writes exactly
that. A tar with an absolute or ``..`` name, a link or a device is not one of ours (a hand-made or tampered
shard); readers refuse it as a whole rather than skip the member, so nothing from it reaches training and nothing
is ever written outside the shard folder.

Members are size-capped before they are read (`MAX_IMAGE_BYTES`, `MAX_TEXT_BYTES`): a huge member never reaches
memory. Stored images are decoded with a pixel cap (`MAX_IMAGE_PIXELS`, checked from the image header first), so a
decompression bomb is refused before it is inflated. A damaged tar (truncated, garbage header) or member gives a
`ShardReadError` whose one-line message names the shard and the member.
"""

from __future__ import annotations

import io
import tarfile
import warnings
import zlib
from collections.abc import Iterable, Iterator
from pathlib import PurePosixPath
from typing import IO

import numpy as np

from medst.errors import UserInputError
from medst.storage import Location

MAX_IMAGE_BYTES = 64 << 20
"""Largest image member read (bytes); a 8192-pixel PNG that `medst shard` writes is far below it."""
MAX_TEXT_BYTES = 1 << 20
"""Largest ``json`` (or other text) member read (bytes): a timeline's metadata and reports are kilobytes."""
MAX_IMAGE_PIXELS = 8192 * 8192
"""Largest stored image decoded (width x height): `medst shard` stores at most 8192 pixels a side."""
TEXT_SUFFIXES = (".json", ".txt", ".cls")
"""Members capped at `MAX_TEXT_BYTES`: any text a WebDataset tar may hold, not only the timeline member."""


class ShardReadError(UserInputError):
    """A shard that cannot be read to its end, or a member that is not what `medst shard` writes."""

    def __init__(self, shard: Location | str, member: str, problem: str) -> None:
        super().__init__(
            f"{shard}: member {member!r}: {problem}; rebuild this shard with `medst shard --force`"
        )
        self.shard = str(shard)
        self.member = member
        self.problem = problem

    def __reduce__(self) -> tuple[type[ShardReadError], tuple[str, str, str]]:
        # Crosses process boundaries (loader workers) with its three arguments.
        return (type(self), (self.shard, self.member, self.problem))


class BadImageError(ValueError):
    """Stored image bytes that do not decode, or decode to more pixels than `MAX_IMAGE_PIXELS`."""


def member_cap(name: str) -> int:
    """The largest size (bytes) a member of this name may have."""
    return MAX_TEXT_BYTES if name.endswith(TEXT_SUFFIXES) else MAX_IMAGE_BYTES


class UnsafeShardError(UserInputError):
    """A shard tar holding a member that `medst shard` never writes (escaping name, link, device)."""


def check_member(member: tarfile.TarInfo, shard: Location) -> None:
    """Raise `UnsafeShardError` unless `member` is a regular file with a relative name without ``..``."""
    name = member.name
    parts = PurePosixPath(name).parts
    if not member.isreg():
        kind = "link" if member.issym() or member.islnk() else "device or special file"
        raise UnsafeShardError(f"{shard}: member {name!r} is a {kind}; refusing a shard medst did not write")
    if name.startswith(("/", "\\")) or ".." in parts or not parts or ":" in parts[0]:
        raise UnsafeShardError(f"{shard}: member name {name!r} leaves the shard; refusing it")


def check_members(members: Iterable[tarfile.TarInfo], shard: Location) -> None:
    for member in members:
        check_member(member, shard)


def read_members(fileobj: IO[bytes], shard: Location) -> Iterator[tuple[str, bytes]]:
    """Stream ``(name, bytes)`` of every member of a shard tar, in tar order.

    Each member is checked (`check_member`) and size-capped (`member_cap`) before its data is read. Raises
    `ShardReadError` naming the shard and the member (or the member after which the tar breaks off).
    """
    last = "(start of the tar)"
    problem = ""
    try:
        with tarfile.open(fileobj=fileobj, mode="r|*") as stream:
            for member in stream:
                check_member(member, shard)
                cap = member_cap(member.name)
                if member.size > cap:
                    raise ShardReadError(
                        shard, member.name, f"{member.size} bytes, over the {cap >> 20} MiB cap of its kind"
                    )
                handle = stream.extractfile(member)
                try:
                    data = handle.read() if handle is not None else b""
                except (tarfile.TarError, EOFError, zlib.error) as err:
                    data, problem = b"", str(err)
                if len(data) != member.size:
                    raise ShardReadError(
                        shard,
                        member.name,
                        f"the tar ends inside this member (truncated: {problem or 'short read'})",
                    )
                last = member.name
                yield member.name, data
                stream.members = []  # type: ignore[attr-defined]  # a stream keeps every TarInfo otherwise
    except (tarfile.TarError, EOFError, zlib.error) as err:
        raise ShardReadError(
            shard, last, f"the tar is damaged or truncated after this member ({err})"
        ) from err


def decode_image(data: bytes) -> np.ndarray:
    """Stored JPEG/PNG bytes -> uint8 grey (H, W). Raises `BadImageError` for bytes that are no image, or an image
    over `MAX_IMAGE_PIXELS` (read from its header before anything is inflated: a decompression bomb)."""
    import cv2
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Our own pixel cap below decides; PIL's bomb warning would only add a line to stderr.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as header:  # lazy: reads the header only
                width, height = header.size
    except Image.DecompressionBombError as err:
        raise BadImageError(f"over the pixel cap, a decompression bomb ({err})") from err
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise BadImageError(f"not an image ({type(err).__name__})") from err
    if width * height > MAX_IMAGE_PIXELS:
        raise BadImageError(
            f"{width}x{height} pixels, over the {MAX_IMAGE_PIXELS} pixel cap (decompression bomb?)"
        )
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise BadImageError("image bytes do not decode")
    return img
