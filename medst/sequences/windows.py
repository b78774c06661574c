"""How a patient timeline is cut into windows of consecutive studies: the one definition of windowing.

`medst build-sequences` writes its windows to ``sequences.parquet`` through it (`medst.sequences.timeline.windows`)
and the streaming loader cuts shard timelines with it at run time (`medst.shards.loader`), so both always agree.

A window is a half-open range ``[start, stop)`` of study positions in a timeline (time order). The paper cuts
chunks of T = 4 studies.
"""

from __future__ import annotations

import numpy as np


def cut_windows(
    length: int, seq_len: int, stride: int, min_len: int = 1, offset: int = 0
) -> list[tuple[int, int]]:
    """Windows of a timeline of `length` studies.

    Windows start at ``offset, offset + stride, ...`` and hold up to `seq_len` studies; cutting stops after the
    first window that reaches the end (so overlapping strides add no redundant tail). With ``offset > 0`` the
    studies before it form a leading window. A window shorter than `min_len` is dropped.
    With the defaults (stride = seq_len, offset 0) this is the paper's consecutive non-overlapping chunks with a
    short remainder.
    """
    if seq_len < 1 or stride < 1 or min_len < 1:
        raise ValueError("seq_len, stride and min_len must be >= 1")
    windows: list[tuple[int, int]] = []
    offset = min(max(offset, 0), length)
    if offset >= min_len:
        windows.append((max(0, offset - seq_len), offset))
    start = offset
    while start < length:
        stop = min(start + seq_len, length)
        if stop - start >= min_len:
            windows.append((start, stop))
        if start + seq_len >= length:
            break
        start += stride
    return windows


def draw_offset(rng: np.random.Generator, seq_len: int, stride: int) -> int:
    """A random start offset in ``[0, min(stride, seq_len))`` (the random-offset option)."""
    return int(rng.integers(0, min(stride, seq_len)))
