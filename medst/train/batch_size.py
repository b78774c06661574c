"""``--batch-size auto``: the largest per-rank batch (in windows) whose training step fits in a stated share of the
device's memory, found once before training by trying real steps of the model on worst-case batches.

A batch "fits" when a forward + backward of the model on ``windows`` windows of ``seq_len`` studies, every study with
a lateral and reports at the full token length, leaves room for the optimizer state (AdamW: two fp32 tensors per
trainable parameter) within ``share`` of the device's memory, and raises no out-of-memory error. On CUDA the
figure is the allocator's peak; on the CPU, which has no allocator to ask, it is the bytes autograd saves for the
backward pass (the part that grows with the batch) plus parameters, gradients and optimizer state, against a
limit of ``share`` of the machine's memory (or an explicit limit, which is how tests exercise the search).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from medst.errors import UserInputError

if TYPE_CHECKING:
    from medst.schemas.train import PretrainConfig
    from medst.train.distributed import DistInfo


@dataclass
class Trial:
    windows: int
    fits: bool
    bytes: int | None  # measured memory of the step (None when it ran out of memory)


@dataclass
class BatchSizeSearch:
    """The result: ``windows`` chosen, the ``limit_bytes`` it had to fit in, and every trial in order."""

    windows: int
    limit_bytes: int
    trials: list[Trial] = field(default_factory=list)


def largest_fitting(fits: Callable[[int], bool], start: int, minimum: int, maximum: int) -> int:
    """The largest ``b`` in ``[minimum, maximum]`` with ``fits(b)``, for a ``fits`` that is true up to some size and
    false above it: doubling up from ``start`` (halving down when ``start`` does not fit) to bracket the edge, then
    bisection. Raises `UserInputError` when not even ``minimum`` fits."""
    if not 1 <= minimum <= maximum:
        raise ValueError(f"need 1 <= minimum <= maximum, got {minimum}, {maximum}")
    b = min(max(start, minimum), maximum)
    good: int | None = None
    bad: int | None = None
    if fits(b):
        good = b
        while good < maximum:
            b = min(2 * good, maximum)
            if not fits(b):
                bad = b
                break
            good = b
    else:
        bad = b
        while good is None and bad > minimum:
            b = max(bad // 2, minimum)
            if fits(b):
                good = b
            else:
                bad = b
        if good is None:
            raise UserInputError(
                f"not even {minimum} windows per batch fit in the memory allowed; "
                "use --grad-checkpointing, a smaller --seq-len, or a larger memory share"
            )
    while bad is not None and bad - good > 1:
        mid = (good + bad) // 2
        if fits(mid):
            good = mid
        else:
            bad = mid
    return good


@contextlib.contextmanager
def saved_bytes_limit(limit: int) -> Iterator[list[int]]:
    """Count the bytes autograd saves for backward inside the block (yielded as a one-element list) and raise
    ``torch.OutOfMemoryError`` as soon as they pass ``limit``, as an allocator with that much room would."""
    total = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        total[0] += t.numel() * t.element_size()
        if total[0] > limit:
            raise torch.OutOfMemoryError(f"saved activations passed the limit of {limit} bytes")
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield total


def static_bytes(model: nn.Module) -> int:
    """Parameters, their gradients and AdamW's two fp32 moments: the memory a step needs whatever the batch."""
    params = [p for p in model.parameters()]
    weights = sum(p.numel() * p.element_size() for p in params)
    trainable = [p for p in params if p.requires_grad]
    grads = sum(p.numel() * p.element_size() for p in trainable)
    return weights + grads + sum(2 * 4 * p.numel() for p in trainable)


def device_memory_bytes(device: torch.device) -> int:
    """Total memory of ``device`` (the GPU's, or the machine's RAM for the CPU)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[1])
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def step_memory(
    model: nn.Module,
    make_batch: Callable[[int], object],
    windows: int,
    device: torch.device,
    limit: int,
    autocast: Callable[[], contextlib.AbstractContextManager[object]],
) -> int | None:
    """Memory of one training step on ``windows`` windows (bytes, optimizer state included), or None when it ran
    out of memory. Leaves no gradients behind."""
    batch = make_batch(windows)
    static = 0 if device.type == "cuda" else static_bytes(model)
    try:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            with autocast():
                out = model(batch)
            out.loss.backward()  # type: ignore[attr-defined]
            torch.cuda.synchronize(device)
            optimizer_state = sum(2 * 4 * p.numel() for p in model.parameters() if p.requires_grad)
            return int(torch.cuda.max_memory_allocated(device)) + optimizer_state
        with saved_bytes_limit(max(0, limit - static)) as saved, autocast():
            out = model(batch)
        out.loss.backward()  # type: ignore[attr-defined]
        return static + saved[0]
    except torch.OutOfMemoryError:
        return None
    finally:
        out = None
        batch = None
        model.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()


def find_batch_size(
    model: nn.Module,
    make_batch: Callable[[int], object],
    device: torch.device,
    share: float,
    start: int,
    minimum: int = 2,
    maximum: int = 512,
    limit_bytes: int | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext,
) -> BatchSizeSearch:
    """Search the largest number of windows per batch whose step fits in ``share`` of the device's memory (or in
    ``limit_bytes`` when given). ``make_batch(windows)`` returns a worst-case batch on ``device``."""
    limit = limit_bytes if limit_bytes is not None else int(share * device_memory_bytes(device))
    trials: list[Trial] = []

    def fits(windows: int) -> bool:
        used = step_memory(model, make_batch, windows, device, limit, autocast)
        ok = used is not None and used <= limit
        trials.append(Trial(windows, ok, used))
        return ok

    was_training = model.training
    model.train()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            windows = largest_fitting(fits, start, minimum, maximum)
    finally:
        model.train(was_training)
    return BatchSizeSearch(windows, limit, trials)


def auto_batch_size(config: PretrainConfig, text_path: Path | None, info: DistInfo) -> BatchSizeSearch:
    """``--batch-size auto`` for a run: search on a freshly built model (then freed), worst-case random batches of
    the run's window length, the run's precision; every rank searches its own device and all take the smallest."""
    from medst.model.building import build_model, model_config_for
    from medst.model.dummy import random_batch
    from medst.train.validation import autocast_for

    model = build_model(config, text_path).to(info.device)
    model_cfg = model_config_for(config, text_path)
    # Token ids within the vocabulary of the text model actually loaded (a local folder may differ from the preset).
    text_cfg = model_cfg.text.model_copy(update={"vocab_size": int(model.text.bert.config.vocab_size)})
    model_cfg = model_cfg.model_copy(update={"text": text_cfg})

    def make_batch(windows: int) -> object:
        return random_batch(model_cfg, [config.seq_len] * windows, lateral_fraction=1.0, device=info.device)

    try:
        search = find_batch_size(
            model,
            make_batch,
            info.device,
            config.memory_share,
            start=config.batch_size,
            maximum=config.batch_size_max,
            autocast=lambda: autocast_for(config, info.device),
        )
    finally:
        del model
        if info.device.type == "cuda":
            torch.cuda.empty_cache()
    if info.distributed:
        import torch.distributed as dist

        smallest = torch.tensor([search.windows], device=info.device)
        dist.all_reduce(smallest, op=dist.ReduceOp.MIN)
        search.windows = int(smallest.item())
    return search
