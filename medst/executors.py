"""Where the data stages run their independent jobs: here, in local worker processes, or on a Ray cluster.

One entry point, `run_jobs(fn, tasks, ...)`, yields ``(position, result)`` pairs as jobs finish, whatever the
engine. Engines are registered by name in `ENGINES`:

- ``local``: in this process when ``workers == 1``, otherwise a pool of ``workers`` spawned processes. A worker
  that dies (the out-of-memory killer, ``kill -9``) ends the run with `WorkerLostError` naming the job; nothing
  waits forever on a result that cannot come.
- ``ray``: each job is a Ray task (retried once if its worker dies). Without ``address`` a private local Ray
  instance with ``workers`` CPUs is started and stopped around the run; with ``address`` (``ray://...`` or
  ``HOST:PORT``, or ``auto``) the jobs go to that cluster. Every node must see the input and output paths (a
  shared file system) and have medst installed. Install with ``pip install 'medst[ray]'``.

Jobs must be module-level functions of one picklable argument. Results may arrive in any order; the callers
(`medst.shards.writer`, `medst.archive.parallel.map_chunks`) either reorder them by position or do not depend on it.

Stages that call `map_chunks` deep inside (header and report reading in `build-sequences`) do not pass the engine
down every signature: the command sets it once for the run with ``with use_engine("ray", address): ...``.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from medst.errors import MedstError, UserInputError

T = TypeVar("T")
R = TypeVar("R")

EngineName = Literal["local", "ray"]


class WorkerLostError(MedstError):
    """A worker process died (or its node was lost) before finishing a job; the message names the job."""


@dataclass(frozen=True)
class EngineChoice:
    """The engine a stage runs its jobs on, and the Ray cluster address when it is Ray."""

    name: EngineName = "local"
    address: str | None = None


_CURRENT: contextvars.ContextVar[EngineChoice | None] = contextvars.ContextVar("medst_engine", default=None)


def current_engine() -> EngineChoice:
    """The engine set by the innermost `use_engine` (``local`` when none)."""
    return _CURRENT.get() or EngineChoice()


@contextlib.contextmanager
def use_engine(name: EngineName = "local", address: str | None = None) -> Iterator[EngineChoice]:
    """Run the jobs started inside this block on engine ``name`` (checked now, so a missing Ray fails early)."""
    choice = EngineChoice(name, address)
    _check(choice)
    token = _CURRENT.set(choice)
    try:
        yield choice
    finally:
        _CURRENT.reset(token)


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
    tasks: Sequence[T],
    *,
    workers: int = 1,
    engine: EngineChoice | None = None,
    initializer: Callable[[], None] | None = None,
    start_method: str | None = "spawn",
    describe: Callable[[T], str] = lambda task: "a job",
) -> Iterator[tuple[int, R]]:
    """``fn(task)`` for every task on the chosen engine; yields ``(position in tasks, result)`` as jobs finish.

    ``initializer`` runs once in each local worker process (and before each job on Ray, where workers are
    shared with other work). ``start_method`` is the local pool's (``None``: the platform default). ``describe(task)`` names a job in the error raised when its worker is lost.
    An exception raised by ``fn`` itself propagates unchanged (Ray unwraps it to the original type).
    """
    choice = engine or current_engine()
    _check(choice)
    runner = ENGINES[choice.name]
    yield from runner(fn, tasks, workers, choice, initializer, start_method, describe)


_STARTED: Any = None  # in a local worker: the queue on which it announces each job it starts


def _init_local_worker(started: Any, initializer: Callable[[], None] | None) -> None:
    global _STARTED
    _STARTED = started
    if initializer is not None:
        initializer()


def _tracked_call(fn: Callable[[Any], Any], position: int, task: Any) -> Any:
    _STARTED.put(position)
    return fn(task)


def _run_local(
    fn: Callable[[Any], Any],
    tasks: Sequence[Any],
    workers: int,
    choice: EngineChoice,
    initializer: Callable[[], None] | None,
    start_method: str | None,
    describe: Callable[[Any], str],
) -> Iterator[tuple[int, Any]]:
    if workers <= 1 or len(tasks) <= 1:
        for i, task in enumerate(tasks):
            yield i, fn(task)
        return
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    # A process pool (unlike multiprocessing.Pool) notices a worker that died and fails the pending futures
    # instead of waiting forever. The shard writer asks for spawn: forking a process that holds polars/OpenCV
    # thread pools can deadlock. Workers announce each job they start, so a lost worker's job can be named.
    context = mp.get_context(start_method)
    started = context.SimpleQueue()
    pool = ProcessPoolExecutor(
        min(workers, len(tasks)),
        mp_context=context,
        initializer=_init_local_worker,
        initargs=(started, initializer),
    )
    finished: set[int] = set()
    try:
        futures = {pool.submit(_tracked_call, fn, i, task): i for i, task in enumerate(tasks)}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in sorted(done, key=futures.__getitem__):
                i = futures[future]
                try:
                    result = future.result()
                except BrokenProcessPool as err:
                    running = []
                    while not started.empty():
                        running.append(started.get())
                    lost = [describe(tasks[j]) for j in running if j not in finished] or ["an unstarted job"]
                    raise WorkerLostError(
                        f"a worker process died (killed by the system, e.g. out of memory?) while running "
                        f"{' or '.join(lost)}; finished work is kept, re-run to continue"
                    ) from err
                finished.add(i)
                yield i, result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _ray_call(fn: Callable[[Any], Any], task: Any, initializer: Callable[[], None] | None) -> Any:
    if initializer is not None:
        initializer()
    return fn(task)


def _run_ray(
    fn: Callable[[Any], Any],
    tasks: Sequence[Any],
    workers: int,
    choice: EngineChoice,
    initializer: Callable[[], None] | None,
    start_method: str | None,
    describe: Callable[[Any], str],
) -> Iterator[tuple[int, Any]]:
    import ray
    from ray.exceptions import NodeDiedError, WorkerCrashedError

    started_here = not ray.is_initialized()
    if started_here:
        if choice.address:
            ray.init(address=choice.address, log_to_driver=False, configure_logging=False)
        else:
            ray.init(
                num_cpus=max(1, workers),
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
    try:
        remote = ray.remote(num_cpus=1, max_retries=1)(_ray_call)
        fn_ref, init_ref = ray.put(fn), ray.put(initializer)
        refs = {remote.remote(fn_ref, ray.put(task), init_ref): i for i, task in enumerate(tasks)}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            i = refs[done[0]]
            try:
                result = ray.get(done[0])
            except (WorkerCrashedError, NodeDiedError) as err:
                raise WorkerLostError(
                    f"a Ray worker died twice while running {describe(tasks[i])}; finished work is kept, "
                    "re-run to continue"
                ) from err
            yield i, result
    finally:
        if started_here:
            ray.shutdown()


ENGINES: dict[str, Callable[..., Iterator[tuple[int, Any]]]] = {"local": _run_local, "ray": _run_ray}
