"""The streaming loader: WebDataset shards of patient timelines -> `medst.batch.Batch`, deterministic and resumable.

How an epoch is laid out (computed from the shard index alone, before any tar is opened):

1. The split's complete shards are shuffled with (seed, epoch) and dealt to ranks (rank r takes every
   world_size-th; with fewer shards than ranks a rank takes shard ``r % n``).
2. Every rank makes exactly ``batches_per_epoch`` batches: the split's window count (from the per-sample timeline
   lengths in the index) over ``world_size * windows_per_batch``. A rank whose shards hold fewer windows goes
   round its shards again (padding with repeats); one with more stops early (truncation). No rank ever waits.
   Evaluation mode (``shuffle=False, drop_last=False``): every rank sees each of its windows exactly once, its last
   own batch may be partial, and ranks with fewer windows pad with repeat batches up to the largest count.
3. The rank's window stream: for each shard in turn, its timelines cut into windows (random offset drawn per
   timeline), the shard's windows shuffled; the stream is dealt in order into batches (of W windows, see 2).
4. The batches from a position (epoch, first batch) on are numbered 0, 1, 2, ... and DataLoader worker k of K
   builds those numbered ``k mod K``: it streams the shards holding them, keeps the encoded bytes of the samples
   it needs and decodes only those. Each batch comes tagged with (epoch, batch) and is handed out in that
   order, so the batches are identical for any ``num_workers``; random crops are seeded per
   (seed, epoch, rank, batch, window, step, view), so a resumed epoch gives the same batches as an unbroken one.
5. The workers persist for the loader's life. A training stream runs on into the next epoch, so the workers
   prefetch across the boundary; asking for any other position than the stream's next batch (a resume, a new
   epoch chosen by hand, an evaluation pass from its start) restarts the stream there.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from medst.batch import Batch
from medst.errors import UserInputError
from medst.model.tokenize import load_tokenizer
from medst.model.transforms import image_pipeline
from medst.schemas.shards import LoaderConfig, ShardIndexEntry
from medst.sequences.windows import cut_windows, draw_offset
from medst.storage import Location

from .collate import StudyItem, collate_windows
from .format import StoredSample, View, ends_early, image_suffix, iter_samples
from .index import list_entries
from .members import BadImageError, ShardReadError, decode_image

# Window = (sample position in its shard, start, stop).
Window = tuple[int, int, int]


@dataclass(frozen=True)
class Segment:
    """One pass over one shard inside a rank's epoch: the shard and its windows, each with its (batch, slot)."""

    shard: Location
    windows: list[tuple[Window, int, int]]


def _rng(*parts: int) -> np.random.Generator:
    return np.random.default_rng([int(p) & 0xFFFFFFFF for p in parts])


def _exact(config: LoaderConfig) -> bool:
    """Evaluation mode (no shuffle, keep the last batch): every window once per rank, last batch partial."""
    return not config.drop_last and not config.shuffle


def _rank_shards(n_shards: int, config: LoaderConfig, epoch: int, rank: int, world_size: int) -> list[int]:
    order = list(range(n_shards))
    if config.shuffle:
        order = [int(i) for i in _rng(config.seed, epoch, 1).permutation(n_shards)]
    return order[rank::world_size] if n_shards >= world_size else [order[rank % n_shards]]


def _shard_windows(
    entry: ShardIndexEntry, config: LoaderConfig, offsets_rng: tuple[int, ...] | None
) -> list[Window]:
    stride = config.effective_stride
    windows: list[Window] = []
    for pos, length in enumerate(entry.timeline_lengths):
        offset = 0
        if offsets_rng is not None:
            offset = draw_offset(_rng(*offsets_rng, pos), config.seq_len, stride)
        windows.extend(
            (pos, a, b) for a, b in cut_windows(length, config.seq_len, stride, config.min_len, offset)
        )
    return windows


def count_windows(entries: list[ShardIndexEntry], config: LoaderConfig) -> int:
    """Windows in these shards with offset 0 (the nominal count that sizes an epoch)."""
    return sum(len(_shard_windows(e, config, None)) for e in entries)


def batches_per_epoch(entries: list[ShardIndexEntry], config: LoaderConfig, world_size: int) -> int:
    """Batches every rank makes per epoch (identical on all ranks; at least 1 when there is any window).

    Training (drop_last): total windows // (world_size * windows_per_batch). Evaluation (no shuffle, no
    drop_last): the most batches any rank needs to see each of its windows once.
    """
    total = count_windows(entries, config)
    if not total:
        return 0
    w = config.windows_per_batch
    if _exact(config):
        return max(
            -(
                -count_windows(
                    [entries[i] for i in _rank_shards(len(entries), config, 0, r, world_size)], config
                )
                // w
            )
            for r in range(world_size)
        )
    per = world_size * w
    n = total // per if config.drop_last else -(-total // per)
    return max(1, n)


def batch_sizes(
    entries: list[ShardIndexEntry], config: LoaderConfig, rank: int, world_size: int, n_batches: int
) -> list[int]:
    """Windows in each of the rank's batches: all full, except in evaluation mode the rank's last own batch."""
    w = config.windows_per_batch
    if not _exact(config):
        return [w] * n_batches
    mine = count_windows(
        [entries[i] for i in _rank_shards(len(entries), config, 0, rank, world_size)], config
    )
    own = -(-mine // w)
    sizes = [w] * n_batches
    if 0 < own <= n_batches and mine % w:
        sizes[own - 1] = mine % w
    return sizes


def rank_segments(
    entries: list[ShardIndexEntry],
    shards: Location,
    config: LoaderConfig,
    epoch: int,
    rank: int,
    world_size: int,
    n_batches: int,
) -> list[Segment]:
    """The rank's epoch as shard passes; windows are dealt in stream order into batches of `batch_sizes`.

    A rank whose shards run out goes round them again (repeats, so every rank makes ``n_batches``).
    """
    mine = _rank_shards(len(entries), config, epoch, rank, world_size)
    sizes = batch_sizes(entries, config, rank, world_size, n_batches)
    segments: list[Segment] = []
    b = slot = 0
    passes = 0
    while b < n_batches:
        dealt = 0
        for shard_id in mine:
            entry = entries[shard_id]
            seeds = (config.seed, epoch, 2, passes, shard_id) if config.random_offset else None
            windows = _shard_windows(entry, config, seeds)
            if config.shuffle:
                perm = _rng(config.seed, epoch, 3, passes, shard_id).permutation(len(windows))
                windows = [windows[int(i)] for i in perm]
            placed: list[tuple[Window, int, int]] = []
            for win in windows:
                if b >= n_batches:
                    break
                placed.append((win, b, slot))
                slot += 1
                if slot == sizes[b]:
                    b, slot = b + 1, 0
            if placed:
                segments.append(Segment(shards / entry.shard, placed))
                dealt += len(placed)
            if b >= n_batches:
                break
        passes += 1
        if dealt == 0 and b < n_batches:
            raise UserInputError(
                f"shards of split {config.split!r} in {shards} hold no window of >= {config.min_len} studies"
            )
    return segments


def _read_samples(
    path: Location, wanted: set[int], skip_bad: bool
) -> tuple[dict[int, StoredSample], dict[int, str]]:
    """Stream one tar through the checked reader (`format.iter_samples`) and keep the samples at positions
    `wanted`; returns them and, with `skip_bad`, one line per wanted sample that could not be read (without
    `skip_bad` the `ShardReadError` naming shard and member propagates)."""
    out: dict[int, StoredSample] = {}
    last = max(wanted)
    read = 0
    problem = ""
    with path.open("rb") as fh:  # a URL streams (with retries) through `medst.storage`
        try:
            for pos, sample in enumerate(iter_samples(fh, path)):
                read = pos + 1
                if pos in wanted:
                    out[pos] = sample
                if pos >= last:
                    break
        except ShardReadError as err:
            if not skip_bad:
                raise
            problem = str(err)
    short = None if problem else ends_early(path, read, last + 1)
    if short is not None:
        if not skip_bad:
            raise short
        problem = str(short)
    missing = sorted(wanted - set(out))
    return out, dict.fromkeys(missing, problem)


def _image(
    sample: StoredSample, index: int, view: View, c: LoaderConfig, rng: np.random.Generator | None
) -> np.ndarray:
    """A stored image through the model's image transform; `ShardReadError` naming shard and member."""
    suffix = sample.image_suffix(index, view)
    if suffix is None:
        raise ShardReadError(sample.shard, sample.member(image_suffix(index, view, "*")), "missing")
    try:
        return image_pipeline(decode_image(sample.members[suffix]), c.letterbox, c.crop, rng)
    except BadImageError as err:
        raise ShardReadError(sample.shard, sample.member(suffix), str(err)) from None


class _EpochStream(IterableDataset):  # type: ignore[type-arg]
    """One rank's batches from the position in ``position`` (a shared ``[epoch, start]`` tensor) on.

    The main process writes the position before it (re)starts the workers' iteration; each worker then plans the
    epochs itself from the shard index it was given once, and yields ``((epoch, batch), Batch)`` for its share
    (module docstring, 4-5).
    """

    def __init__(
        self,
        entries: list[ShardIndexEntry],
        config: LoaderConfig,
        tokenizer: Any,
        rank: int,
        world_size: int,
        sizes: list[int],
        position: torch.Tensor,
    ) -> None:
        self.entries = entries
        self.config = config
        self.tokenizer = tokenizer
        self.rank = rank
        self.world_size = world_size
        self.sizes = sizes
        self.n_batches = len(sizes)
        self.position = position
        # Training streams run on into the next epochs, so workers prefetch across epoch boundaries (no stall
        # there). Evaluation restarts at its first batch each time, so its stream stops at the epoch's end.
        self.continuous = config.train
        self._plan: tuple[int, list[Segment]] | None = None

    def _segments(self, epoch: int) -> list[Segment]:
        if self._plan is None or self._plan[0] != epoch:
            segments = rank_segments(
                self.entries,
                self.config.shards,
                self.config,
                epoch,
                self.rank,
                self.world_size,
                self.n_batches,
            )
            self._plan = (epoch, segments)
        return self._plan[1]

    def _study(
        self, sample: StoredSample, meta: dict[str, Any], epoch: int, step: int, b: int, slot: int, k: int
    ) -> StudyItem:
        c = self.config
        study = meta["studies"][step]
        idx = study["index"]
        rngs: list[np.random.Generator | None] = [None, None]
        if c.train:
            rngs = [_rng(c.seed, epoch, 4, self.rank, b, slot, k, view) for view in (0, 1)]
        frontal = _image(sample, idx, "frontal", c, rngs[0])
        has_lateral = study["has_lateral"] and sample.image_suffix(idx, "lateral") is not None
        lateral = _image(sample, idx, "lateral", c, rngs[1]) if has_lateral else None
        return StudyItem(frontal=frontal, lateral=lateral, text=study["text"], study_key=study["study_key"])

    def _epoch_batches(
        self, epoch: int, start: int, residue: int, n_workers: int
    ) -> Iterator[tuple[tuple[int, int], Batch]]:
        """This worker's batches ``b >= start`` with ``b % n_workers == residue`` of ``epoch``, in order."""
        # batch -> slot -> the window's studies, or the one-line reason it was skipped
        pending: dict[int, dict[int, list[StudyItem] | str]] = {}
        next_b = start + (residue - start) % n_workers
        for seg in self._segments(epoch):
            # sample position -> (batch, slot, window); keep only this worker's batches from `start` on.
            mine: dict[int, list[tuple[int, int, Window]]] = {}
            for win, b, slot in seg.windows:
                if b >= start and b % n_workers == residue:
                    mine.setdefault(win[0], []).append((b, slot, win))
            if not mine:
                continue
            skip = self.config.skip_bad_samples
            samples, unread = _read_samples(seg.shard, set(mine), skip)
            for pos, jobs in sorted(mine.items()):
                problem = unread.get(pos)
                for b, slot, (_, a, z) in jobs:
                    window: list[StudyItem] | str
                    if problem is not None:
                        window = problem
                    else:
                        try:
                            sample = samples[pos]
                            meta = sample.timeline()
                            window = [
                                self._study(sample, meta, epoch, step, b, slot, step - a)
                                for step in range(a, z)
                            ]
                        except ShardReadError as err:
                            if not skip:
                                raise
                            window = str(err)
                    pending.setdefault(b, {})[slot] = window
            # Emit every finished batch in order (a batch can span two shards).
            while next_b in pending and len(pending[next_b]) == self.sizes[next_b]:
                slots = pending.pop(next_b)
                ordered = [slots[s] for s in range(len(slots))]
                items = [w for w in ordered if not isinstance(w, str)]
                skipped = tuple(w for w in ordered if isinstance(w, str))
                if not items:
                    raise UserInputError(f"every sample of batch {next_b} is damaged; first: {skipped[0]}")
                batch = collate_windows(items, self.tokenizer, self.config.max_tokens)
                yield (epoch, next_b), replace(batch, skipped=skipped) if skipped else batch
                next_b += n_workers
        if pending:
            raise RuntimeError(
                f"loader plan left batches {sorted(pending)} incomplete (shards changed while reading?)"
            )

    def __iter__(self) -> Iterator[tuple[tuple[int, int], Batch]]:
        """``((epoch, batch), Batch)`` from the position on. The stream is numbered ``g = 0, 1, ...`` from the
        position through the end of its epoch and, when ``continuous``, on through the following epochs;
        worker k of K makes ``g % K == k``."""
        epoch, start = (int(v) for v in self.position.tolist())
        info = get_worker_info()
        worker, n_workers = (0, 1) if info is None else (info.id, info.num_workers)
        if info is not None:
            import cv2

            cv2.setNumThreads(1)
            torch.set_num_threads(1)
        g = 0  # stream number of this epoch's batch `start`
        try:
            while True:
                residue = (
                    worker - g + start
                ) % n_workers  # batch b of this epoch is stream number g + b - start
                yield from self._epoch_batches(epoch, start, residue, n_workers)
                if not self.continuous:
                    return
                g += self.n_batches - start
                epoch, start = epoch + 1, 0
        except UserInputError as err:
            # Handed over as a value: PyTorch would re-raise it in the main process as a RuntimeError holding the
            # worker's traceback; `_Live.take` raises it there as it is (one line naming shard and member).
            yield (epoch, -1), err  # type: ignore[misc]


class _Live:
    """A running stream of ``((epoch, batch), Batch)`` put back in stream order (PyTorch hands worker outputs
    out round-robin, so at most one batch per worker is held), and the position of its next batch."""

    def __init__(
        self, source: Iterator[tuple[tuple[int, int], Batch]], epoch: int, start: int, n: int
    ) -> None:
        self.source = source
        self.next_pos = (epoch, start)
        self.n = n
        self.held: dict[tuple[int, int], Batch] = {}

    def take(self) -> Batch:
        """The next batch in stream order (StopIteration when an epoch-bounded stream is spent)."""
        pos = self.next_pos
        while pos not in self.held:
            key, batch = next(self.source)
            if isinstance(batch, UserInputError):
                raise batch
            self.held[(int(key[0]), int(key[1]))] = batch  # older PyTorch pinning turns tuples into lists
            if len(self.held) > 4096:
                raise RuntimeError(f"loader workers skipped batch {pos}")
        epoch, b = pos
        self.next_pos = (epoch, b + 1) if b + 1 < self.n else (epoch + 1, 0)
        return self.held.pop(pos)


def _worker_context(tokenizer: Any = None) -> Any:
    """A forkserver context that preloads what a worker needs for its first batch (this module, tar reading, the
    tokenizer's class): workers start in a fraction of a second and never inherit thread pools (OpenCV, OpenMP,
    tokenizers) that the caller used before forking, which hang a forked child. Missing modules are skipped."""
    import multiprocessing as mp

    ctx = mp.get_context("forkserver")
    preload = ["medst.shards.loader", "webdataset.tariterators"]
    if tokenizer is not None:
        preload.append(type(tokenizer).__module__)
    ctx.set_forkserver_preload(preload)
    return ctx


def _identity(x: Batch) -> Batch:
    return x


def _leave_stop_signals_to_the_caller(released: torch.Tensor, worker_id: int) -> None:
    """Loader workers ignore SIGINT, and SIGTERM until the main process releases them (``released[0]`` set by
    `TimelineLoader.close` or at interpreter exit, where multiprocessing ends daemonic workers with SIGTERM).

    Ctrl-C and a scheduler's SIGTERM reach every process of the job; the trainer then finishes its step (which may
    still need batches), saves a checkpoint and closes the workers itself. A worker also ends when its parent does.
    """
    import signal

    def on_sigterm(signum: int, frame: object) -> None:
        if int(released[0]):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, on_sigterm)


def _release_workers(released: torch.Tensor) -> None:
    released[0] = 1


def _start_forkserver_ignoring_sigterm() -> None:
    """Start the fork server with SIGTERM ignored (the disposition survives its exec), so a SIGTERM to the whole
    job does not end it and, with it, the workers forked from it (it ignores SIGINT itself, and exits when this
    process does)."""
    import signal
    import threading
    from multiprocessing import forkserver

    if threading.current_thread() is not threading.main_thread():
        forkserver.ensure_running()
        return
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGTERM, previous)


class TimelineLoader:
    """Iterable of `Batch` for one rank: ``batches_per_epoch`` batches per epoch, same on every rank.

    Args:
        config: the loader options (shard folder, split, windows, image and text sizes, seed, workers).
        tokenizer: a Hugging Face fast tokenizer, or a local folder holding one.
        rank, world_size: this process's place among the data-parallel processes.

    With ``num_workers > 0`` the DataLoader workers start from a forkserver (see `_worker_context`) on the first
    iteration and stay for the loader's life, serving every later epoch (no start-up cost per epoch); `close`
    (or leaving a ``with`` block, or dropping the loader) stops them. A script run as ``python script.py`` that
    iterates the loader needs the usual ``if __name__ == "__main__":`` guard (``python -m medst.cli ...`` and
    torchrun entry points are fine as they are).
    """

    def __init__(self, config: LoaderConfig, tokenizer: Any, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, {world_size})")
        self.config = config
        self.tokenizer = load_tokenizer(tokenizer) if isinstance(tokenizer, str | Path) else tokenizer
        self.rank = rank
        self.world_size = world_size
        self.entries = list_entries(config.shards, config.split)
        if not self.entries:
            raise UserInputError(f"no complete shard of split {config.split!r} in {config.shards}")
        self.batches_per_epoch = batches_per_epoch(self.entries, config, world_size)
        self.epoch = 0
        self._consumed = 0
        # [epoch, start batch] of the iteration being served; in shared memory so persistent workers read it.
        self._position = torch.zeros(2, dtype=torch.int64)
        if config.num_workers > 0:
            self._position.share_memory_()
        sizes = batch_sizes(self.entries, config, rank, world_size, self.batches_per_epoch)
        self._stream = _EpochStream(
            self.entries, config, self.tokenizer, rank, world_size, sizes, self._position
        )
        self._workers: DataLoader[Any] | None = None
        self._live: _Live | None = None
        # Shared with the workers: 1 once SIGTERM may end them (see `_leave_stop_signals_to_the_caller`).
        self._released = torch.zeros(1, dtype=torch.int64)
        if config.num_workers > 0:
            import atexit

            self._released.share_memory_()
            # Runs before multiprocessing's own exit hook (registered earlier), which SIGTERMs and joins workers.
            atexit.register(_release_workers, self._released)
            # Start the fork server now: its imports (about a second) overlap the caller's own set-up (building
            # the model), and the first iteration only forks the workers from it.
            _worker_context(self.tokenizer)
            _start_forkserver_ignoring_sigterm()

    def __len__(self) -> int:
        return self.batches_per_epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (shard order, shuffles, crops); a new epoch starts from its first batch."""
        if epoch != self.epoch:
            self.epoch = epoch
            self._consumed = 0

    def state_dict(self) -> dict[str, int]:
        """Position to resume from: the epoch and how many of its batches were handed out."""
        return {"epoch": self.epoch, "batches_consumed": self._consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = int(state["epoch"])
        self._consumed = int(state["batches_consumed"])

    def _start(self, epoch: int, start: int) -> _Live:
        """Start the stream at (epoch, start): in this process, or by (re)starting the workers' iteration."""
        # Written before the workers (re)start their iteration, which is when they read it.
        self._position[0], self._position[1] = epoch, start
        if self.config.num_workers == 0:
            return _Live(iter(self._stream), epoch, start, self.batches_per_epoch)
        if self._workers is None:
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            self._workers = DataLoader(
                self._stream,
                multiprocessing_context=_worker_context(self.tokenizer),
                batch_size=None,
                num_workers=min(self.config.num_workers, self.batches_per_epoch),
                collate_fn=_identity,  # type: ignore[arg-type]
                prefetch_factor=2,
                persistent_workers=True,
                pin_memory=self.config.pin_memory,
                worker_init_fn=functools.partial(_leave_stop_signals_to_the_caller, self._released),
            )
            self._released[0] = 0
        return _Live(iter(self._workers), epoch, start, self.batches_per_epoch)

    def __iter__(self) -> Iterator[Batch]:
        start = self._consumed if self._consumed < self.batches_per_epoch else 0
        self._consumed = start
        if start >= self.batches_per_epoch:
            return
        live = self._live
        if live is None or live.next_pos != (self.epoch, start):
            # Another position than the running stream's next batch (a new loader, a resume, an evaluation
            # pass from its start): (re)start the stream there.
            live = self._live = self._start(self.epoch, start)
        while self._consumed < self.batches_per_epoch:
            try:
                batch = live.take()
            except StopIteration:
                self._live = None
                raise RuntimeError(
                    f"the loader stream ended at batch {self._consumed} of {self.batches_per_epoch}"
                ) from None
            self._consumed += 1
            yield batch
        if not self._stream.continuous:
            self._live = None  # an epoch-bounded stream is spent at its epoch's end

    def close(self) -> None:
        """Stop the worker processes (a later iteration starts new ones)."""
        workers, self._workers = self._workers, None
        self._live = None
        _release_workers(self._released)
        iterator = getattr(workers, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()

    def __enter__(self) -> TimelineLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
