"""`medst pretrain SHARDS -o RUN`: pre-train Med-ST on shards (one CPU, one GPU, or `torchrun` for many)."""

from __future__ import annotations

from pathlib import Path

import typer

from medst.cli.choices import QUIET_HELP, choice_enum, metavar_of, show_progress, value_of
from medst.cli.options import field_option
from medst.schemas.common import Compat
from medst.schemas.common import LateralInit as LateralInitName
from medst.schemas.model import ModelConfig
from medst.schemas.train import PRESETS, DeviceName, Precision, PretrainConfig

_FIELDS = PretrainConfig.model_fields
LoggerName = choice_enum("LoggerName", _FIELDS["loggers"].annotation)
LateralInit = choice_enum("LateralInit", LateralInitName)
PrecisionChoice = choice_enum("PrecisionChoice", Precision)
DeviceChoice = choice_enum("DeviceChoice", DeviceName)
CompatChoice = choice_enum("CompatChoice", Compat)


def _complete_config(incomplete: str) -> list[str]:
    """Shell completion of --config: the preset names (the shell adds file names itself)."""
    return [name for name in sorted(PRESETS) if name.startswith(incomplete)]


def _batch_size_options(value: str | None) -> dict[str, object]:
    """``--batch-size N`` or ``--batch-size auto`` as config fields."""
    if value is None:
        return {}
    if value.strip().lower() == "auto":
        return {"batch_size_auto": True}
    try:
        return {"batch_size": int(value), "batch_size_auto": False}
    except ValueError:
        raise typer.BadParameter(
            f"--batch-size {value!r}: give a number of windows or 'auto'", param_hint="--batch-size"
        ) from None


def register(app: typer.Typer) -> None:
    @app.command("pretrain")
    def pretrain_command(
        shards: str | None = typer.Argument(
            None,
            help="shard folder written by `medst shard`, a path or a URL such as s3://bucket/shards "
            "(resuming: the run's own by default)",
        ),
        out: Path = typer.Option(..., "-o", "--out", help="run folder (config, checkpoints, logs, export)"),
        config: str | None = typer.Option(
            None,
            "--config",
            metavar="<preset|file>",
            help=f"preset name ({' | '.join(sorted(PRESETS))}) or a YAML file [default: paper; resuming: the "
            "run's config.yaml]",
            autocompletion=_complete_config,
        ),
        steps: int | None = field_option(PretrainConfig, "steps", "--steps"),
        epochs: float | None = field_option(PretrainConfig, "epochs", "--epochs"),
        batch_size: str | None = field_option(
            PretrainConfig,
            "batch_size",
            "--batch-size",
            metavar="<int|auto>",
            help="windows per batch per process, or 'auto': the largest that fits in --memory-share of the "
            "device's memory (found once, recorded in RUN/config.yaml)",
        ),
        memory_share: float | None = field_option(PretrainConfig, "memory_share", "--memory-share"),
        seq_len: int | None = field_option(
            PretrainConfig,
            "seq_len",
            "--seq-len",
            help="studies per window (T)",
            shown=lambda default: f"the T the shards were built with, else {default}",
        ),
        text_model: Path | None = field_option(PretrainConfig, "text_model", "--text-model"),
        init_image: Path | None = field_option(PretrainConfig, "init_image", "--init-image"),
        lateral_init: LateralInit | None = field_option(ModelConfig, "lateral_init", "--lateral-init"),  # type: ignore[valid-type]
        precision: PrecisionChoice | None = field_option(PretrainConfig, "precision", "--precision"),  # type: ignore[valid-type]
        grad_checkpointing: bool | None = field_option(
            ModelConfig, "grad_checkpointing", "--grad-checkpointing/--no-grad-checkpointing"
        ),
        accumulate: int | None = field_option(PretrainConfig, "accumulate", "--accumulate"),
        resume: str | None = field_option(PretrainConfig, "resume", "--resume", metavar="<latest|folder>"),
        compat: CompatChoice | None = field_option(ModelConfig, "compat", "--compat"),  # type: ignore[valid-type]
        lambda1: float | None = field_option(ModelConfig, "lambda1", "--lambda1"),
        lambda2: float | None = field_option(ModelConfig, "lambda2", "--lambda2"),
        lr: float | None = field_option(PretrainConfig, "lr", "--lr"),
        max_grad_norm: float | None = field_option(PretrainConfig, "max_grad_norm", "--max-grad-norm"),
        seed: int | None = field_option(PretrainConfig, "seed", "--seed"),
        device: DeviceChoice | None = field_option(PretrainConfig, "device", "--device"),  # type: ignore[valid-type]
        num_workers: int | None = field_option(PretrainConfig, "num_workers", "--workers"),
        old_num_workers: int | None = typer.Option(
            None, "--num-workers", hidden=True, help="the older name of --workers"
        ),
        val_every: int | None = field_option(PretrainConfig, "val_every", "--val-every"),
        ckpt_every: int | None = field_option(PretrainConfig, "ckpt_every", "--ckpt-every"),
        gather_negatives: bool | None = field_option(
            ModelConfig, "gather_negatives", "--gather-negatives/--no-gather-negatives"
        ),
        compile_model: bool | None = field_option(PretrainConfig, "compile", "--compile/--no-compile"),
        max_steps_this_invocation: int | None = field_option(
            PretrainConfig, "max_steps_this_invocation", "--max-steps-this-invocation"
        ),
        quiet: bool = typer.Option(False, "-q", "--quiet", help=QUIET_HELP),
        progress: bool | None = typer.Option(
            None,
            "--progress/--no-progress",
            hidden=True,  # the older spelling; -q/--quiet is the convention of every command
            help="show the progress bar [default: on; resuming: as the run was]",
        ),
        allow_partial: bool | None = field_option(PretrainConfig, "allow_partial", "--allow-partial"),
        skip_bad_samples: bool | None = field_option(
            PretrainConfig, "skip_bad_samples", "--skip-bad-samples"
        ),
        logger: list[LoggerName] | None = field_option(  # type: ignore[valid-type]
            PretrainConfig, "loggers", "--logger", metavar=metavar_of(LoggerName)
        ),
        experiment: str | None = field_option(PretrainConfig, "experiment", "--experiment"),
        print_config: bool = typer.Option(
            False,
            "--print-config",
            help="print the resolved config as YAML (a starting point for --config FILE)",
        ),
    ) -> None:
        """Pre-train Med-ST; writes RUN/config.yaml, checkpoints, metrics.jsonl, curves.png, export/ and tracker runs.

        SIGINT (Ctrl-C) or SIGTERM (a scheduler's preemption) stops the run after the current step with a complete
        checkpoint and exits with 128 + the signal number (130, 143); `--resume latest` continues it exactly.
        The defaults shown are the paper preset's; --config, or a resumed run's config.yaml, may change them.
        """
        from medst.errors import UserInputError
        from medst.schemas.train import resolve_config, resolve_resumed_config, stored_run_config

        if num_workers is not None and old_num_workers is not None and num_workers != old_num_workers:
            raise UserInputError(
                f"--workers {num_workers} and --num-workers {old_num_workers} disagree; give --workers only"
            )

        overrides = {
            "shards": shards,
            "out": out,
            "steps": steps,
            "epochs": epochs,
            **_batch_size_options(batch_size),
            "memory_share": memory_share,
            "seq_len": seq_len,
            "text_model": text_model,
            "init_image": init_image,
            "lateral_init": value_of(lateral_init),
            "precision": value_of(precision),
            "grad_checkpointing": grad_checkpointing,
            "accumulate": accumulate,
            "resume": resume,
            "compat": value_of(compat),
            "lambda1": lambda1,
            "lambda2": lambda2,
            "lr": lr,
            "seed": seed,
            "device": value_of(device),
            "num_workers": num_workers if num_workers is not None else old_num_workers,
            "val_every": val_every,
            "ckpt_every": ckpt_every,
            "gather_negatives": gather_negatives,
            "compile": compile_model,
            "max_steps_this_invocation": max_steps_this_invocation,
            "progress": show_progress(quiet, progress, default=None),
            "allow_partial": allow_partial,
            "skip_bad_samples": skip_bad_samples,
            "loggers": [str(value_of(name)) for name in logger] if logger else None,
            "experiment": experiment,
        }
        stored = stored_run_config(out, resume) if resume is not None and config is None else None
        if stored is not None:
            cfg = resolve_resumed_config(stored, overrides)
        elif shards is None:
            raise UserInputError(
                "missing argument SHARDS (the shard folder); it may be left out only with --resume of a run "
                "that has its config.yaml"
            )
        else:
            cfg = resolve_config(config, overrides)
        if max_grad_norm is not None:
            cfg.max_grad_norm = max_grad_norm if max_grad_norm > 0 else None
        if print_config:
            from medst.schemas.train import config_to_yaml

            typer.echo(config_to_yaml(cfg), nl=False)
            return
        if isinstance(cfg.shards, Path) and not cfg.shards.is_dir():
            raise typer.BadParameter(f"{cfg.shards} is not a folder")
        from medst.train.export import format_number
        from medst.train.loop import pretrain
        from medst.train.stopping import exit_code_for

        summary = pretrain(cfg)
        import os

        if os.environ.get("RANK", "0") != "0":
            if summary.stop_signal:
                raise typer.Exit(exit_code_for(summary.stop_signal))
            return
        if summary.stop_signal:
            import signal

            typer.echo(
                f"stopped by {signal.Signals(summary.stop_signal).name} at step {summary.steps}/"
                f"{summary.total_steps}, checkpoint {summary.last_checkpoint}; "
                f"continue with: medst pretrain -o {cfg.out} --resume latest"
            )
            raise typer.Exit(exit_code_for(summary.stop_signal))
        val = ", ".join(f"{k}={v:.3f}" for k, v in sorted(summary.val.items()) if "loss" not in k)
        typer.echo(
            f"{'stopped' if summary.stopped_early else 'done'}: {summary.steps}/{summary.total_steps} steps, "
            f"loss (first -> last log window) {format_number(summary.first_loss)} -> {format_number(summary.last_loss)}, "
            f"{summary.studies_per_s:.1f} studies/s, "
            f"{summary.wall_s:.0f} s" + (f"; validation: {val}" if val else "")
        )
        if summary.export_dir is not None:
            typer.echo(f"exported to {summary.export_dir}")
