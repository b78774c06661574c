"""`medst demo`: every stage on a small synthetic archive, on the CPU, in minutes.

The demo is the product's first impression, so it runs the same library calls a user would chain by hand
(synth -> build-sequences -> shard -> pretrain -> eval), evaluates the trained model next to the same model
before training and next to chance, and ends with one zero-shot example through the public inference API.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medst.schemas.demo import DemoConfig, DemoResult

__all__ = ["DemoConfig", "DemoResult", "run_demo"]


def _stage(name: str, timings: dict[str, float], echo: Callable[[str], None]) -> Callable[..., Any]:
    def wrap(fn: Callable[[], Any]) -> Any:
        echo(f"\n== {name} ==")
        started = time.perf_counter()
        result = fn()
        timings[name] = round(time.perf_counter() - started, 1)
        echo(f"   {name}: {timings[name]:.1f} s")
        return result

    return wrap


def _untrained_export(run: Path, target: Path) -> Path:
    """The run's model at initialisation (same seed, same text model), exported like a trained one."""
    from medst.model.building import build_model, load_tokenizer
    from medst.model.io import save_model
    from medst.schemas.train import resolve_config
    from medst.train.loop import seed_everything

    config = resolve_config(run / "config.yaml")
    text_path = run / "text_model"
    seed_everything(config.seed)
    model = build_model(config, text_path if text_path.is_dir() else config.text_model)
    meta = json.loads((run / "export" / "config.json").read_text())
    save_model(model, target, tokenizer=load_tokenizer(run / "export"), extra=meta.get("extra"))
    return target


def _zero_shot_example(model_dir: Path, rsna_dir: Path) -> str:
    """Two pneumonia and two clear RSNA-style images classified with the paper's prompts via `medst.load`."""
    import polars as pl

    import medst

    labels_csv = rsna_dir / "stage_2_train_labels.csv"
    if not labels_csv.is_file():
        return ""
    targets = pl.read_csv(labels_csv).group_by("patientId").agg(pl.col("Target").max()).sort("patientId")
    chosen = [
        *targets.filter(pl.col("Target") == 1).head(2).rows(),
        *targets.filter(pl.col("Target") == 0).head(2).rows(),
    ]
    images = [rsna_dir / "stage_2_train_images" / f"{pid}.dcm" for pid, _ in chosen]
    encoder = medst.load(model_dir, device="cpu")
    result = encoder.zero_shot(
        images,
        {
            "pneumonia": ["Findings consistent with pneumonia", "This opacity can represent pneumonia"],
            "no pneumonia": ["There is no pneumonia", "No evidence of pneumonia"],
        },
    )
    lines = ["zero-shot example (medst.load(RUN).zero_shot):"]
    for (pid, target), predicted, probs in zip(
        chosen, result.predictions, result.probabilities.tolist(), strict=True
    ):
        truth = "pneumonia" if target == 1 else "no pneumonia"
        lines.append(f"  {pid}.dcm: predicted {predicted!r} (p={max(probs):.2f}), truth {truth!r}")
    return "\n".join(lines)


def run_demo(config: DemoConfig, echo: Callable[[str], None] = print) -> DemoResult:
    """Run every stage into ``config.out`` and return the results table and the pictures written."""
    from medst.eval.report import comparison_table
    from medst.eval.run import evaluate
    from medst.outputs import claim_output_dir
    from medst.schemas.build import BuildConfig
    from medst.schemas.eval import EvalConfig
    from medst.schemas.shards import ShardConfig
    from medst.schemas.synth import SynthConfig
    from medst.schemas.train import resolve_config
    from medst.sequences.build import build_sequences
    from medst.shards.writer import write_shards
    from medst.synth import generate
    from medst.train.loop import pretrain

    out = config.out
    claimed = claim_output_dir(out, "demo", legacy_markers=("demo.json",))
    archive, seq, shards, run = out / "archive", out / "sequences", out / "shards", out / "run"
    timings: dict[str, float] = {}

    def stage(name: str) -> Callable[..., Any]:
        return _stage(name, timings, echo)

    if not (archive / "synth_truth.parquet").exists():
        stage("synth")(
            lambda: generate(
                SynthConfig(
                    out=archive,
                    patients=config.patients,
                    seed=config.seed,
                    image_size=config.image_size,
                    benchmarks=True,
                    workers=config.workers,
                ),
                progress=config.progress,
            )
        )
    stage("build-sequences")(
        lambda: build_sequences(
            BuildConfig(archive=archive, out=seq, workers=config.workers), progress=config.progress
        )
    )
    stage("shard")(
        lambda: write_shards(
            ShardConfig(
                seq=seq,
                out=shards,
                image_size=config.image_size,
                workers=config.workers,
                samples_per_shard=16,
            ),
            progress=config.progress,
        )
    )
    overrides: dict[str, Any] = {
        "shards": shards,
        "out": run,
        "steps": config.steps,
        "lambda2": config.lambda2,
        "seed": config.seed,
        "device": "cpu",
        "progress": config.progress,
        "resume": "latest",  # a re-run continues (or re-exports) the run; a fresh folder starts one
    }
    stage("pretrain")(lambda: pretrain(resolve_config("demo", overrides)))
    untrained_dir = _untrained_export(run, out / "untrained")

    def eval_one(model: Path, folder: Path) -> Any:
        return evaluate(
            EvalConfig(
                run=model,
                data=archive / "benchmarks",
                mimic_root=archive,
                shards=shards,
                out=folder,
                bootstrap=config.bootstrap,
                device="cpu",
                progress=config.progress,
            ),
            skip_missing=True,
        )

    trained = stage("eval (trained)")(lambda: eval_one(run, out / "eval"))
    untrained = stage("eval (untrained)")(lambda: eval_one(untrained_dir, out / "eval_untrained"))
    table = comparison_table({"trained": trained, "untrained": untrained})

    zero_shot = _zero_shot_example(run, archive / "benchmarks" / "rsna")

    pictures = [
        p
        for p in [
            archive / "preview.png",
            *sorted(seq.glob("*.png")),
            *sorted(shards.glob("*.png")),
            run / "curves.png",
            *sorted((out / "eval").glob("**/*.png")),
        ]
        if p.exists()
    ]
    (out / "results.md").write_text(table + "\n")
    (out / "demo.json").write_text(
        json.dumps({"seconds": timings, "pictures": [str(p) for p in pictures]}, indent=1)
    )
    claimed.finish()
    return DemoResult(out=out, seconds=timings, table=table, pictures=pictures, zero_shot=zero_shot)
