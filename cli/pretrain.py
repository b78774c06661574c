"""`medst pretrain SHARDS -o RUN`: pre-train Med-ST on shards (one CPU, one GPU, or `torchrun` for many)."""

from __future__ import annotations

from pathlib import Path

import typer

from medst.cli.choices import QUIET_HELP, choice_enum, metavar_of, show_progress, value_of
from medst.schemas.train import PRESETS, DeviceName, Precision, PretrainConfig

_FIELDS = PretrainConfig.model_fields
LoggerName = choice_enum("LoggerName", _FIELDS["loggers"].annotation)
LateralInit = choice_enum("LateralInit", _FIELDS["lateral_init"].annotation)
PrecisionChoice = choice_enum("PrecisionChoice", Precision)
DeviceChoice = choice_enum("DeviceChoice", DeviceName)
CompatChoice = choice_enum("CompatChoice", _FIELDS["compat"].annotation)


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
        steps: int | None = typer.Option(None, "--steps", help="optimizer steps (instead of epochs)"),
        epochs: float | None = typer.Option(None, "--epochs", help="passes over the training split"),
        batch_size: str | None = typer.Option(
            None,
            "--batch-size",
            metavar="<int|auto>",
            help="windows per batch per process, or 'auto': the largest that fits in --memory-share of the "
            "device's memory (found once, recorded in RUN/config.yaml)",
        ),
        memory_share: float | None = typer.Option(
            None, "--memory-share", help="share of the device's memory --batch-size auto may fill (0.85)"
        ),
        seq_len: int | None = typer.Option(None, "--seq-len", help="studies per window (T)"),
        text_model: Path | None = typer.Option(None, "--text-model", help="local Hugging Face BERT folder"),
        init_image: Path | None = typer.Option(None, "--init-image", help="timm/DeiT or MGCA checkpoint"),
        lateral_init: LateralInit | None = typer.Option(  # type: ignore[valid-type]
            None, "--lateral-init", help="lateral view encoder start [default: random]"
        ),
        precision: PrecisionChoice | None = typer.Option(  # type: ignore[valid-type]
            None, "--precision", help="auto: bf16 on CUDA, fp32 on the CPU [default: auto]"
        ),
        grad_checkpointing: bool | None = typer.Option(None, "--grad-checkpointing/--no-grad-checkpointing"),
        accumulate: int | None = typer.Option(None, "--accumulate", help="micro-batches per optimizer step"),
        resume: str | None = typer.Option(
            None,
            "--resume",
            metavar="<latest|folder>",
            help="latest | a checkpoint folder; without --config the run's stored config is used, and options "
            "that would change its recipe are refused",
        ),
        compat: CompatChoice | None = typer.Option(  # type: ignore[valid-type]
            None,
            "--compat",
            help="loss arithmetic as the authors' code (reference) or corrected [default: clean]",
        ),
        lambda1: float | None = typer.Option(None, "--lambda1", help="weight of the local loss"),
        lambda2: float | None = typer.Option(None, "--lambda2", help="weight of the temporal loss"),
        lr: float | None = typer.Option(None, "--lr", help="peak learning rate"),
        max_grad_norm: float | None = typer.Option(
            None, "--max-grad-norm", help="clip the gradient norm to this value; 0 turns clipping off"
        ),
        seed: int | None = typer.Option(None, "--seed"),
        device: DeviceChoice | None = typer.Option(  # type: ignore[valid-type]
            None, "--device", help="auto: CUDA when present [default: auto]"
        ),
        num_workers: int | None = typer.Option(None, "--workers", help="loader worker processes"),
        old_num_workers: int | None = typer.Option(
            None, "--num-workers", hidden=True, help="the older name of --workers"
        ),
        val_every: int | None = typer.Option(None, "--val-every", help="validate every N steps"),
        ckpt_every: int | None = typer.Option(None, "--ckpt-every", help="checkpoint every N steps"),
        gather_negatives: bool | None = typer.Option(None, "--gather-negatives/--no-gather-negatives"),
        compile_model: bool | None = typer.Option(None, "--compile/--no-compile", help="torch.compile"),
        max_steps_this_invocation: int | None = typer.Option(
            None,
            "--max-steps-this-invocation",
            help="stop after this many steps (checkpointed; resume later)",
        ),
        quiet: bool = typer.Option(False, "-q", "--quiet", help=QUIET_HELP),
        progress: bool | None = typer.Option(
            None,
            "--progress/--no-progress",
            hidden=True,  # the older spelling; -q/--quiet is the convention of every command
            help="show the progress bar [default: on; resuming: as the run was]",
        ),
        allow_partial: bool | None = typer.Option(
            None,
            "--allow-partial",
            help="train although shards of the plan are missing (incomplete --part set)",
        ),
        skip_bad_samples: bool | None = typer.Option(
            None,
            "--skip-bad-samples",
            help="skip damaged shard samples (counted in the logs) instead of stopping",
        ),
        logger: list[LoggerName] | None = typer.Option(  # type: ignore[valid-type]
            None,
            "--logger",
            metavar=metavar_of(LoggerName),
            help="experiment tracker, repeatable (default: tensorboard when installed; "
            "metrics.jsonl and curves.png are always written)",
        ),
        experiment: str | None = typer.Option(
            None, "--experiment", help="MLflow experiment / W&B project (default: medst)"
        ),
        print_config: bool = typer.Option(
            False,
            "--print-config",
            help="print the resolved config as YAML (a starting point for --config FILE)",
        ),
    ) -> None:
        """Pre-train Med-ST; writes RUN/config.yaml, checkpoints, metrics.jsonl, curves.png, export/ and tracker runs.

        SIGINT (Ctrl-C) or SIGTERM (a scheduler's preemption) stops the run after the current step with a complete
        checkpoint and exits with 128 + the signal number (130, 143); `--resume latest` continues it exactly.
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
