"""Finding host syncs in a training step without a GPU.

On a GPU, reading a tensor's value on the host (``.item()``, ``bool(t.all())``, ``int(t.sum())``) or running an
operator whose output size depends on tensor values (``nonzero``, boolean indexing, ``masked_select``) waits for
every queued kernel: the CPU stops running ahead of the GPU and the chip idles between steps. CUDA's own check is
``torch.cuda.set_sync_debug_mode``; `forbid_host_syncs` finds the same operators at the dispatcher on any device,
so the CPU tests hold the training step to it.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# ATen operators that read device memory back to the host (the first) or size their output by tensor values.
SYNC_OPS = frozenset(
    {
        "_local_scalar_dense",  # .item(), float(t), int(t), bool(t), t.tolist() per element
        "is_nonzero",
        "equal",
        "nonzero",  # also behind boolean-mask indexing and torch.where(cond) with one argument
        "masked_select",
        "_unique2",
        "unique_dim",
        "unique_consecutive",
    }
)


# Indexing operators sync when an index is a boolean mask (its True count sizes the result).
MASK_INDEX_OPS = frozenset({"index", "index_put", "index_put_", "_index_put_impl_"})


def _syncs(name: str, args: Any, kwargs: dict[str, Any]) -> bool:
    if name in MASK_INDEX_OPS:
        indices = args[1] if len(args) > 1 else ()
        return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices)
    if name == "repeat_interleave":  # repeats given as a tensor size the output, unless output_size says it
        tensor_repeats = len(args) == 1 or (len(args) > 1 and isinstance(args[1], torch.Tensor))
        return tensor_repeats and kwargs.get("output_size") is None
    return name in SYNC_OPS


class HostSyncError(RuntimeError):
    """An operator that syncs the host with the device ran where none may."""


class _SyncFinder(TorchDispatchMode):
    def __init__(self, raise_on_sync: bool) -> None:
        super().__init__()
        self.raise_on_sync = raise_on_sync
        self.found: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = func._schema.name.split("::")[-1]
        if _syncs(name, args, kwargs or {}):
            frames = [f for f in traceback.extract_stack()[:-1] if "/torch/" not in f.filename]
            where = f"{frames[-1].filename}:{frames[-1].lineno}: {frames[-1].line}" if frames else "?"
            message = f"aten::{name} at {where}"
            self.found.append(message)
            if self.raise_on_sync:
                raise HostSyncError(f"host sync in a sync-free region: {message}")
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def forbid_host_syncs(raise_on_sync: bool = True) -> Iterator[list[str]]:
    """Inside the block, any operator of `SYNC_OPS` raises `HostSyncError` naming the line that called it (or,
    with ``raise_on_sync=False``, is recorded in the yielded list). Covers forward and backward of code run in the
    block; meant for tests and checks, not for production steps (it slows every operator)."""
    finder = _SyncFinder(raise_on_sync)
    with finder:
        yield finder.found
