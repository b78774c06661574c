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
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medst.errors import ImageDecodeError, UserInputError
from medst.inference.encoder import MedSTEncoder
from medst.inference.images import transform_grey
from medst.inference.sources import ImageJob, image_source
from medst.inference.texts import clean_for_model
from medst.schemas.embed import EmbedConfig, EmbedSummary


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


def _prepare(encoder: MedSTEncoder, item: Path | bytes) -> torch.Tensor:
    if isinstance(item, bytes):
        # Shard members are already intensity-processed and resized by `medst shard`: only the loader transform.
        from medst.shards.members import decode_image as decode_grey

        try:
            grey = decode_grey(item)
        except ValueError as err:
            raise ImageDecodeError("unreadable_image", f"stored image does not decode ({err})") from err
        return transform_grey(grey, encoder.settings)
    return encoder.prepare_image(item)


def _prepare_job(encoder: MedSTEncoder, job: ImageJob) -> tuple[torch.Tensor | ImageDecodeError, Any]:
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


def _chunks(jobs: Iterator[ImageJob], size: int) -> Iterator[list[ImageJob]]:
    while chunk := list(islice(jobs, size)):
        yield chunk


def _embed_images(encoder: MedSTEncoder, config: EmbedConfig, rows: _Rows, summary: EmbedSummary) -> None:
    assert config.input is not None
    source = image_source(config.input, config.image_root, config.frontal_only, config.split)
    summary.skipped_files = source.skipped
    from medst.progress import progress

    bar = progress(total=source.total, unit="img", desc="embedding images", enabled=config.progress)
    start = time.perf_counter()
    pool = ThreadPoolExecutor(config.workers) if config.workers > 1 else None

    def submit(chunk: list[ImageJob]) -> list[Any]:
        if pool is None:
            return [_prepare_job(encoder, j) for j in chunk]
        return [pool.submit(_prepare_job, encoder, j) for j in chunk]

    try:
        chunks = _chunks(source.jobs, config.batch_size)
        pending = next(chunks, None)
        ahead = submit(pending) if pending is not None else []
        while pending is not None:
            chunk, prepared = pending, ahead
            # Decode the next batch in the pool while this one runs through the model.
            pending = next(chunks, None)
            ahead = submit(pending) if pending is not None else []
            results = [p.result() if isinstance(p, Future) else p for p in prepared]
            _encode_chunk(encoder, chunk, results, rows, summary)
            bar.update(len(chunk))
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    summary.image_seconds = time.perf_counter() - start


def _encode_chunk(
    encoder: MedSTEncoder, chunk: list[ImageJob], results: list[Any], rows: _Rows, summary: EmbedSummary
) -> None:
    good = [i for i, (front, _) in enumerate(results) if isinstance(front, torch.Tensor)]
    emb: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    if good:
        frontal = torch.stack([results[i][0] for i in good])
        lats = [results[i][1] if isinstance(results[i][1], torch.Tensor) else None for i in good]
        lateral = has = None
        if any(x is not None for x in lats):
            zero = torch.zeros_like(frontal[0])
            lateral = torch.stack([zero if x is None else x for x in lats])
            has = torch.tensor([x is not None for x in lats])
        out = encoder.encode_prepared(frontal, lateral, has)
        for k, i in enumerate(good):
            emb[i] = (out.embedding[k].numpy(), out.cls[k].numpy())
    for i, (job, (front, lat)) in enumerate(zip(chunk, results, strict=True)):
        summary.images += 1
        base = {"kind": "image", "id": job.id, "path": job.path, "lateral_path": job.lateral_path,
                "view": job.view, "warning": job.warning}  # fmt: skip
        summary.images_flagged += job.warning is not None
        for code in job.warning.split(",") if job.warning else []:
            summary.warnings_by_reason[code] = summary.warnings_by_reason.get(code, 0) + 1
        if isinstance(front, ImageDecodeError):
            summary.image_errors += 1
            summary.errors_by_reason[front.reason] = summary.errors_by_reason.get(front.reason, 0) + 1
            rows.add(**base, error=front.reason, error_message=front.message)
            continue
        lateral_error = None
        if isinstance(lat, ImageDecodeError):
            lateral_error = f"lateral_{lat.reason}"
            summary.errors_by_reason[lateral_error] = summary.errors_by_reason.get(lateral_error, 0) + 1
        views = "frontal+lateral" if isinstance(lat, torch.Tensor) else "frontal"
        rows.add(**base, views=views, embedding=emb[i][0], cls=emb[i][1], lateral_error=lateral_error)


def _embed_texts(encoder: MedSTEncoder, config: EmbedConfig, rows: _Rows, summary: EmbedSummary) -> None:
    assert config.text is not None
    if not config.text.is_file():
        raise UserInputError(f"--text {config.text}: no such file")
    try:
        lines = config.text.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise UserInputError(f"--text {config.text}: not UTF-8 text ({err})") from err
    usable = [(n, line) for n, line in enumerate(lines, start=1) if clean_for_model(line)]
    ok = {n for n, _ in usable}
    vectors: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    from medst.progress import progress

    bar = progress(total=len(usable), unit="text", desc="embedding texts", enabled=config.progress)
    for a in range(0, len(usable), config.batch_size):
        part = usable[a : a + config.batch_size]
        out = encoder.encode_tokens(encoder.tokenize([line for _, line in part]))
        for k, (n, _) in enumerate(part):
            vectors[n] = (out.embedding[k].numpy(), out.cls[k].numpy())
        bar.update(len(part))
    bar.close()
    for n, line in enumerate(lines, start=1):
        summary.texts += 1
        base = {"kind": "text", "id": f"line-{n}", "path": str(config.text), "text": line}
        if n not in ok:
            summary.text_errors += 1
            summary.errors_by_reason["empty_text"] = summary.errors_by_reason.get("empty_text", 0) + 1
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

    # Before the model loads and the work starts: a folder at OUT, or OUT being an input file, is refused now.
    check_output_file(config.out, [config.text, None if config.input is None else Path(config.input)])
    if encoder is None:
        from medst.inference.loading import load

        encoder = load(config.model, config.device, preset=config.preset)
    elif config.preset is not None and config.preset != encoder.settings.preset:
        raise UserInputError("--preset differs from the loaded encoder's preset; load it with that preset")
    summary = EmbedSummary(out=config.out)
    rows = _Rows()
    if config.input is not None:
        _embed_images(encoder, config, rows, summary)
    if config.text is not None:
        _embed_texts(encoder, config, rows, summary)
    from medst._version import __version__

    metadata = {
        "medst_version": __version__,
        "model": str(encoder.source),
        "preprocess": json.dumps(encoder.settings.model_dump(mode="json"), sort_keys=True),
        "options": config.model_dump_json(exclude={"progress"}),
    }
    write_rows(rows, config.out, metadata)
    return summary
