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

    With ``workers > 1`` and more than one piece the pieces go to worker processes, or to Ray tasks inside
    ``medst.executors.use_engine("ray")`` (``fn`` and the pieces must pickle); otherwise they run here. A progress
    bar of ``total`` items advances by the rows each piece returns.
    """
    from medst.executors import run_jobs
    from medst.progress import progress as show_progress

    results: list[list[R]] = [[] for _ in pieces]
    bar: Any = show_progress(total=total, enabled=progress, desc=desc, unit=unit)
    with bar:
        # The engine (local processes or Ray) is the one the command set with `medst.executors.use_engine`.
        for i, result in run_jobs(
            fn, pieces, workers=workers, start_method=None, describe=lambda _piece: desc
        ):
            results[i] = result
            bar.update(len(result))
    return [row for result in results for row in result]
