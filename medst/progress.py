"""Progress reporting that suits where stderr goes: a tqdm bar on a terminal, plain lines in a log file.

``progress(iterable=None, *, total=None, desc="", unit="it", enabled=True, initial=0, **tqdm_options)`` returns
an object with tqdm's interface as medst uses it (iteration, ``update``, ``close``, ``set_postfix``, ``write``,
``with``). When stderr is a terminal (or a Jupyter kernel runs us) it is a tqdm bar, as before. Otherwise, as
under a batch scheduler or with ``2> log``, no ``\\r`` frames are written: one line such as
``shards: 12/40 shard (30%) 61 s, loss=0.52`` every ``MEDST_PROGRESS_INTERVAL`` seconds (default 30) and one at
the end. ``enabled=False`` shows nothing.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

DEFAULT_INTERVAL_S = 30.0


def interval_s() -> float:
    """Seconds between plain progress lines (``MEDST_PROGRESS_INTERVAL``, default 30)."""
    try:
        value = float(os.environ.get("MEDST_PROGRESS_INTERVAL", DEFAULT_INTERVAL_S))
    except ValueError:
        return DEFAULT_INTERVAL_S
    return value if value >= 0 else DEFAULT_INTERVAL_S


def _interactive() -> bool:
    if "ipykernel" in sys.modules:  # a notebook: tqdm.auto draws a widget, not \r frames
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


class PlainProgress:
    """tqdm's interface, writing a plain line to stderr every ``interval`` seconds and one when closed."""

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        total: float | None = None,
        desc: str | None = None,
        unit: str = "it",
        initial: float = 0,
        interval: float | None = None,
    ) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total = total
        self.desc = desc or "progress"
        self.unit = unit
        self.n = initial
        self._start_n = initial
        self.interval = interval_s() if interval is None else interval
        self._start = time.monotonic()
        self._last = self._start
        self._postfix = ""
        self._closed = False

    def _line(self) -> str:
        elapsed = time.monotonic() - self._start
        done = f"{self.n:g}" + (f"/{self.total:g}" if self.total else "")
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        rate = (self.n - self._start_n) / elapsed if elapsed > 0 else 0.0
        extra = f", {self._postfix}" if self._postfix else ""
        return f"{self.desc}: {done} {self.unit}{pct} {elapsed:.0f} s, {rate:.3g} {self.unit}/s{extra}"

    def _emit(self) -> None:
        print(self._line(), file=sys.stderr, flush=True)
        self._last = time.monotonic()

    def update(self, n: float = 1) -> None:
        self.n += n
        if time.monotonic() - self._last >= self.interval:
            self._emit()

    def set_postfix(self, values: dict[str, Any] | None = None, refresh: bool = True, **kwargs: Any) -> None:
        self._postfix = ", ".join(f"{k}={v}" for k, v in {**(values or {}), **kwargs}.items())

    def write(self, text: str, file: Any = None) -> None:
        print(text, file=file or sys.stdout, flush=True)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._emit()

    def __iter__(self) -> Iterator[Any]:
        assert self.iterable is not None, "progress(iterable) is needed to iterate"
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(
    iterable: Iterable[Any] | None = None,
    *,
    total: float | None = None,
    desc: str | None = None,
    unit: str = "it",
    enabled: bool = True,
    initial: float = 0,
    **tqdm_options: Any,
) -> Any:
    """A progress reporter for ``iterable`` or ``total`` items (see the module docstring)."""
    if not enabled:
        from tqdm import tqdm

        return tqdm(iterable, total=total, disable=True)
    if _interactive():
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, **tqdm_options)
    return PlainProgress(iterable, total=total, desc=desc, unit=unit, initial=initial)
