"""`evaluate(config) -> Results`: run the chosen benchmark tasks on one model and write the report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from medst._version import __version__
from medst.errors import UserInputError
from medst.eval.features import FeatureExtractor
from medst.eval.output import TaskOutput
from medst.eval.report import write_json, write_markdown, write_plots
from medst.eval.tasks import TASKS
from medst.outputs import check_output_dir, claim_output_dir
from medst.schemas.eval import EvalConfig, Results


def load_encoder(run: Path, device: str | None = None) -> Any:
    """The model of a run folder (``RUN/export``) or an export folder, through the inference API."""
    from medst.inference import load

    if not run.exists():
        raise UserInputError(f"model not found: {run} (pass a run folder or an exported model folder)")
    return load(run, device=device)


def evaluate(config: EvalConfig, encoder: Any | None = None, skip_missing: bool = False) -> Results:
    """Run ``config.tasks`` and write ``results.json``, ``results.md`` and ``plots/`` under ``config.out``.

    ``encoder``: an already loaded encoder (else `medst.load(config.run)`). ``skip_missing``: a task whose
    input files are not found is skipped with a note instead of stopping everything (``--task all``).
    """
    start = time.perf_counter()
    # A URL input is never under the output folder; only local paths are checked against it.
    shards = config.shards if isinstance(config.shards, Path) else None
    inputs, legacy = [config.run, shards, config.rsna_split], ("results.json",)
    roots = [config.data, config.mscxrt_dir, config.mimic_root, config.rsna_dir, config.covidx_dir]
    # Before the model loads: a folder that is not ours is refused at once; it is created once the model loaded.
    check_output_dir(config.out, "eval", inputs=inputs, roots=roots, legacy_markers=legacy)
    if encoder is None:
        encoder = load_encoder(config.run, config.device)
    claimed = claim_output_dir(config.out, "eval", inputs=inputs, roots=roots, legacy_markers=legacy)
    extractor = FeatureExtractor(
        encoder, config.cache_dir or config.out / "feature_cache", config.batch_size, progress=config.progress
    )
    outputs: list[TaskOutput] = []
    skipped: list[str] = []
    for task in config.tasks:
        try:
            outputs.append(TASKS[task].run(config, encoder, extractor))
        except UserInputError as err:
            if not skip_missing:
                claimed.release_if_unused()
                raise
            skipped.append(f"{task}: skipped ({err})")
    if not outputs:
        claimed.release_if_unused()
        raise UserInputError("no task could run: " + "; ".join(skipped))
    plots = write_plots(outputs, config.out / "plots") if config.plots else []
    results = Results(
        medst_version=__version__,
        run=str(config.run),
        model_fingerprint=extractor.fingerprint,
        config=config.model_dump(mode="json"),
        metrics=[m for o in outputs for m in o.metrics],
        tasks=[o.summary for o in outputs],
        plots=[str(p.relative_to(config.out)) for p in plots],
        seconds=time.perf_counter() - start,
    )
    for note in skipped:
        results.tasks.append(type(results.tasks[0])(task=note.split(":")[0], n_rows=0, notes=[note]))
    write_json(results, config.out / "results.json")
    write_markdown(results, outputs, config.out / "results.md")
    claimed.finish()
    return results
