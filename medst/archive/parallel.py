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
    timeout_s: float | None = None,
) -> None:
    """Run ``fn(jobs[i])`` in up to ``workers`` processes and call ``on_result(i, result)`` in this process as
    each finishes (in completion order).

    A job in flight when a worker dies, or running longer than ``timeout_s`` (a stuck worker: its pool is
    killed), is run again (a job run again runs alone, so a second loss names it); a job lost more than
    ``retries`` times raises `WorkerDiedError` naming it (``names[i]``, default "job i"). An exception raised by
    ``fn`` itself propagates unchanged. ``fn``, the jobs and the results must pickle. ``context`` is the
    multiprocessing start method (None: the platform's default).
    """
    import multiprocessing as mp
    import time
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    label = list(names) if names is not None else [f"job {i}" for i in range(len(jobs))]
    lost = [0] * len(jobs)
    todo = list(range(len(jobs)))
    while todo:
        # Jobs that were in flight when a worker died go first, one at a time.
        todo.sort(key=lambda i: lost[i] == 0)
        broken: list[int] = []  # jobs lost with their worker (charged a retry)
        stuck: list[int] = []  # jobs over the time limit (charged a retry)
        pool = ProcessPoolExecutor(
            max_workers=max(1, min(workers, len(todo))),
            mp_context=mp.get_context(context),
            initializer=initializer,
        )
        queue = list(reversed(todo))
        running: dict[Future[R], int] = {}
        started: dict[Future[R], float] = {}
        ended = False
        try:
            while (queue or running) and not broken and not stuck:
                while queue and len(running) < workers:
                    suspect = lost[queue[-1]] > 0
                    if running and (suspect or any(lost[i] > 0 for i in running.values())):
                        break
                    i = queue.pop()
                    fut = pool.submit(fn, jobs[i])
                    running[fut], started[fut] = i, time.monotonic()
                wait_s = None
                if timeout_s is not None:
                    wait_s = max(0.0, min(started[f] for f in running) + timeout_s - time.monotonic())
                done, _ = wait(running, timeout=wait_s, return_when=FIRST_COMPLETED)
                for fut in done:
                    i = running.pop(fut)
                    try:
                        result = fut.result()
                    except BrokenProcessPool:
                        broken.append(i)
                        continue
                    on_result(i, result)
                if timeout_s is not None and not broken:
                    now = time.monotonic()
                    stuck = [i for f, i in running.items() if now - started[f] > timeout_s]
            ended = not stuck
        finally:
            # A stuck (or stopped) worker never exits by itself: end the pool without waiting on it forever.
            _close(pool, kill=not ended)
        # A broken pool fails every job in flight, not always at the same instant: charge them all.
        lost_now = sorted(set(broken) | set(running.values())) if broken else sorted(stuck)
        requeued = sorted(set(running.values()) - set(lost_now)) if stuck else []
        todo = lost_now + requeued + list(reversed(queue)) if (broken or stuck) else []
        for i in lost_now:
            lost[i] += 1
            if lost[i] > retries:
                what = (
                    f"ran longer than {timeout_s:g} s {lost[i]} times (a stuck worker)"
                    if stuck
                    else f"lost its worker process {lost[i]} times (killed from outside, most often by the "
                    "out-of-memory killer)"
                )
                raise WorkerDiedError(f"{label[i]} {what}; use fewer --workers or more memory, then re-run")
        if lost_now:
            cause = "was stuck" if stuck else "died (killed from outside, e.g. out of memory)"
            print(
                f"warning: a worker process {cause} while working on "
                f"{', '.join(label[i] for i in lost_now)}; running it again",
                file=sys.stderr,
            )


def _close(pool: Any, kill: bool, grace_s: float = 30.0) -> None:
    """Shut a process pool down; with `kill` (or for a worker still alive `grace_s` after shutdown: a stopped
    or stuck one) its processes are killed first, so closing never waits forever."""
    import contextlib
    import os
    import signal
    import time
    from multiprocessing.connection import wait as wait_ready

    processes = list(getattr(pool, "_processes", {}).values())  # private, but the only handle on the workers
    pool.shutdown(wait=False, cancel_futures=True)
    alive = [p.sentinel for p in processes]
    deadline = time.monotonic() + (0.0 if kill else grace_s)
    while alive and time.monotonic() < deadline:
        ready = wait_ready(alive, timeout=deadline - time.monotonic())
        alive = [x for x in alive if x not in ready]
    for process in processes:
        if process.sentinel in alive:
            with contextlib.suppress(ProcessLookupError, TypeError):
                os.kill(process.pid, signal.SIGKILL)
    pool.shutdown(wait=True)


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
