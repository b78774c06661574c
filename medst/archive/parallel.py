"""Chunked work over many small items (headers, report files, report texts), in worker processes or in-process."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def map_chunks(
    fn: Callable[[T], list[R]],
    pieces: Sequence[T],
    workers: int,
    *,
    total: int,
    progress: bool,
    desc: str,
    unit: str,
) -> list[R]:
    """``fn`` over ``pieces`` (each returning a list of rows), concatenated in the order of ``pieces``.

    With ``workers > 1`` and more than one piece the pieces go to a process pool (``fn`` and the pieces must
    pickle); otherwise they run here. A progress bar of ``total`` items advances by the rows each piece returns.
    """
    from medst.progress import progress as show_progress

    rows: list[R] = []
    bar: Any = show_progress(total=total, enabled=progress, desc=desc, unit=unit)
    with bar:
        if workers > 1 and len(pieces) > 1:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(max_workers=workers) as pool:
                for result in pool.map(fn, pieces):
                    rows.extend(result)
                    bar.update(len(result))
        else:
            for piece in pieces:
                result = fn(piece)
                rows.extend(result)
                bar.update(len(result))
    return rows
