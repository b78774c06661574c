"""`medst eval RUN --task ... --data PATH`: the paper's benchmarks (reference and clean protocols) with 95% CIs."""

from __future__ import annotations

from pathlib import Path

import typer

from medst.cli.choices import QUIET_HELP, choice_enum, value_of
from medst.cli.options import field_option, given
from medst.schemas.eval import EvalConfig, TaskName

TaskChoice = choice_enum("TaskChoice", TaskName, extra=("all",))
SplitChoice = choice_enum("SplitChoice", EvalConfig.model_fields["retrieval_split"].annotation)


def _complete_device(incomplete: str) -> list[str]:
    return [name for name in ("cpu", "cuda") if name.startswith(incomplete)]


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_(
        run: Path = typer.Argument(
            ..., help="training run folder (its export/ is used) or an exported model folder"
        ),
        task: list[TaskChoice] | None = field_option(  # type: ignore[valid-type]
            EvalConfig,
            "tasks",
            "--task",
            "-t",
            metavar="<task>",  # the choices, one metavar, would pass 80 columns
            help=f"benchmark to run, repeatable: {' | '.join(str(t.value) for t in TaskChoice)}",
            shown="all",
        ),
        data: Path | None = field_option(EvalConfig, "data", "--data"),
        shards: str | None = field_option(EvalConfig, "shards", "--shards"),
        out: Path | None = field_option(EvalConfig, "out", "--out", "-o"),
        seeds: str | None = field_option(EvalConfig, "seeds", "--seeds"),
        bootstrap: int | None = field_option(EvalConfig, "bootstrap", "--bootstrap"),
        mscxrt_dir: Path | None = field_option(EvalConfig, "mscxrt_dir", "--mscxrt-dir"),
        mimic_root: Path | None = field_option(EvalConfig, "mimic_root", "--mimic-root"),
        rsna_dir: Path | None = field_option(EvalConfig, "rsna_dir", "--rsna-dir"),
        rsna_split: Path | None = field_option(EvalConfig, "rsna_split", "--rsna-split"),
        covidx_dir: Path | None = field_option(EvalConfig, "covidx_dir", "--covidx-dir"),
        split: SplitChoice | None = field_option(EvalConfig, "retrieval_split", "--split"),  # type: ignore[valid-type]
        batch_size: int | None = field_option(EvalConfig, "batch_size", "--batch-size"),
        device: str | None = field_option(EvalConfig, "device", "--device", autocompletion=_complete_device),
        cache_dir: Path | None = field_option(EvalConfig, "cache_dir", "--cache-dir"),
        no_plots: bool = typer.Option(False, "--no-plots", help="skip the PNG plots"),
        quiet: bool = typer.Option(False, "-q", "--quiet", help=QUIET_HELP),
    ) -> None:
        """Evaluate a model on the benchmarks --task names (all of them by default), with 95% CIs."""
        from medst.eval.report import markdown_table
        from medst.eval.run import evaluate

        names = [str(value_of(t)) for t in task or ()]
        run_all = not names or "all" in names  # every task: the config's default
        config = EvalConfig(
            run=run,
            **given(
                tasks=None if run_all else list(dict.fromkeys(names)),
                data=data,
                out=out,
                mscxrt_dir=mscxrt_dir,
                mimic_root=mimic_root,
                rsna_dir=rsna_dir,
                rsna_split=rsna_split,
                covidx_dir=covidx_dir,
                shards=shards,
                retrieval_split=value_of(split),
                seeds=_parse_seeds(seeds),
                bootstrap=bootstrap,
                batch_size=batch_size,
                device=device,
                cache_dir=cache_dir,
                plots=False if no_plots else None,
                progress=False if quiet else None,
            ),
        )
        out = config.out
        results = evaluate(config, skip_missing=run_all)
        typer.echo(markdown_table(results.metrics, with_protocol=False))
        for summary in results.tasks:
            for note in summary.notes:
                if "skipped" in note:
                    typer.echo(note)
        typer.echo(
            f"results -> {out / 'results.json'}, {out / 'results.md'}; {len(results.plots)} plots in {out / 'plots'}"
        )


def _parse_seeds(text: str | None) -> list[int] | None:
    from medst.errors import UserInputError

    if not text:
        return None
    try:
        return [int(s) for s in text.replace(",", " ").split()]
    except ValueError:
        raise UserInputError(f"--seeds must be integers separated by commas, got {text!r}") from None
