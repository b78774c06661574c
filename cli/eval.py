"""`medst eval RUN --task ... --data PATH`: the paper's benchmarks (reference and clean protocols) with 95% CIs."""

from __future__ import annotations

from pathlib import Path

import typer

from medst.cli.choices import QUIET_HELP, choice_enum, value_of
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
        task: list[TaskChoice] = typer.Option(  # type: ignore[valid-type]
            ["all"],
            "--task",
            "-t",
            metavar="<task>",  # the choices, one metavar, would pass 80 columns
            help=f"benchmark to run, repeatable: {' | '.join(str(t.value) for t in TaskChoice)}  [default: all]",
            show_default=False,
        ),
        data: Path | None = typer.Option(
            None, "--data", help="folder holding the benchmark files (e.g. synth's OUT/benchmarks or OUT)"
        ),
        shards: str | None = typer.Option(
            None, "--shards", help="built shards folder (retrieval): a path or a URL (s3://, https://)"
        ),
        out: Path = typer.Option(Path("eval_out"), "--out", "-o", help="results.json, results.md, plots/"),
        seeds: str | None = typer.Option(
            None, "--seeds", help="MS-CXR-T image shuffle seeds, e.g. 42,100,666 (the default)"
        ),
        bootstrap: int = typer.Option(1000, "--bootstrap", help="bootstrap resamples per metric (0: no CI)"),
        mscxrt_dir: Path | None = typer.Option(
            None, "--mscxrt-dir", help="folder with the MS-CXR-T CSV files"
        ),
        mimic_root: Path | None = typer.Option(
            None, "--mimic-root", help="MIMIC-CXR(-JPG) root holding files/"
        ),
        rsna_dir: Path | None = typer.Option(None, "--rsna-dir", help="folder with stage_2_train_labels.csv"),
        rsna_split: Path | None = typer.Option(
            None, "--rsna-split", help="RSNA split manifest (default: shipped)"
        ),
        covidx_dir: Path | None = typer.Option(
            None, "--covidx-dir", help="folder with train.txt, test.txt, train/, test/"
        ),
        split: SplitChoice = typer.Option(  # type: ignore[valid-type]
            "test", "--split", help="shard split used for retrieval"
        ),
        batch_size: int = typer.Option(32, "--batch-size", help="images per forward pass"),
        device: str | None = typer.Option(
            None,
            "--device",
            help="cpu, cuda, cuda:1 (default: best available)",
            autocompletion=_complete_device,
        ),
        cache_dir: Path | None = typer.Option(
            None, "--cache-dir", help="feature cache (default OUT/feature_cache)"
        ),
        no_plots: bool = typer.Option(False, "--no-plots", help="skip the PNG plots"),
        quiet: bool = typer.Option(False, "-q", "--quiet", help=QUIET_HELP),
    ) -> None:
        """Evaluate a model on MS-CXR-T (image, sentence), RSNA zero-shot, COVIDx probe and retrieval."""
        from medst.eval.report import markdown_table
        from medst.eval.run import evaluate
        from medst.schemas.eval import ALL_TASKS

        names = [str(value_of(t)) for t in task]
        seed_list = _parse_seeds(seeds)
        run_all = "all" in names
        tasks = list(ALL_TASKS) if run_all else list(dict.fromkeys(names))
        config = EvalConfig(
            run=run,
            tasks=tasks,
            data=data,
            out=out,
            mscxrt_dir=mscxrt_dir,
            mimic_root=mimic_root,  # type: ignore[arg-type]
            rsna_dir=rsna_dir,
            rsna_split=rsna_split,
            covidx_dir=covidx_dir,
            shards=shards,
            retrieval_split=value_of(split),  # type: ignore[arg-type]
            seeds=seed_list,
            bootstrap=bootstrap,
            batch_size=batch_size,
            device=device,
            cache_dir=cache_dir,
            plots=not no_plots,
            progress=not quiet,
        )
        results = evaluate(config, skip_missing=run_all)
        typer.echo(markdown_table(results.metrics, with_protocol=False))
        for summary in results.tasks:
            for note in summary.notes:
                if "skipped" in note:
                    typer.echo(note)
        typer.echo(
            f"results -> {out / 'results.json'}, {out / 'results.md'}; {len(results.plots)} plots in {out / 'plots'}"
        )


def _parse_seeds(text: str | None) -> list[int]:
    from medst.errors import UserInputError

    if not text:
        return [42, 100, 666]
    try:
        return [int(s) for s in text.replace(",", " ").split()]
    except ValueError:
        raise UserInputError(f"--seeds must be integers separated by commas, got {text!r}") from None
