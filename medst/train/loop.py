"""`pretrain(config)`: the training loop (one process or one rank of a torchrun job).

Determinism: the model is initialised from ``seed`` (the same on every rank), then each rank seeds its own
stream with ``seed + rank`` (dropout differs per rank, as with independent GPUs). Data iterators are created and
validation runs inside `torch.random.fork_rng`, so the training random stream depends only on the optimizer
steps taken; together with the saved RNG states and data position this makes a resumed run bitwise identical to
an uninterrupted one on the CPU.
"""

from __future__ import annotations

import contextlib
import math
import random
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medst.batch import Batch
from medst.errors import UserInputError
from medst.model.building import build_model, check_init_image, load_tokenizer, model_config_for
from medst.outputs import check_output_dir, claim_output_dir
from medst.schemas.train import (
    PretrainConfig,
    RunSummary,
    config_differences,
    config_to_yaml,
    resolve_config,
    with_absolute_paths,
)
from medst.shards.index import list_entries
from medst.train import checkpoint as ckpt
from medst.train.components import (
    build_loaders,
    check_complete_shards,
    compat_mismatch,
    prepare_text_model,
)
from medst.train.distributed import (
    DistInfo,
    all_reduce_mean,
    barrier,
    init_distributed,
    shutdown,
    sync_buffers,
)
from medst.train.logging import RunLogger, plot_curves
from medst.train.optim import WarmupCosineSchedule, build_optimizer
from medst.train.stopping import StopSignals
from medst.train.trackers import resolve_trackers
from medst.train.validation import autocast_for, validate


def weights_digest(model: nn.Module) -> str:
    """SHA-256 over the model's state dict (names, dtypes, shapes, bytes, sorted by name): equal digests mean
    bitwise-equal weights, e.g. across the ranks of a DDP run or between a resumed and an unbroken run."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        value = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{value.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class _DataStream:
    """Endless batches across epochs; knows its epoch and hands the loader's position to checkpoints."""

    def __init__(self, loader: Any, epoch: int) -> None:
        self.loader = loader
        self.epoch = epoch
        self._it: Iterator[Batch] | None = None

    def next(self) -> Batch:
        for _ in range(3):
            if self._it is None:
                if self.loader.state_dict().get("batches_consumed", 0) >= self.loader.batches_per_epoch:
                    # A checkpoint taken right at the end of an epoch resumes into the next one.
                    self.epoch += 1
                    self.loader.set_epoch(self.epoch)
                with torch.random.fork_rng(devices=[]):
                    self._it = iter(self.loader)
            try:
                return next(self._it)
            except StopIteration:
                self._it = None
                self.epoch += 1
                self.loader.set_epoch(self.epoch)
        raise RuntimeError("the training loader yields no batches")


def total_steps_for(config: PretrainConfig, batches_per_epoch: int) -> int:
    """Optimizer steps of the whole run (``steps``, or ``epochs`` worth of batches / ``accumulate``)."""
    if config.steps is not None:
        return config.steps
    assert config.epochs is not None
    return max(1, math.floor(config.epochs * batches_per_epoch / config.accumulate))


# What a run of an older medst (before output markers) left in its folder.
_RUN_FILES = ("config.yaml", "metrics.jsonl", "checkpoints")


def pretrain(config: PretrainConfig, loaders: tuple[Any, Any] | None = None) -> RunSummary:
    """Train Med-ST as ``config`` says; returns the run summary (throughput and export are filled on rank 0).

    Writes ``RUN/config.yaml``, ``RUN/checkpoints/step-N/``, ``RUN/metrics.jsonl``, ``RUN/tensorboard/``,
    ``RUN/curves.png`` and ``RUN/export/`` (rank 0). With ``resume`` it continues from a checkpoint.

    SIGINT or SIGTERM during training (on any rank) stops every rank after the same step with a complete
    checkpoint; the summary then says ``stopped_early`` and names the signal in ``stop_signal``.
    Any other error ends the trackers' runs as failed (MLflow ``FAILED``, W&B exit code 1) and then propagates.

    ``loaders``: (train, validation or None) objects with the `TimelineLoader` interface (``batches_per_epoch``,
    ``set_epoch``, iteration, ``state_dict``/``load_state_dict``) to use instead of streaming ``config.shards``
    (benchmarks, custom data); None builds them from the shards.
    """
    info = init_distributed(config.device)
    stopper = StopSignals(info)
    opened: list[RunLogger] = []  # the run's logger, once `_run` has opened its trackers
    try:
        return _run(config, info, loaders, stopper, opened)
    except BaseException:
        # Training raised: the tracker runs end as failed (not left "running"), then the error goes on unchanged.
        for logger in opened:
            logger.close(failed=True)
        raise
    finally:
        stopper.restore()
        shutdown(info)


def _check_resume_config(path: Path, config: PretrainConfig) -> None:
    saved = resolve_config(path / "config.yaml")
    differing = config_differences(saved, config)
    if differing:
        raise UserInputError(
            f"cannot resume from {path}: the run was started with different {', '.join(differing)}; "
            "resume with the original options (see RUN/config.yaml)"
        )


def _warn(line: str) -> None:
    print(f"warning: {line}", file=sys.stderr, flush=True)


def _run(
    config: PretrainConfig,
    info: DistInfo,
    loaders: tuple[Any, Any] | None,
    stopper: StopSignals,
    opened: list[RunLogger],
) -> RunSummary:
    started = time.perf_counter()
    run_dir = config.out
    # Checked on every rank before the first collective: a rank failing alone (rank 0 building the text model)
    # would leave the others in a barrier, which gloo ends with a connection error instead of this message.
    if loaders is None and not list_entries(config.shards, split=config.train_split):
        raise UserInputError(f"no complete shard of split {config.train_split!r} in {config.shards}")
    if loaders is None:
        check_complete_shards(config)  # an incomplete --part set, before the run folder is made
        mismatch = compat_mismatch(config)
        if mismatch is not None and info.is_main:
            _warn(mismatch)
    check_init_image(config)  # before the demo text model is trained, not minutes later
    resolve_trackers(config.loggers, config.tensorboard)  # a missing tracker package, likewise
    # Every rank checks (read-only) so that all fail alike; rank 0 alone writes the marker.
    run_inputs = [config.shards]  # a --text-model inside RUN (RUN/text_model of a demo run) is fine
    check_output_dir(run_dir, "pretrain", inputs=run_inputs, legacy_markers=_RUN_FILES)
    if info.is_main:
        claim_output_dir(run_dir, "pretrain", inputs=run_inputs, legacy_markers=_RUN_FILES)
    barrier(info)
    resume_from = ckpt.resolve_resume(config.resume, run_dir, warn=_warn if info.is_main else None)
    if resume_from is not None:
        if config.batch_size_auto:  # keep the batch size found when the run started
            found = resolve_config(resume_from / "config.yaml").batch_size
            config = config.model_copy(update={"batch_size": found})
        _check_resume_config(resume_from, config)

    text_path = prepare_text_model(config, run_dir, info)
    if config.batch_size_auto and resume_from is None:
        config = _auto_batch_size(config, text_path, info)
    model_cfg = model_config_for(config, text_path)
    tokenizer = load_tokenizer(text_path)
    # Loaders first: their worker processes start up while the model is built.
    train_loader, val_loader = loaders or build_loaders(config, model_cfg, tokenizer, info)
    seed_everything(config.seed)  # identical initial weights on every rank
    model = build_model(config, text_path).to(info.device)
    seed_everything(config.seed + info.rank)
    if train_loader.batches_per_epoch < config.accumulate:
        raise UserInputError(
            f"{config.shards}: only {train_loader.batches_per_epoch} training batches per epoch per rank; "
            "lower --batch-size or --seq-len, or use fewer processes"
        )
    total_steps = total_steps_for(config, train_loader.batches_per_epoch)

    # On CUDA the fused AdamW kernel updates every parameter in a few launches (as gpu_check.py's model step does).
    optimizer = build_optimizer(
        model, config.lr, config.weight_decay, config.betas, config.eps, fused=info.device.type == "cuda"
    )
    schedule = WarmupCosineSchedule(optimizer, total_steps, config.lr, config.warmup_fraction, config.min_lr)
    step, epoch, studies_seen = 0, 0, 0
    if resume_from is not None:
        loaded = ckpt.load_checkpoint(resume_from, model, optimizer, info.rank)
        step, epoch = int(loaded.trainer["step"]), int(loaded.trainer["epoch"])
        studies_seen = int(loaded.trainer.get("studies_seen", 0))
        schedule.load_state_dict(loaded.trainer["schedule"])
        train_loader.load_state_dict(loaded.data_state)
    else:
        train_loader.set_epoch(0)
    # Stored with absolute local paths: `--resume latest` may run from another working directory.
    config = with_absolute_paths(config)
    config_yaml = config_to_yaml(config)
    if info.is_main:
        (run_dir / "config.yaml").write_text(config_yaml)

    train_module: nn.Module = model
    ddp: nn.parallel.DistributedDataParallel | None = None
    if info.distributed:
        ddp = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[info.device.index] if info.device.type == "cuda" else None,
            find_unused_parameters=config.find_unused_parameters,
        )
        train_module = ddp
    if config.compile:
        train_module = torch.compile(train_module)  # type: ignore[assignment]

    logger = RunLogger(run_dir, total_steps, step, info.is_main, config.progress, config.tensorboard, config)
    opened.append(logger)
    if resume_from is not None:
        logger.message(f"resumed from {resume_from} at step {step}")
    stream = _DataStream(train_loader, epoch)
    summary = RunSummary(run_dir=run_dir, total_steps=total_steps, world_size=info.world_size)
    stop_at = total_steps
    if config.max_steps_this_invocation is not None:
        stop_at = min(total_steps, step + config.max_steps_this_invocation)

    model.train()
    stopper.install()  # from here on SIGINT/SIGTERM stop the loop at a step boundary, after a checkpoint
    train_time = 0.0
    window_studies, window_time, window_steps = 0, 0.0, 0
    window_sums: dict[str, Any] = {}
    skipped_samples = 0  # damaged samples this rank left out since this invocation started
    params = [p for p in model.parameters() if p.requires_grad]
    while step < stop_at:
        t0 = time.perf_counter()
        lr = schedule.lr()
        step_sums: dict[str, torch.Tensor] = {}  # loss terms and in-batch accuracies, kept on the device
        for micro in range(config.accumulate):
            batch = stream.next().to(info.device, non_blocking=True)
            sync = (
                ddp.no_sync()
                if ddp is not None and micro < config.accumulate - 1
                else contextlib.nullcontext()
            )
            with sync:
                with autocast_for(config, info.device):
                    out = train_module(batch)
                (out.loss / config.accumulate).backward()
            terms = {"loss": out.loss, **{f"loss_{k}": v for k, v in out.terms.items()}, **out.metrics}
            for key, value in terms.items():
                step_sums[key] = step_sums.get(key, 0) + value.detach().float() / config.accumulate
            window_studies += batch.num_studies
            if batch.skipped:  # --skip-bad-samples: named once each, counted in the logged metrics
                skipped_samples += len(batch.skipped)
                for line in batch.skipped:
                    logger.message(f"skipped a damaged sample: {line}")
            studies_seen += batch.num_studies * info.world_size
        if config.max_grad_norm is not None:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            step_sums["grad_norm"] = grad_norm.detach().float()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
        step += 1
        logger.advance()
        for key, tensor in step_sums.items():
            window_sums[key] = window_sums.get(key, 0) + tensor
        window_steps += 1
        elapsed = time.perf_counter() - t0
        window_time += elapsed
        train_time += elapsed
        # Every rank at the same step: stop here (after a checkpoint) if any rank got SIGINT/SIGTERM.
        stop_signal = stopper.agreed() if step < stop_at else 0

        if step % config.log_every == 0 or step == stop_at or stop_signal:
            values = {k: float(v) / window_steps for k, v in window_sums.items()}
            values = all_reduce_mean(values, info)
            values["lr"] = lr
            values["epoch"] = stream.epoch
            values["studies_per_s"] = window_studies * info.world_size / max(window_time, 1e-9)
            if config.skip_bad_samples:
                values["skipped_samples"] = float(skipped_samples)
            logger.log("train", step, values)
            summary.first_loss = values["loss"] if summary.first_loss is None else summary.first_loss
            summary.last_loss = values["loss"]
            window_studies, window_time, window_sums, window_steps = 0, 0.0, {}, 0

        validating = (
            not stop_signal
            and val_loader is not None
            and config.val_every is not None
            and (step % config.val_every == 0 or step == total_steps)
        )
        checkpointing = (
            (config.ckpt_every is not None and step % config.ckpt_every == 0)
            or step == stop_at
            or bool(stop_signal)
        )
        if validating or checkpointing:
            sync_buffers(model, info)  # every rank validates and saves rank 0's BatchNorm statistics
        if validating:
            summary.val = validate(model, val_loader, config, info)
            logger.log("val", step, summary.val)

        if checkpointing:
            trainer_state = {
                "step": step,
                "epoch": stream.epoch,
                "total_steps": total_steps,
                "studies_seen": studies_seen,
                "schedule": schedule.state_dict(),
                "scaler": None,  # bf16 autocast needs no loss scaling
                "world_size": info.world_size,
                "last_loss": summary.last_loss,
            }
            summary.last_checkpoint = _save_checkpoint(
                run_dir, step, model, optimizer, trainer_state, config, config_yaml, train_loader, info
            )
        if stop_signal:
            summary.stop_signal = stop_signal
            logger.message(
                f"stopped by {signal.Signals(stop_signal).name} at step {step}/{total_steps}: checkpoint "
                f"{summary.last_checkpoint} saved; continue with --resume latest"
            )
            break

    stopper.restore()  # a signal from here on (export, plots) ends the process as usual
    if loaders is None:  # stop the loader worker processes this run started
        for loader in (train_loader, val_loader):
            if loader is not None:
                loader.close()
    summary.steps = step
    summary.epochs = step * config.accumulate / train_loader.batches_per_epoch
    summary.train_s = train_time
    summary.studies = studies_seen
    summary.stopped_early = step < total_steps
    summary.weights_sha256 = weights_digest(model)
    summary.studies_per_s = _mean_throughput(run_dir) if info.is_main else 0.0
    if info.is_main:
        curves = plot_curves(run_dir / "metrics.jsonl", run_dir / "curves.png")
        if curves is not None:
            logger.log_artifact(curves)
    logger.close()
    if info.is_main and not summary.stopped_early and config.export:
        from medst.train.export import export_run

        summary.wall_s = time.perf_counter() - started
        summary.export_dir = export_run(model, tokenizer, config, summary, run_dir / "export")
    summary.wall_s = time.perf_counter() - started
    barrier(info)
    return summary


def _save_checkpoint(
    run_dir: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    config: PretrainConfig,
    config_yaml: str,
    train_loader: Any,
    info: DistInfo,
) -> Path:
    if info.is_main:
        stage = ckpt.begin_checkpoint(run_dir, step)
    barrier(info)
    stage = ckpt.staging_dir(run_dir, step)
    ckpt.write_rank_state(stage, info.rank, train_loader.state_dict())
    if info.is_main:
        ckpt.write_main_state(stage, model, optimizer, trainer_state, config_yaml)
    barrier(info)
    if info.is_main:
        ckpt.commit_checkpoint(run_dir, step, config.keep_checkpoints)
    barrier(info)
    return ckpt.checkpoint_dir(run_dir, step)


def _auto_batch_size(config: PretrainConfig, text_path: Path | None, info: DistInfo) -> PretrainConfig:
    """Find the batch size once, before anything is built for training; record the trials in the run."""
    import dataclasses
    import json

    from medst.train.batch_size import auto_batch_size

    search = auto_batch_size(config, text_path, info)
    if info.is_main:
        record = {
            **dataclasses.asdict(search),
            "memory_share": config.memory_share,
            "device": str(info.device),
        }
        (config.out / "batch_size_search.json").write_text(json.dumps(record, indent=1) + "\n")
    return config.model_copy(update={"batch_size": search.windows})


def _mean_throughput(run_dir: Path) -> float:
    from medst.train.logging import read_metrics

    rates = [r["studies_per_s"] for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "train"]
    # The first window includes warm-up (allocations, compilation); leave it out when there is more.
    rates = rates[1:] if len(rates) > 1 else rates
    return float(np.mean(rates)) if rates else 0.0
