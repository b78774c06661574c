"""One batch of `medst embed` work, the same whether it runs in the calling process or as a job on an engine.

`encode_images` turns a batch of `ImageJob`s into one `Encoded` per job (vectors, or the reason the image could
not be read); `encode_texts` does the same for text lines. `embed` calls them directly on its own model, or ships
batches as `ImageBatch` / `TextBatch` jobs to `medst.executors.run_jobs` (local worker processes or Ray tasks),
where each worker process loads the model once (`_worker_encoder`) and keeps it for every later batch. A batch is
encoded as one forward pass in both places, so the vectors are the same numbers (bitwise on the CPU in float32
with the same torch thread count).
"""

from __future__ import annotations

import os
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medst.errors import ImageDecodeError, UserInputError
from medst.inference.encoder import MedSTEncoder
from medst.inference.images import transform_grey
from medst.inference.sources import ImageJob
from medst.storage import RemotePath


@dataclass(frozen=True)
class Encoded:
    """What one image job became: ``error`` (the frontal image failed: no vectors), else ``embedding`` and
    ``cls`` (float32 numpy vectors), and for the lateral image: ``lateral_error`` (it failed; the vectors are
    frontal-only) or ``lateral_used``."""

    error: ImageDecodeError | None = None
    embedding: np.ndarray | None = None
    cls: np.ndarray | None = None
    lateral_error: ImageDecodeError | None = None
    lateral_used: bool = False


@dataclass(frozen=True)
class ModelSpec:
    """How a worker process loads the model: folder, device (None: best available), DICOM preset, decoding
    threads, and torch's CPU threads (None: leave torch's default)."""

    folder: str
    device: str | None
    preset: str | None
    threads: int
    torch_threads: int | None


@dataclass(frozen=True)
class ImageBatch:
    """One job: the images of one forward pass, in input order."""

    model: ModelSpec
    images: list[ImageJob]


@dataclass(frozen=True)
class TextBatch:
    """One job: the (non-empty) text lines of one forward pass, in input order."""

    model: ModelSpec
    lines: list[str]


def _prepare(encoder: MedSTEncoder, item: Path | RemotePath | bytes) -> torch.Tensor:
    if isinstance(item, bytes):
        # Shard members are already intensity-processed and resized by `medst shard`: only the loader transform.
        from medst.shards.members import decode_image as decode_grey

        try:
            grey = decode_grey(item)
        except ValueError as err:
            raise ImageDecodeError("unreadable_image", f"stored image does not decode ({err})") from err
        return transform_grey(grey, encoder.settings)
    if isinstance(item, RemotePath):
        return _prepare_remote(encoder, item)
    return encoder.prepare_image(item)


def _prepare_remote(encoder: MedSTEncoder, url: RemotePath) -> torch.Tensor:
    """An image in object storage: its bytes fetched once (transient failures retried as `medst.storage` retries
    them, as `medst shard` fetches the same images), then decoded from a temporary file of the same name by the
    same code as a local file. A missing object, or one the store keeps failing to serve, is an
    `ImageDecodeError` (an error row), as a missing local file is."""
    try:
        data = url.read_bytes_if_exists()
    except UserInputError as err:
        raise ImageDecodeError("unreadable_image", str(err)) from None
    if data is None:
        raise ImageDecodeError("unreadable_image", f"{url}: no such object")
    with tempfile.TemporaryDirectory(prefix="medst-embed-") as tmp:
        path = Path(tmp) / url.name
        path.write_bytes(data)
        return encoder.prepare_image(path)


def prepare_job(encoder: MedSTEncoder, job: ImageJob) -> tuple[torch.Tensor | ImageDecodeError, Any]:
    """(frontal tensor or its error, lateral tensor / error / None)."""
    if job.error is not None:
        return job.error, None
    try:
        front: torch.Tensor | ImageDecodeError = _prepare(encoder, job.frontal)
    except ImageDecodeError as err:
        return err, None
    lateral: Any = None
    if job.lateral is not None:
        try:
            lateral = _prepare(encoder, job.lateral)
        except ImageDecodeError as err:
            lateral = err
    return front, lateral


def encode_images(encoder: MedSTEncoder, prepared: list[tuple[Any, Any]]) -> list[Encoded]:
    """One forward pass over the prepared jobs of a batch (from `prepare_job`); one `Encoded` per job."""
    good = [i for i, (front, _) in enumerate(prepared) if isinstance(front, torch.Tensor)]
    vectors: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    if good:
        frontal = torch.stack([prepared[i][0] for i in good])
        lats = [prepared[i][1] if isinstance(prepared[i][1], torch.Tensor) else None for i in good]
        lateral = has = None
        if any(x is not None for x in lats):
            zero = torch.zeros_like(frontal[0])
            lateral = torch.stack([zero if x is None else x for x in lats])
            has = torch.tensor([x is not None for x in lats])
        out = encoder.encode_prepared(frontal, lateral, has)
        for k, i in enumerate(good):
            vectors[i] = (out.embedding[k].numpy(), out.cls[k].numpy())
    encoded = []
    for i, (front, lat) in enumerate(prepared):
        if isinstance(front, ImageDecodeError):
            encoded.append(Encoded(error=front))
            continue
        encoded.append(
            Encoded(
                embedding=vectors[i][0],
                cls=vectors[i][1],
                lateral_error=lat if isinstance(lat, ImageDecodeError) else None,
                lateral_used=isinstance(lat, torch.Tensor),
            )
        )
    return encoded


def encode_texts(encoder: MedSTEncoder, lines: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(embedding, cls) of each line, one forward pass."""
    out = encoder.encode_tokens(encoder.tokenize(lines))
    return [(out.embedding[k].numpy(), out.cls[k].numpy()) for k in range(len(lines))]


_LOADED: dict[ModelSpec, MedSTEncoder] = {}
_LOADING = threading.Lock()  # an engine running jobs on threads must load the model once, not once per thread


def _worker_encoder(spec: ModelSpec) -> MedSTEncoder:
    """The model this worker process loaded for ``spec``, loaded on first use (one model kept: Ray reuses its
    worker processes across runs)."""
    with _LOADING:
        if spec not in _LOADED:
            from medst.inference.loading import load

            _LOADED.clear()
            if spec.torch_threads is not None and "OMP_NUM_THREADS" not in os.environ:
                torch.set_num_threads(spec.torch_threads)
            _LOADED[spec] = load(spec.folder, spec.device, preset=spec.preset)
        return _LOADED[spec]


def embed_batch_job(batch: ImageBatch | TextBatch) -> list[Any]:
    """One batch in a worker process (a module-level function of one argument, as engines need): images decoded
    and embedded (one `Encoded` each), or text lines embedded (one ``(embedding, cls)`` each)."""
    encoder = _worker_encoder(batch.model)
    if isinstance(batch, TextBatch):
        return encode_texts(encoder, batch.lines)
    if batch.model.threads > 1 and len(batch.images) > 1:
        with ThreadPoolExecutor(batch.model.threads) as pool:
            prepared = list(pool.map(lambda job: prepare_job(encoder, job), batch.images))
    else:
        prepared = [prepare_job(encoder, job) for job in batch.images]
    return encode_images(encoder, prepared)
