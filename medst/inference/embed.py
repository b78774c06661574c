"""`medst embed`: images and/or text lines -> one Parquet file of ids, paths and vectors.

Output columns (one row per image job or text line, in input order, images first):
``kind`` (``image``/``text``), ``id``, ``path`` (frontal image, shard member or text file), ``lateral_path``,
``text`` (the raw line), ``views`` (``frontal``/``frontal+lateral``), ``embedding`` (Array[f32, proj_dim],
L2-normalised), ``cls`` (Array[f32, width or text hidden]), ``error`` (reason code, null when fine),
``error_message``, ``lateral_error`` (the lateral image failed; the row holds the frontal-only embedding),
``view`` (of the image in ``path``: frontal / lateral / other / unknown; from the DICOM header for folders and
globs, see `medst.inference.views`) and ``warning`` (codes such as ``lateral_alone``, ``non_chest``,
``view_unknown``, joined with ``,``; null when the image is a frontal chest film).
A file that cannot be decoded becomes a row with ``error`` set and null vectors; the run never stops for one.
The Parquet key-value metadata holds the medst version, the model folder and the preprocessing used.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import chain, islice
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from medst.errors import UserInputError
from medst.executors import check_engine, use_engine
from medst.inference.embed_batches import (
    Encoded,
    ImageBatch,
    ModelSpec,
    TextBatch,
    embed_batch_job,
    encode_images,
    encode_texts,
    prepare_job,
)
from medst.inference.encoder import MedSTEncoder
from medst.inference.sources import ImageJob, ImageSource, image_source
from medst.inference.texts import clean_for_model
from medst.schemas.embed import EmbedConfig, EmbedSummary

T = TypeVar("T")
R = TypeVar("R")
# Batches per `run_jobs` call on an engine: bounds what a streamed (shard) input holds in memory at once.
_WAVE_BATCHES = 256



@dataclass
class _Rows:
    kind: list[str] = field(default_factory=list)
    id: list[str] = field(default_factory=list)
    path: list[str | None] = field(default_factory=list)
    lateral_path: list[str | None] = field(default_factory=list)
    text: list[str | None] = field(default_factory=list)
    views: list[str | None] = field(default_factory=list)
    embedding: list[np.ndarray | None] = field(default_factory=list)
    cls: list[np.ndarray | None] = field(default_factory=list)
    error: list[str | None] = field(default_factory=list)
    error_message: list[str | None] = field(default_factory=list)
    lateral_error: list[str | None] = field(default_factory=list)
    view: list[str | None] = field(default_factory=list)
    warning: list[str | None] = field(default_factory=list)

    def add(self, **values: Any) -> None:
        for name in self.__dataclass_fields__:
            getattr(self, name).append(values.get(name))


def _chunks(jobs: Iterator[T], size: int) -> Iterator[list[T]]:
    while chunk := list(islice(jobs, size)):
        yield chunk


def _on_engine(config: EmbedConfig) -> bool:
    """Whether the batches go to `medst.executors.run_jobs` (worker processes or Ray) rather than being encoded
    here: with ``--engine ray`` or more than one ``--workers``."""
    return config.engine == "ray" or config.workers > 1


def _model_spec(encoder: MedSTEncoder, config: EmbedConfig) -> ModelSpec:
    # Worker processes share the CPU cores (torch would otherwise give each of them all of them).
    per_worker = max(1, (os.cpu_count() or 1) // max(1, config.workers))
    return ModelSpec(
        folder=str(encoder.source if encoder.source is not None else config.model),
        device=config.device,
        preset=encoder.settings.preset,
        threads=config.threads,
        torch_threads=per_worker,
    )


def _image_source(config: EmbedConfig, summary: EmbedSummary) -> ImageSource | None:
    if config.input is None:
        return None
    source = image_source(config.input, config.image_root, config.frontal_only, config.split)
    summary.skipped_files = source.skipped
    return source


def _bars(config: EmbedConfig, source: ImageSource | None, texts: int | None) -> tuple[Any, Any]:
    from medst.progress import progress

    images = progress(total=None if source is None else source.total, unit="img", desc="embedding images",
                      enabled=config.progress and source is not None)  # fmt: skip
    lines = progress(
        total=texts, unit="text", desc="embedding texts", enabled=config.progress and texts is not None
    )
    return images, lines


def _embed_here(
    encoder: MedSTEncoder,
    config: EmbedConfig,
    text_parts: list[list[str]] | None,
    rows: _Rows,
    summary: EmbedSummary,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Images (rows added) and text batches (vectors returned) in this process, with this model."""
    source = _image_source(config, summary)
    image_bar, text_bar = _bars(config, source, None if text_parts is None else sum(map(len, text_parts)))
    vectors: list[tuple[np.ndarray, np.ndarray]] = []
    with image_bar, text_bar:
        if source is not None:
            start = time.perf_counter()
            _embed_images_here(encoder, config, source.jobs, rows, summary, image_bar)
            summary.image_seconds = time.perf_counter() - start
        for part in text_parts or []:
            vectors += encode_texts(encoder, part)
            text_bar.update(len(part))
    return vectors


def _embed_on_engine(
    encoder: MedSTEncoder,
    config: EmbedConfig,
    text_parts: list[list[str]] | None,
    rows: _Rows,
    summary: EmbedSummary,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The same batches as `_embed_here` as jobs on the engine set by `use_engine`; each worker process loads
    the model once. Text batches go with the first wave of image batches, so no second set of workers (and
    models) is started for them."""
    from medst.executors import run_jobs

    spec = _model_spec(encoder, config)
    source = _image_source(config, summary)
    image_bar, text_bar = _bars(config, source, None if text_parts is None else sum(map(len, text_parts)))
    text_batches: list[Any] = [TextBatch(spec, part) for part in text_parts or []]
    # Waves of batches: a streamed shard input is never held in memory all at once.
    waves: Iterator[list[list[ImageJob]]] = (
        _chunks(_chunks(source.jobs, config.batch_size), _WAVE_BATCHES) if source is not None else iter([])
    )
    waves = chain([next(waves, [])], waves)  # at least one wave: the text batches go with it
    vectors: list[tuple[np.ndarray, np.ndarray]] = []
    start = time.perf_counter()
    with image_bar, text_bar:
        for k, wave in enumerate(waves):
            batches = [ImageBatch(spec, chunk) for chunk in wave] + (text_batches if k == 0 else [])
            results: dict[int, list[Any]] = {}

            def keep(i: int, result: list[Any], n_image_batches: int = len(wave)) -> None:
                results[i] = result  # noqa: B023 (called only inside this iteration's run_jobs)
                (image_bar if i < n_image_batches else text_bar).update(len(result))

            run_jobs(
                embed_batch_job,
                batches,
                config.workers,
                keep,
                names=[f"embed batch {i}" for i in range(len(batches))],
                context="spawn",  # forking a process that holds torch's thread pools can deadlock
            )
            done = [item for i in range(len(batches)) for item in results[i]]
            n_images = sum(map(len, wave))
            _add_image_rows([job for chunk in wave for job in chunk], done[:n_images], rows, summary)
            vectors += done[n_images:]
    if source is not None:
        summary.image_seconds = time.perf_counter() - start
    return vectors


def _embed_images_here(
    encoder: MedSTEncoder,
    config: EmbedConfig,
    jobs: Iterator[ImageJob],
    rows: _Rows,
    summary: EmbedSummary,
    bar: Any,
) -> None:
    pool = ThreadPoolExecutor(config.threads) if config.threads > 1 else None

    def submit(chunk: list[ImageJob]) -> list[Any]:
        if pool is None:
            return [prepare_job(encoder, j) for j in chunk]
        return [pool.submit(prepare_job, encoder, j) for j in chunk]

    try:
        chunks = _chunks(jobs, config.batch_size)
        pending = next(chunks, None)
        ahead = submit(pending) if pending is not None else []
        while pending is not None:
            chunk, prepared = pending, ahead
            # Decode the next batch in the pool while this one runs through the model.
            pending = next(chunks, None)
            ahead = submit(pending) if pending is not None else []
            results = [p.result() if isinstance(p, Future) else p for p in prepared]
            _add_image_rows(chunk, encode_images(encoder, results), rows, summary)
            bar.update(len(chunk))
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _count(counts: dict[str, int], key: str) -> None:
    counts[key] = counts.get(key, 0) + 1


def _add_image_rows(jobs: list[ImageJob], encoded: list[Encoded], rows: _Rows, summary: EmbedSummary) -> None:
    for job, done in zip(jobs, encoded, strict=True):
        summary.images += 1
        base = {"kind": "image", "id": job.id, "path": job.path, "lateral_path": job.lateral_path,
                "view": job.view, "warning": job.warning}  # fmt: skip
        summary.images_flagged += job.warning is not None
        for code in job.warning.split(",") if job.warning else []:
            _count(summary.warnings_by_reason, code)
        if done.error is not None:
            summary.image_errors += 1
            _count(summary.errors_by_reason, done.error.reason)
            rows.add(**base, error=done.error.reason, error_message=done.error.message)
            continue
        lateral_error = None
        if done.lateral_error is not None:
            lateral_error = f"lateral_{done.lateral_error.reason}"
            _count(summary.errors_by_reason, lateral_error)
        views = "frontal+lateral" if done.lateral_used else "frontal"
        rows.add(**base, views=views, embedding=done.embedding, cls=done.cls, lateral_error=lateral_error)


def _read_lines(config: EmbedConfig) -> tuple[list[str], list[tuple[int, str]]]:
    """The lines of ``config.text`` and the (line number, line) of those with words to embed."""
    assert config.text is not None
    if not config.text.is_file():
        raise UserInputError(f"--text {config.text}: no such file")
    try:
        lines = config.text.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise UserInputError(f"--text {config.text}: not UTF-8 text ({err})") from err
    return lines, [(n, line) for n, line in enumerate(lines, start=1) if clean_for_model(line)]


def _add_text_rows(
    config: EmbedConfig,
    lines: list[str],
    usable: list[tuple[int, str]],
    done: list[tuple[np.ndarray, np.ndarray]],
    rows: _Rows,
    summary: EmbedSummary,
) -> None:
    vectors = {n: pair for (n, _), pair in zip(usable, done, strict=True)}
    for n, line in enumerate(lines, start=1):
        summary.texts += 1
        base = {"kind": "text", "id": f"line-{n}", "path": str(config.text), "text": line}
        if n not in vectors:
            summary.text_errors += 1
            _count(summary.errors_by_reason, "empty_text")
            rows.add(**base, error="empty_text", error_message=f"line {n} has no words left after cleaning")
            continue
        rows.add(**base, embedding=vectors[n][0], cls=vectors[n][1])


def _vector_column(name: str, values: list[np.ndarray | None]) -> Any:
    import polars as pl

    dims = {v.shape[0] for v in values if v is not None}
    if len(dims) > 1:
        # Image CLS (ViT width) and text CLS (BERT hidden) can differ: store variable-length lists then.
        return pl.Series(name, [None if v is None else v.tolist() for v in values], dtype=pl.List(pl.Float32))
    dim = dims.pop() if dims else 0
    filled = (
        np.stack([np.zeros(dim, np.float32) if v is None else v.astype(np.float32) for v in values])
        if values
        else np.zeros((0, dim), np.float32)
    )
    series = pl.Series(name, filled, dtype=pl.Array(pl.Float32, dim))
    nulls = pl.Series([v is None for v in values], dtype=pl.Boolean)
    return pl.select(pl.when(nulls).then(None).otherwise(series).alias(name)).to_series()


def write_rows(rows: _Rows, out: Path, metadata: dict[str, str]) -> None:
    """Write the rows to ``out`` atomically (temporary name, then rename)."""
    import polars as pl

    columns: dict[str, Any] = {}
    for name in rows.__dataclass_fields__:
        values = getattr(rows, name)
        if name in ("embedding", "cls"):
            columns[name] = _vector_column(name, values)
        else:
            columns[name] = pl.Series(name, values, dtype=pl.String)
    df = pl.DataFrame(columns)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    df.write_parquet(tmp, metadata=metadata)
    os.replace(tmp, out)


def embed(config: EmbedConfig, encoder: MedSTEncoder | None = None) -> EmbedSummary:
    """Embed the images of ``config.input`` and/or the lines of ``config.text`` into ``config.out``.

    ``encoder``: an already loaded model (else ``config.model`` is loaded). Raises `UserInputError` for a wrong
    path or an unusable model; bad images and empty lines become error rows.
    """
    from medst.outputs import check_output_file

    if _on_engine(config):
        check_engine(config.engine, config.ray_address)
    # Before the model loads and the work starts: a folder at OUT, or OUT being an input file, is refused now.
    check_output_file(config.out, [config.text, None if config.input is None else Path(config.input)])
    if encoder is None:
        from medst.inference.loading import load

        # On an engine the workers load their own model (on --device); this one only says what was loaded.
        encoder = load(config.model, "cpu" if _on_engine(config) else config.device, preset=config.preset)
    elif config.preset is not None and config.preset != encoder.settings.preset:
        raise UserInputError("--preset differs from the loaded encoder's preset; load it with that preset")
    summary = EmbedSummary(out=config.out)
    rows = _Rows()
    lines, usable = _read_lines(config) if config.text is not None else ([], [])
    text_parts = [[line for _, line in part] for part in _chunks(iter(usable), config.batch_size)]
    wanted = text_parts if config.text is not None else None
    if _on_engine(config):
        # One engine for images and texts: a Ray cluster (or a private local Ray) is connected once.
        with use_engine(config.engine, config.ray_address, config.workers):
            vectors = _embed_on_engine(encoder, config, wanted, rows, summary)
    else:
        vectors = _embed_here(encoder, config, wanted, rows, summary)
    if config.text is not None:
        _add_text_rows(config, lines, usable, vectors, rows, summary)
    from medst._version import __version__

    metadata = {
        "medst_version": __version__,
        "model": str(encoder.source),
        "preprocess": json.dumps(encoder.settings.model_dump(mode="json"), sort_keys=True),
        "options": config.model_dump_json(exclude={"progress"}),
    }
    write_rows(rows, config.out, metadata)
    return summary
