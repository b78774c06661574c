"""Where the data stages run their independent jobs: here, in local worker processes, or on a Ray cluster.

One entry point, `run_jobs(fn, jobs, workers, on_result, ...)`, calls ``on_result(position, result)`` as jobs
finish, whatever the engine. Engines are registered by name in `ENGINES` (adding one is one function here):

- ``local``: in this process when ``workers == 1``, otherwise a pool of ``workers`` processes. A job whose worker
  dies (the out-of-memory killer, ``kill -9``) or is stuck past a time limit runs again once, alone; a second
  loss ends the run with `WorkerDiedError` naming the job. Nothing waits forever on a result that cannot come.
- ``ray``: each job is a Ray task (retried once if its worker dies). Without ``address`` a private local Ray
  instance with ``workers`` CPUs is started and stopped around the run; with ``address`` (``ray://...`` or
  ``HOST:PORT``, or ``auto``) the jobs go to that cluster. Every node must see the input and output paths (a
  shared file system) and have medst installed. Install with ``pip install 'medst[ray]'``.

Jobs must be module-level functions of one picklable argument. Results may arrive in any order; the callers
(`medst.shards.writer`, `medst.archive.parallel.map_chunks`) either reorder them by position or do not depend on it.

Stages that call `map_chunks` deep inside (header and report reading in `build-sequences`) do not pass the engine
down every signature: the command sets it once for the run with ``with use_engine("ray", address, workers):``.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from medst.errors import UserInputError, WorkerDiedError

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class EngineChoice:
    """The engine a stage runs its jobs on, and the Ray cluster address when it is Ray."""

    name: str = "local"
    """A key of `ENGINES`."""
    address: str | None = None


_CURRENT: contextvars.ContextVar[EngineChoice | None] = contextvars.ContextVar("medst_engine", default=None)


def current_engine() -> EngineChoice:
    """The engine set by the innermost `use_engine` (``local`` when none)."""
    return _CURRENT.get() or EngineChoice()


@contextlib.contextmanager
def use_engine(name: str = "local", address: str | None = None, workers: int = 1) -> Iterator[EngineChoice]:
    """Run the jobs started inside this block on engine ``name`` (checked now, so a missing Ray fails early).

    For Ray the connection (or a private local Ray with ``workers`` CPUs) is opened here, in the caller's thread,
    once for the whole block: every `run_jobs` inside reuses it, including one on a helper thread."""
    choice = EngineChoice(name, address)
    _check(choice)
    started = choice.name == "ray" and _start_ray(choice, workers)
    token = _CURRENT.set(choice)
    try:
        yield choice
    finally:
        _CURRENT.reset(token)
        if started:
            import ray

            ray.shutdown()


def _start_ray(choice: EngineChoice, workers: int) -> bool:
    """Connect to ``choice.address`` or start a private local Ray; False when this process already has one."""
    import ray

    if ray.is_initialized():
        return False
    if choice.address:
        ray.init(address=choice.address, log_to_driver=False, configure_logging=False)
    else:
        ray.init(
            num_cpus=max(1, workers), include_dashboard=False, log_to_driver=False, configure_logging=False
        )
    return True


def check_engine(name: str, address: str | None = None) -> None:
    """Raise `UserInputError` now for an unknown engine, a missing Ray or an address without Ray (before a
    command spends time loading or claiming anything)."""
    _check(EngineChoice(name, address))


def _check(choice: EngineChoice) -> None:
    if choice.name not in ENGINES:
        raise UserInputError(f"--engine must be one of {', '.join(ENGINES)}, got {choice.name!r}")
    if choice.name == "ray":
        try:
            import ray  # noqa: F401
        except ImportError as err:
            raise UserInputError("--engine ray needs Ray: pip install 'medst[ray]'") from err
    elif choice.address:
        raise UserInputError("--ray-address is only used with --engine ray")


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
    engine: EngineChoice | None = None,
) -> None:
    """Run ``fn(jobs[i])`` on the chosen engine and call ``on_result(i, result)`` here as each job finishes (in
    completion order).

    ``engine`` defaults to the one set by `use_engine` (``local`` when none). ``names[i]`` names job i in errors
    (default "job i"). A job whose worker dies is run again up to ``retries`` times, then `WorkerDiedError` names
    it; an exception raised by ``fn`` itself propagates unchanged. ``initializer`` runs once in each local worker
    (and before each job on Ray, whose workers are shared). ``context`` is the local pool's start method (None:
    the platform's default) and ``timeout_s`` the longest a local job may run before its worker counts as stuck.
    """
    choice = engine or current_engine()
    _check(choice)
    label = list(names) if names is not None else [f"job {i}" for i in range(len(jobs))]
    ENGINES[choice.name](
        JobRun(fn, jobs, workers, on_result, label, initializer, context, retries, timeout_s, choice)
    )


@dataclass(frozen=True)
class JobRun:
    """One `run_jobs` call as an engine receives it (``label[i]`` names job i in errors)."""

    fn: Callable[[Any], Any]
    jobs: Sequence[Any]
    workers: int
    on_result: Callable[[int, Any], None]
    label: list[str]
    initializer: Callable[[], None] | None
    context: str | None
    retries: int
    timeout_s: float | None
    choice: EngineChoice


PARENT_POLL_S = 1.0
"""How often a local worker checks that the process that started it is still alive."""


def _worker_start(parent: int | None, initializer: Callable[[], None] | None) -> None:
    """First thing in each local worker: watch the parent, then the caller's ``initializer``.

    A pool worker waits for its next job on a queue whose write end it holds itself, so when the parent is killed
    (``kill -9``, the out-of-memory killer, a node agent) nothing ever wakes it: it would sit in memory forever,
    and every killed run would leave ``workers`` such processes behind. A daemon thread ends the worker within
    `PARENT_POLL_S` of the parent's death (the worker is then re-parented, so its parent pid changes). ``parent``
    is the run's process id, passed in so that a parent killed while this worker was still starting is noticed;
    None (forkserver workers) watches whoever started the worker, the fork server, which ends with the run."""
    import threading
    import time

    if parent is None:
        parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="medst-parent-watch", daemon=True).start()
    if initializer is not None:
        initializer()


def _run_local(run: JobRun) -> None:
    """In this process with one worker (or one job); otherwise in worker processes that survive a dead worker.

    A worker killed from outside (the out-of-memory killer, ``kill -9``) breaks a process pool:
    `multiprocessing.Pool` then waits forever for the lost task, `ProcessPoolExecutor` fails every pending task
    without saying which one was running. Here a fresh pool starts and each job that was in flight runs again
    once, alone, so a job that kills its worker every time is named in a `WorkerDiedError`; the run never hangs.
    (In this process ``initializer`` does not run: it is meant for worker processes, e.g. OpenCV's one thread.)
    """
    fn, jobs, workers, on_result, label = run.fn, run.jobs, run.workers, run.on_result, run.label
    initializer, retries, timeout_s = run.initializer, run.retries, run.timeout_s
    if workers <= 1 or len(jobs) <= 1:
        for i, job in enumerate(jobs):
            on_result(i, fn(job))
        return
    import multiprocessing as mp
    import sys
    import time
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    lost = [0] * len(jobs)
    todo = list(range(len(jobs)))
    while todo:
        # Jobs that were in flight when a worker died go first, one at a time.
        todo.sort(key=lambda i: lost[i] == 0)
        broken: list[int] = []  # jobs lost with their worker (charged a retry)
        stuck: list[int] = []  # jobs over the time limit (charged a retry)
        pool = ProcessPoolExecutor(
            max_workers=max(1, min(workers, len(todo))),
            mp_context=mp.get_context(run.context),
            initializer=_worker_start,
            # A fork server, not this process, is the parent of forkserver workers.
            initargs=(None if run.context == "forkserver" else os.getpid(), initializer),
        )
        queue = list(reversed(todo))
        running: dict[Future[Any], int] = {}
        started: dict[Future[Any], float] = {}
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


def _close(pool: Any, kill: bool, grace_s: float = 10.0) -> None:
    """Shut a process pool down; with `kill` (or for a worker still alive `grace_s` after shutdown: a stopped
    or stuck one; an idle worker that has not exited by then holds nothing) its processes are killed first, so
    closing never waits forever."""
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


def _ray_call(fn: Callable[[Any], Any], job: Any, initializer: Callable[[], None] | None) -> Any:
    if initializer is not None:
        initializer()
    return fn(job)


def _run_ray(run: JobRun) -> None:
    """Each job a Ray task, retried by Ray when its worker or node dies. Without an address a private local Ray
    with ``workers`` CPUs is started and stopped around the run; a Ray already started in this process is used
    as it is. ``timeout_s`` is not applied (Ray's own health checks cover lost workers)."""
    fn, jobs, on_result, label, retries = run.fn, run.jobs, run.on_result, run.label, run.retries
    initializer = run.initializer
    import ray
    from ray.exceptions import NodeDiedError, WorkerCrashedError

    started_here = _start_ray(run.choice, run.workers)
    try:
        remote = ray.remote(num_cpus=1, max_retries=retries)(_ray_call)
        fn_ref, init_ref = ray.put(fn), ray.put(initializer)
        refs = {remote.remote(fn_ref, ray.put(job), init_ref): i for i, job in enumerate(jobs)}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            i = refs[done[0]]
            try:
                result = ray.get(done[0])
            except (WorkerCrashedError, NodeDiedError) as err:
                raise WorkerDiedError(
                    f"{label[i]} lost its Ray worker {retries + 1} times; finished work is kept, re-run to continue"
                ) from err
            on_result(i, result)
    finally:
        if started_here:
            ray.shutdown()


ENGINES: dict[str, Callable[[JobRun], None]] = {"local": _run_local, "ray": _run_ray}
"""Engine name -> runner, in the order ``--help`` lists them. The one list of engines: `medst.schemas.common.EngineName`
(every config's ``engine`` field) and each command's ``--engine`` choices are made from its keys."""
