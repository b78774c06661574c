"""Work in worker processes that survive a dead worker: chunked maps over many small items (headers, report files,
report texts) and the shard writer's jobs.

A worker killed from outside (the out-of-memory killer, ``kill -9``) breaks a process pool: `multiprocessing.Pool`
then waits forever for the lost task, `ProcessPoolExecutor` fails every pending task without saying which one was
running. `run_jobs` instead starts a fresh pool, runs each job that was in flight again once, alone, so that a
job which kills its worker every time is named in a `WorkerDiedError`; the run never hangs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from medst.errors import WorkerDiedError

T = TypeVar("T")
R = TypeVar("R")


def run_jobs(
    fn: Callable[[T], R],
    jobs: Sequence[T],
    workers: int,
    on_result: Callable[[int, R], None],
    *,
    names: Sequence[str] | None = None,
    initializer: Callable[[], None] | None = None,
    context: str | None = None,
    retries: int = 1,
) -> None:
    """Run ``fn(jobs[i])`` in up to ``workers`` processes and call ``on_result(i, result)`` in this process as
    each finishes (in completion order).

    A job in flight when a worker dies is run again (a job run again runs alone, so a second death names it);
    a job lost more than ``retries`` times raises `WorkerDiedError` naming it (``names[i]``, default "job i").
    An exception raised by ``fn`` itself propagates unchanged. ``fn``, the jobs and the results must pickle.
    ``context`` is the multiprocessing start method (None: the platform's default).
    """
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    label = list(names) if names is not None else [f"job {i}" for i in range(len(jobs))]
    lost = [0] * len(jobs)
    todo = list(range(len(jobs)))
    while todo:
        # Jobs that were in flight when a worker died go first, one at a time.
        todo.sort(key=lambda i: lost[i] == 0)
        broken: list[int] = []
        with ProcessPoolExecutor(
            max_workers=max(1, min(workers, len(todo))),
            mp_context=mp.get_context(context),
            initializer=initializer,
        ) as pool:
            queue = list(reversed(todo))
            running: dict[Future[R], int] = {}
            while (queue or running) and not broken:
                while queue and len(running) < workers:
                    suspect = lost[queue[-1]] > 0
                    if running and (suspect or any(lost[i] > 0 for i in running.values())):
                        break
                    i = queue.pop()
                    running[pool.submit(fn, jobs[i])] = i
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    i = running.pop(fut)
                    try:
                        result = fut.result()
                    except BrokenProcessPool:
                        broken.append(i)
                        continue
                    on_result(i, result)
            if broken:
                # Every job still in flight was lost with the pool (their futures fail the same way).
                broken.extend(running.values())
            todo = sorted(set(broken)) + list(reversed(queue)) if broken else []
        for i in sorted(set(broken)):
            lost[i] += 1
            if lost[i] > retries:
                raise WorkerDiedError(
                    f"a worker process died {lost[i]} times while working on {label[i]} (killed from outside, "
                    "most often by the out-of-memory killer); use fewer --workers or more memory, then re-run"
                )
        if broken:
            print(
                f"warning: a worker process died (killed from outside, e.g. out of memory) while working on "
                f"{', '.join(label[i] for i in sorted(set(broken)))}; running it again",
                file=sys.stderr,
            )


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

    With ``workers > 1`` and more than one piece the pieces go to worker processes (``fn`` and the pieces must
    pickle; a dead worker's piece is run again once, see `run_jobs`); otherwise they run here. A progress bar of
    ``total`` items advances by the rows each piece returns.
    """
    from tqdm import tqdm

    bar: Any = tqdm(total=total, disable=not progress, desc=desc, unit=unit)
    with bar:
        if workers > 1 and len(pieces) > 1:
            results: dict[int, list[R]] = {}

            def keep(i: int, result: list[R]) -> None:
                results[i] = result
                bar.update(len(result))

            run_jobs(fn, pieces, workers, keep, names=[f"{desc} chunk {i}" for i in range(len(pieces))])
            return [row for i in range(len(pieces)) for row in results[i]]
        rows: list[R] = []
        for piece in pieces:
            result = fn(piece)
            rows.extend(result)
            bar.update(len(result))
    return rows
