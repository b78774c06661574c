"""Chunked work over many small items (headers, report files, report texts) on the run's job engine
(`medst.executors`: in-process, local worker processes that survive a dead worker, or Ray)."""

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
    ``medst.executors.use_engine("ray")`` (``fn`` and the pieces must pickle; a dead worker's piece is run again
    once, see `medst.executors.run_jobs`); otherwise they run here. A progress bar of ``total`` items advances by
    the rows each piece returns.
    """
    from medst.executors import run_jobs
    from medst.progress import progress as show_progress

    results: dict[int, list[R]] = {}
    bar: Any = show_progress(total=total, enabled=progress, desc=desc, unit=unit)

    def keep(i: int, result: list[R]) -> None:
        results[i] = result
        bar.update(len(result))

    with bar:
        # The engine (local processes or Ray) is the one the command set with `medst.executors.use_engine`.
        run_jobs(fn, pieces, workers, keep, names=[f"{desc} chunk {i}" for i in range(len(pieces))])
    return [row for i in range(len(pieces)) for row in results[i]]
