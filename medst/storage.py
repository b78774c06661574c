"""Where a stage's input lives: a local path or an fsspec URL (``http(s)://``, ``s3://``, ``gs://``, ...).

`Location` is the type configs use for such an input: a local path stays a `pathlib.Path` (every local code path is
exactly as before), a ``file://`` URL becomes the `Path` it names, and any other URL becomes a `RemotePath`, which
offers the few `Path` methods readers use (``/``, ``name``, ``is_file``, ``read_bytes``, ``read_text``, ``stat``,
``open``) over fsspec. A `RemotePath` is only a URL string: it pickles into loader workers, which open their own
filesystem.

Errors: a missing object is a `UserInputError` naming its URL (one line, exit 2); a transient failure (a dropped
connection, a 5xx, a timeout) is retried `RETRIES` times with a growing pause, then becomes a `UserInputError`
naming the URL and the last cause. A stream that breaks in the middle is re-opened and resumed at the byte where it
stopped, so a reader never sees a gap. S3 credentials and endpoint come from the usual environment variables
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``), nothing else.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Annotated, Any, NamedTuple, TypeVar
from urllib.parse import unquote, urlparse

from pydantic import PlainSerializer, PlainValidator, SerializationInfo, WithJsonSchema

from medst.errors import UserInputError

RETRIES = 3
"""Extra attempts after a transient failure (so 4 in all)."""
RETRY_PAUSE_S = 0.5
"""Pause before the first retry; doubled before each later one."""
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_EXTRAS = {
    "s3": "s3fs (pip install 'medst[s3]')",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "az": "adlfs",
    "abfs": "adlfs",
}

T = TypeVar("T")


def is_url(text: str) -> bool:
    """True for ``scheme://...`` (Windows drive paths such as ``C:\\x`` are not URLs)."""
    match = _URL.match(text)
    return match is not None and len(match.group(1)) > 1


class RemoteStat(NamedTuple):
    st_size: int


def _storage_options(scheme: str) -> dict[str, Any]:
    """Filesystem options that fsspec must see. An S3 endpoint set in the environment (``AWS_ENDPOINT_URL_S3`` or
    ``AWS_ENDPOINT_URL``, e.g. MinIO or Ceph) is passed explicitly: fsspec caches one filesystem per set of options,
    so an endpoint that changes within a process would otherwise keep reaching the first one."""
    if scheme in ("s3", "s3a"):
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            return {"endpoint_url": endpoint}
    return {}


class RemotePath:
    """A file or folder behind an fsspec URL, with the read side of `pathlib.Path` that medst's readers use."""

    __slots__ = ("url",)

    def __init__(self, url: str) -> None:
        stripped = url.rstrip("/")
        self.url = url if stripped.endswith(":") else stripped

    # -- naming
    def __truediv__(self, other: str | Path) -> RemotePath:
        return RemotePath(f"{self.url}/{str(other).lstrip('/')}")

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"RemotePath({self.url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemotePath) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    def __fspath__(self) -> str:
        # Libraries that take "a path" (pyarrow, polars) read the URL as a path with fsspec; plain `open` fails.
        return self.url

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def stem(self) -> str:
        return self.name.rsplit(".", 1)[0] if "." in self.name else self.name

    @property
    def scheme(self) -> str:
        return urlparse(self.url).scheme

    # -- reading
    def _fs(self) -> tuple[Any, str]:
        import fsspec

        try:
            fs, path = fsspec.core.url_to_fs(self.url, **_storage_options(self.scheme))
        except (ImportError, ValueError) as err:
            need = _EXTRAS.get(self.scheme)
            hint = f": install {need}" if need else f" ({err})"
            raise UserInputError(f"{self.url}: cannot read {self.scheme}:// URLs{hint}") from None
        return fs, path

    def info(self) -> dict[str, Any] | None:
        """fsspec's info of the object, or None when there is none (a folder URL on HTTP counts as none)."""
        fs, path = self._fs()

        def call() -> dict[str, Any] | None:
            try:
                return dict(fs.info(path))
            except FileNotFoundError as err:
                if _missing(err):
                    return None
                raise

        return _retrying(self.url, call)

    def is_file(self) -> bool:
        info = self.info()
        return info is not None and info.get("type", "file") == "file"

    def exists(self) -> bool:
        return self.info() is not None

    def stat(self) -> RemoteStat:
        info = self.info()
        if info is None or info.get("size") is None:
            raise UserInputError(f"{self.url}: no such object")
        return RemoteStat(int(info["size"]))

    def read_bytes_if_exists(self) -> bytes | None:
        """The object's bytes, or None when there is no such object (one request instead of a check and a read)."""
        fs, path = self._fs()

        def call() -> bytes | None:
            try:
                return bytes(fs.cat_file(path))
            except Exception as err:  # only a missing object is an answer; anything else is retried
                if _missing(err):
                    return None
                raise

        return _retrying(self.url, call)

    def read_bytes(self) -> bytes:
        fs, path = self._fs()
        return _retrying(self.url, lambda: bytes(fs.cat_file(path)))

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> None:
        """Store ``data`` as this object (one PUT: readers see the old object or the new one, never a part)."""
        fs, path = self._fs()
        _retrying(self.url, lambda: fs.pipe_file(path, data), "write")

    def upload(self, local: Path) -> None:
        """Store the local file ``local`` as this object (object stores make it visible only once complete)."""
        fs, path = self._fs()
        _retrying(self.url, lambda: fs.put_file(str(local), path), "write")

    def open(self, mode: str = "rb") -> IO[bytes]:
        """A forward-only byte stream of the object that survives transient failures (see the module doc)."""
        if mode != "rb":
            raise ValueError(f"{self.url}: only 'rb' is supported, not {mode!r}")
        return io.BufferedReader(_ResumingStream(self), buffer_size=1 << 20)

    def _open_at(self, offset: int) -> IO[bytes]:
        fs, path = self._fs()
        # HTTP: a plain stream (block_size=0) needs no range support from the server; the offset of a resumed
        # stream is skipped by reading. Object stores serve ranges, so they seek.
        streaming = self.scheme in ("http", "https")
        kwargs: dict[str, Any] = {"block_size": 0} if streaming else {}
        handle: IO[bytes] = fs.open(path, "rb", **kwargs)
        if offset:
            if not streaming:  # an HTTP stream file claims to seek but cannot
                handle.seek(offset)
            else:
                left = offset
                while left:
                    chunk = handle.read(min(left, 1 << 20))
                    if not chunk:
                        raise OSError(f"the object ended before byte {offset} on re-opening")
                    left -= len(chunk)
        return handle


class _ResumingStream(io.RawIOBase):
    """Raw reads of a `RemotePath`; a read that fails transiently re-opens the object at the current byte."""

    def __init__(self, path: RemotePath) -> None:
        self.path = path
        self.pos = 0
        self.handle: IO[bytes] | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        def read() -> bytes:
            if self.handle is None:
                self.handle = self.path._open_at(self.pos)
            try:
                return self.handle.read(len(buffer))
            except BaseException:
                self._drop()
                raise

        data = _retrying(self.path.url, read)
        buffer[: len(data)] = data
        self.pos += len(data)
        return len(data)

    def _drop(self) -> None:
        handle, self.handle = self.handle, None
        if handle is not None:
            # A broken connection may fail to close; it is dropped either way.
            with contextlib.suppress(Exception):
                handle.close()

    def close(self) -> None:
        self._drop()
        super().close()


def _permanent(err: BaseException) -> bool:
    """A failure that a retry cannot fix: a missing object, no permission, a client error (4xx but 408/429)."""
    if isinstance(err, (PermissionError, IsADirectoryError, UserInputError)):
        return True
    status = getattr(err, "status", None) or getattr(err, "code", None)
    return isinstance(status, int) and 400 <= status < 500 and status not in (408, 429)


def _missing(err: BaseException) -> bool:
    """A missing object: `FileNotFoundError` that is not fsspec's HTTP wrapping of a connection failure."""
    if any(getattr(e, "status", None) in (404, 410) for e in (err, err.__cause__)):  # HTTP's own "not found"
        return True
    # S3's own "not found" (a bucket that does not exist), which s3fs wraps in a FileNotFoundError.
    for e in (err, err.__cause__):
        response = getattr(e, "response", None)
        code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
        if code in ("NoSuchBucket", "NoSuchKey"):
            return True
    return isinstance(err, FileNotFoundError) and (
        err.__cause__ is None or isinstance(err.__cause__, FileNotFoundError)
    )


def _retrying(url: str, call: Callable[[], T], verb: str = "read") -> T:
    """``call()`` with `RETRIES` retries of transient failures; every failure ends as one `UserInputError`
    line naming ``url``."""
    pause = RETRY_PAUSE_S
    for attempt in range(RETRIES + 1):
        try:
            return call()
        except UserInputError:
            raise
        except Exception as err:  # network stacks raise many kinds; each is reported or retried
            if _missing(err):
                raise UserInputError(f"{url}: no such object") from None
            # fsspec's HTTP `info` calls an unreachable server "not found": report the connection failure.
            cause: BaseException = (
                err.__cause__ if isinstance(err, FileNotFoundError) and err.__cause__ else err
            )
            if _permanent(cause) or attempt == RETRIES:
                tries = "" if _permanent(cause) else f" (after {RETRIES + 1} tries)"
                raise UserInputError(f"{url}: cannot {verb}{tries}: {_describe(cause)}") from None
            time.sleep(pause)
            pause *= 2
    raise AssertionError("unreachable")


def retrying(url: str, call: Callable[[], T], verb: str = "read") -> T:
    """``call()`` (one fsspec request about ``url``) under the retry policy of this module: transient failures
    retried `RETRIES` times, then, like a missing object, one `UserInputError` line naming ``url``."""
    return _retrying(url, call, verb)


def _describe(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}"[:300] if text else type(err).__name__


def to_location(value: object) -> Path | RemotePath:
    """A path or URL (str, `Path`, `RemotePath`) as a `Location`: ``file://`` URLs become local paths."""
    if isinstance(value, RemotePath | Path):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a path or URL, got {type(value).__name__}")
    if not is_url(value):
        return Path(value)
    parsed = urlparse(value)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"{value}: a file:// URL must name a local path (file:///path)")
        return Path(unquote(parsed.path))
    return RemotePath(value)


def _location_or_none(value: object) -> Path | RemotePath | None:
    return None if value is None else to_location(value)


def _serialise(value: Path | RemotePath | None, info: SerializationInfo) -> object:
    # A `Path` stays a `Path` in Python dumps (as before); a URL is always its string.
    if value is None or (isinstance(value, Path) and not info.mode_is_json()):
        return value
    return str(value)


Location = Annotated[
    Path | RemotePath,
    PlainValidator(to_location),
    PlainSerializer(_serialise),
    WithJsonSchema(
        {"type": "string", "description": "a local path or an fsspec URL (http(s)://, s3://, ...)"}
    ),
]
"""A local path (kept a `Path`) or a URL (a `RemotePath`); serialised as its string."""

OptionalLocation = Annotated[
    Path | RemotePath | None,
    PlainValidator(_location_or_none),
    PlainSerializer(_serialise),
    WithJsonSchema({"type": ["string", "null"], "description": "a local path or an fsspec URL, or none"}),
]
